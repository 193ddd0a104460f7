#!/usr/bin/env bash
# The CUDA checks of eakd, for a machine with a GPU, torch (CUDA build), transformers and timm,
# no network and nothing else installed: the source tree runs as is (PYTHONPATH=src, no pip).
#
#   bash scripts/gpu_check.sh            # from anywhere; a few minutes, at most 7.8
#   PYTHON=/opt/venv/bin/python bash scripts/gpu_check.sh
#
# Steps (each under its own time limit, so the whole run stays under 8 minutes):
#   1. the CUDA tests (tests/gpu/test_cuda.py: with pytest when it is importable, else
#      tests/gpu/standalone.py runs the same cases);
#   2. bf16 autocast training of the classification engine with EA on, KD and DKD, through
#      `python -m eakd.cli train ... train.precision=bf16 train.device=cuda` on a small generated
#      CIFAR-100-format dataset (random images; it checks the engine runs, not accuracy);
#   3. the chunked LLM loss against the full-logit path on CUDA (values, gradients, peak
#      torch.cuda.max_memory_allocated, time), float32 and bf16 inputs;
#   4. benchmarks/llm_loss_peers.py on CUDA when liger_kernel is importable (bring it as a
#      wheel: pip install --no-deps liger_kernel-*.whl; TRL is optional). PEERS_ARGS replaces
#      its default arguments (the largest size, float32 and bf16); paths past its 180 s budget
#      are reported as skipped (the baseline and the reference run first).
# Prints a summary; exits 1 when a step fails, 2 when there is no CUDA device.
# EAKD_GPU_CHECK_DEVICE=cpu runs steps 2-3 on the CPU, to try the script itself without a GPU.
set -u -o pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${EAKD_GPU_CHECK_DEVICE:-cuda}
PEERS_ARGS=${PEERS_ARGS:---sizes 8192x768x50257 --dtype float32 bf16}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/eakd-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export EAKD_CACHE="$WORK/cache"

STEPS=()
STATUS=()
SECS=()
T0=$SECONDS

# run NAME LIMIT_S CMD...: runs CMD under `timeout` (a shell function: export -f it and pass
# `bash -c NAME`), records PASS / FAIL and the seconds
run() {
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    [ "$DEVICE" = "cuda" ] || limit=$((limit * 4))  # a CPU dry run
    echo
    echo "=== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    STEPS+=("$name")
    SECS+=($((SECONDS - start)))
    if [ $rc -eq 0 ]; then
        STATUS+=("PASS")
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        STATUS+=("FAIL (timed out after ${limit}s)")
    else
        STATUS+=("FAIL (exit $rc)")
    fi
}

skip() {
    echo
    echo "=== $1: skipped ($2)"
    STEPS+=("$1")
    STATUS+=("SKIP ($2)")
    SECS+=(0)
}

echo "=== environment"
if ! "$PY" - "$DEVICE" <<'EOF'; then
import importlib.metadata
import platform
import sys

import torch

device = sys.argv[1]
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}")
for name, dist in (("transformers",) * 2, ("timm",) * 2, ("pytest",) * 2,
                   ("liger_kernel", "liger-kernel"), ("trl",) * 2):
    try:
        __import__(name)
    except Exception as exc:  # any import failure means "not usable here"
        print(f"  {name}: not importable ({type(exc).__name__})")
    else:
        try:
            print(f"  {name} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"  {name} (version unknown)")
if device == "cuda":
    if not torch.cuda.is_available():
        print("no CUDA device: torch.cuda.is_available() is false")
        sys.exit(2)
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
          f"capability {props.major}.{props.minor}, bf16 {torch.cuda.is_bf16_supported()}")
else:
    print(f"device: {device} (a dry run of the script; the CUDA tests are skipped)")
EOF
    echo "gpu_check: FAILED: python/torch with a CUDA device is needed (see above;" \
        "EAKD_GPU_CHECK_DEVICE=cpu tries the script on the CPU)"
    exit 2
fi

# -- 1. the CUDA tests ----------------------------------------------------------------------
if [ "$DEVICE" != "cuda" ]; then
    skip "CUDA tests" "EAKD_GPU_CHECK_DEVICE=$DEVICE"
elif "$PY" -c "import pytest" 2>/dev/null; then
    run "CUDA tests (pytest tests/gpu)" 110 "$PY" -m pytest -q -p no:cacheprovider -rs tests/gpu
else
    run "CUDA tests (tests/gpu/standalone.py, no pytest)" 110 "$PY" tests/gpu/standalone.py
fi

# -- 2. bf16 autocast training of the classification engine with EA -------------------------
# 32 steps per epoch; a CPU dry run (bf16 convolutions are slow there) takes 2 with a smaller teacher
SAMPLES=2048 TEACHER=resnet8x4
[ "$DEVICE" = "cuda" ] || SAMPLES=128 TEACHER=resnet8
make_data() {
    "$PY" - "$WORK/data" "$SAMPLES" <<'EOF'
# A CIFAR-100-format archive (python pickles) of random 32x32 images: N train, N / 4 test.
import pickle
import sys
from pathlib import Path

import numpy as np

folder = Path(sys.argv[1]) / "cifar-100-python"
folder.mkdir(parents=True)
n_train = int(sys.argv[2])
rng = np.random.default_rng(0)
for split, n in (("train", n_train), ("test", n_train // 4)):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 100, n).tolist()
    with open(folder / split, "wb") as fh:
        pickle.dump({"data": data, "fine_labels": labels}, fh)
with open(folder / "meta", "wb") as fh:
    pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, fh)
EOF
}
cat > "$WORK/train.yaml" <<EOF
name: gpu_check
output_dir: $WORK/runs
teacher:
  name: $TEACHER
student:
  name: resnet8
data:
  name: cifar100
  root: $WORK/data
  batch_size: 64
  test_batch_size: 256
  num_workers: 2
method:
  name: kd
ea:
  enabled: true
  temperature: 3.0
optim:
  lr: 0.05
train:
  epochs: 2
  progress: false
log:
  tensorboard: false
EOF

check_run() {  # check_run RUN_DIR: finite losses, EA weights logged, bf16 on the device
    "$PY" - "$1" "$DEVICE" <<'EOF'
import json
import math
import sys
from pathlib import Path

import yaml

run, device = Path(sys.argv[1]), sys.argv[2]
cfg = yaml.safe_load((run / "config.yaml").read_text())
assert cfg["train"]["precision"] == "bf16" and cfg["train"]["device"] == device, cfg["train"]
history = json.loads((run / "results.json").read_text())["history"]
losses = [h["train_loss"] for h in history]
assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses
diag = [json.loads(line) for line in (run / "diagnostics.jsonl").read_text().splitlines()]
w = diag[-1]
assert 0 < w["weight_min"] <= w["weight_mean"] <= w["weight_max"], w
assert w["weight_mean"] != 1.0, "EA weights are all 1: EA is off"
step = history[-1]["step_time_s"]
print(f"  train loss {losses[0]:.3f} -> {losses[1]:.3f}, EA weight mean {w['weight_mean']:.3f} "
      f"[{w['weight_min']:.3f}, {w['weight_max']:.3f}], {1000 * step:.1f} ms/step")
EOF
}

train_bf16() {  # train_bf16 METHOD [OVERRIDES...]
    local method=$1
    shift
    "$PY" -m eakd.cli train --quiet "$WORK/train.yaml" "name=gpu_check_$method" \
        "method.name=$method" train.precision=bf16 "train.device=$DEVICE" "$@" &&
        check_run "$WORK/runs/gpu_check_$method"
}
train_both() {
    make_data &&
        train_bf16 kd method.ce_weight=0.1 method.kd_weight=0.9 method.loss.temperature=4.0 &&
        train_bf16 dkd method.loss.beta=8.0 method.loss.temperature=4.0 method.warmup_epochs=1
}
export PY DEVICE WORK SAMPLES
export -f make_data check_run train_bf16 train_both
run "bf16 autocast training with EA (eakd.cli train, KD and DKD)" 80 bash -c train_both

# -- 3. the chunked LLM loss vs the full-logit path ------------------------------------------
chunked_check() {
    if [ "$DEVICE" = "cuda" ]; then
        "$PY" tests/gpu/chunked_vs_full.py --dtype float32 &&
            "$PY" tests/gpu/chunked_vs_full.py --dtype bf16
    else
        "$PY" -m pytest -q -p no:cacheprovider tests/losses/token/test_llm_chunked.py
    fi
}
export -f chunked_check
run "chunked LLM loss vs full logits" 60 bash -c chunked_check

# -- 4. the peers benchmark -------------------------------------------------------------------
if [ "$DEVICE" != "cuda" ]; then
    skip "peers benchmark (benchmarks/llm_loss_peers.py)" "EAKD_GPU_CHECK_DEVICE=$DEVICE"
elif "$PY" -c "import liger_kernel.chunked_loss" 2>/dev/null; then
    # shellcheck disable=SC2086  # PEERS_ARGS is a list of arguments
    run "peers benchmark (benchmarks/llm_loss_peers.py)" 200 \
        "$PY" benchmarks/llm_loss_peers.py --device cuda --timeout 120 --deadline 180 $PEERS_ARGS
else
    skip "peers benchmark (benchmarks/llm_loss_peers.py)" \
        "liger_kernel is not importable: pip install --no-deps liger_kernel-*.whl"
fi

# -- summary ---------------------------------------------------------------------------------
echo
echo "=== summary ($((SECONDS - T0)) s in all, device $DEVICE)"
failed=0
for i in "${!STEPS[@]}"; do
    printf '  %-62s %5ss  %s\n' "${STEPS[$i]}" "${SECS[$i]}" "${STATUS[$i]}"
    case ${STATUS[$i]} in FAIL*) failed=1 ;; esac
done
if [ $failed -ne 0 ]; then
    echo "gpu_check: FAILED"
    exit 1
fi
echo "gpu_check: all checks passed"
