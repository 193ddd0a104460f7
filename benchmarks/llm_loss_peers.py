r"""Generalized JSD from hidden states and ``lm_head`` weights: eakd's chunked loss (EA on and
off) side by side with Liger-Kernel's fused linear JSD and TRL's distillation losses.

Every path computes, forward and backward, for the same inputs

.. math::
    L = \frac{1}{D}\sum_{b,t} m_{b,t}\, w_{b,t}\, \mathrm{JSD}_\beta(p_{b,t}, q_{b,t}),\qquad
    \mathrm{JSD}_\beta = \beta\,\mathrm{KL}(p \| M) + (1-\beta)\,\mathrm{KL}(q \| M),\quad
    M = \beta p + (1 - \beta) q

with ``q = softmax(h^S W_S^T)`` the student, ``p = softmax(h^T W_T^T)`` the teacher, ``m`` the
valid-token mask (``labels != -100``: a short prompt per sequence), ``D`` the valid-token count,
and ``w = 1`` except on the EA paths. The paths:

=====================  ========================================================================
eakd EA token          ``ChunkedTokenDistillation("jsd", beta, weighting="gkd",
                       ea=EASettings(enabled=True, granularity="item", temperature=T'),
                       compile=True)``: closed-form gradients, the chunk step compiled
eakd EA token eager    the same with ``compile=False``
eakd EA sequence       the same with ``granularity="sequence"`` (compiled, and ``eager``)
eakd EA off            the same with ``ea=False`` (``w = 1``; compiled, and ``eager``)
Liger compiled         ``liger_kernel.chunked_loss.LigerFusedLinearJSDLoss(weight_hard_loss=0,
                       weight_soft_loss=1, beta, compiled=True)``: each chunk's math under
                       ``torch.compile`` (Liger's default)
Liger eager            the same with ``compiled=False``
TRL chunked            ``trl.trainer.distillation_trainer._chunked_divergence_loss`` (the
                       ``DistillationTrainer``'s loss: vocabulary tiles, online log-sum-exp)
TRL full logits        ``GKDTrainer.generalized_jsd_loss`` on the materialised ``(B, T, V)`` logits
=====================  ========================================================================

Conventions, aligned exactly: Liger's and TRL's ``beta`` weight the teacher in the mixture
(``M = beta p + (1 - beta) q``, ``beta KL(p||M) + (1 - beta) KL(q||M)``; 0 is forward KL, 1 reverse
KL), which is eakd's ``jsd`` with ``weighting="gkd"`` (eakd's default ``interpolate`` swaps the
two KL weights; at ``beta = 0.5`` both are the symmetric JSD). All at temperature 1, no ``T^2``
factor, mean over the valid tokens, the teacher without gradient, no hard-label term. The EA
weights use ``T'`` (``--entropy-temperature``, 1 as in the LLM recipes). Liger processes
``--chunk-size`` rows at a time (its default, 1024); eakd sizes its chunks by its byte budget
(``--eakd-chunk-budget`` logits per chunk, its default) unless ``--eakd-chunk-size`` is given;
TRL uses its own fixed tiles (4096 tokens x 32768 vocabulary).

Measurement. Each path runs in a fresh subprocess on inputs drawn from the same seeded generator
(identical tensors in every process). The subprocess imports its library and torch's compiler
stack, builds the inputs, reads its resident set size (``VmRSS``), makes one call (the first
call: ``torch.compile`` compiles there), then resets the kernel's high-water mark of the RSS
(``echo 5 > /proc/self/clear_refs``) and times ``--repeats`` calls; the peak is ``VmHWM`` after
them, minus the RSS before the first call. ``ru_maxrss`` is not used: it is a lifetime
high-water mark that also holds the first call's compile-time peak, and it need not drop after
the reset once a thread has exited. Where ``clear_refs`` is not writable the peak falls back to
the lifetime ``VmHWM`` (the table says so). The RSS also counts freed memory the C allocator
keeps for reuse: glibc returns blocks of 32 MiB and more at once, but serves smaller ones from
its heap after a free raised its threshold, so chunks below 32 MiB can read higher than their
live tensors (``held_mb`` in ``--json``: what stayed resident after the first call).
``--live-memory`` runs every path with ``MALLOC_MMAP_THRESHOLD_=1048576`` (blocks of 1 MiB and
more are returned at once), so the figure follows the live tensors for every path alike.
On CUDA the peak is ``torch.cuda.max_memory_allocated`` over the timed calls, after
``reset_peak_memory_stats``, minus the memory allocated before the first call. The time is the
median of the timed calls (synchronised on CUDA).
Unless ``--warm-cache`` is given, each subprocess compiles into an empty inductor cache, so the
first call's excess over the median is the compile time a first run pays.

Check. A separate subprocess computes the full-logit reference one sequence at a time (the
loss is a sum over sequences, so this is exact with ``T x V`` logits at a time): eakd's
registered ``jsd`` loss, wrapped in :class:`eakd.EntropyAdaptive` for the EA paths, in float32
from the inputs. Each path's loss, gradient norms (student hidden states and ``lm_head``
weight), and the gradients' projections on a fixed random direction must agree with the
reference of its EA setting: relative error <= 1e-4 for float32 inputs, <= 1e-1 for bfloat16.
With bfloat16 inputs eakd and TRL's chunked loss compute in float32 and agree to a few 1e-3 (the
gradients' final rounding); Liger's chunk and TRL's full-logit path compute the divergence in
bfloat16 and deviate by a few percent (their own precision, not a convention mismatch: that
would show at float32).

    python benchmarks/llm_loss_peers.py --quick                # (1024, 256, 16384), float32
    python benchmarks/llm_loss_peers.py --dtype float32 bf16   # all three sizes, both dtypes
    python benchmarks/llm_loss_peers.py --sizes 4096x576x32000 --device cuda
    python benchmarks/llm_loss_peers.py --quick --paths liger-compiled eakd-ea-token --live-memory

Liger and TRL come from the ``bench`` extra (``pip install 'eakd[bench]'``); a missing one is
reported and its columns left empty. The ratios are to Liger compiled (to eakd EA off when
Liger is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from _memory import available_mb

SIZES = [(1024, 256, 16384), (4096, 576, 32000), (8192, 768, 50257)]
SEQ_LEN = 512
PROMPT = 8  # leading label positions of every sequence set to -100
RESULT = "RESULT "

#: name -> (label, EA mode of its reference, package it needs)
PATHS = {
    "eakd-ea-token": ("eakd EA token", "item", "eakd"),
    "eakd-ea-token-eager": ("eakd EA token eager", "item", "eakd"),
    "eakd-ea-sequence": ("eakd EA sequence", "sequence", "eakd"),
    "eakd-ea-sequence-eager": ("eakd EA seq. eager", "sequence", "eakd"),
    "eakd-off": ("eakd EA off", "off", "eakd"),
    "eakd-off-eager": ("eakd EA off eager", "off", "eakd"),
    "liger-compiled": ("Liger compiled", "off", "liger-kernel"),
    "liger-eager": ("Liger eager", "off", "liger-kernel"),
    "trl-chunked": ("TRL chunked", "off", "trl"),
    "trl-full": ("TRL full logits", "off", "trl"),
}
BASELINE = "liger-compiled"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bf16": torch.bfloat16}
DTYPES["bfloat16"] = torch.bfloat16
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-1}
MODULES = {"liger-kernel": "liger_kernel", "trl": "trl"}


# -- inputs -------------------------------------------------------------------------------


def make_inputs(n: int, h: int, v: int, dtype: torch.dtype, device: str):
    """Hidden states ``(B, T, H)`` and ``lm_head`` weights ``(V, H)`` of student and teacher
    (logits of unit variance), labels ``(B, T)`` with a ``PROMPT``-token prompt per sequence.
    Drawn on the CPU from one seeded generator, so every process gets the same tensors."""
    g = torch.Generator().manual_seed(0)
    b = max(1, n // SEQ_LEN)
    t = n // b
    scale = h**-0.25
    hs = torch.randn(b, t, h, generator=g) * scale
    ws = torch.randn(v, h, generator=g) * scale
    ht = torch.randn(b, t, h, generator=g) * scale
    wt = torch.randn(v, h, generator=g) * scale
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, :PROMPT] = -100

    def put(x, grad=False):
        return x.to(device=device, dtype=dtype).requires_grad_(grad)

    return put(hs, True), put(ws, True), put(ht), put(wt), labels.to(device)


def _projection_directions(hs, ws):
    g = torch.Generator().manual_seed(1)
    r_h = torch.randn(hs.shape, generator=g, dtype=torch.float64)
    r_w = torch.randn(ws.shape, generator=g, dtype=torch.float64)
    return r_h.to(hs.device), r_w.to(ws.device)


def gradient_summary(g_h: torch.Tensor, g_w: torch.Tensor, hs, ws) -> dict:
    """Norms of both gradients and their projections on fixed random directions (float64)."""
    r_h, r_w = _projection_directions(hs, ws)
    g_h, g_w = g_h.double(), g_w.double()
    return {
        "grad_h_norm": float(g_h.norm()),
        "grad_w_norm": float(g_w.norm()),
        "grad_h_proj": float((g_h * r_h).sum()),
        "grad_w_proj": float((g_w * r_w).sum()),
    }


# -- the paths ----------------------------------------------------------------------------


def build_path(name: str, args):
    """A callable ``(hs, ws, ht, wt, labels) -> loss`` for one path; raises ImportError when
    its library is missing."""
    beta, chunk = args.beta, args.chunk_size
    if name.startswith("eakd"):
        from eakd.core import EASettings
        from eakd.losses.token import ChunkedTokenDistillation

        if name.startswith("eakd-off"):
            ea = EASettings(enabled=False)
        else:
            granularity = "item" if name.startswith("eakd-ea-token") else "sequence"
            ea = EASettings(
                enabled=True, granularity=granularity, temperature=args.entropy_temperature
            )
        loss = ChunkedTokenDistillation(
            "jsd",
            beta=beta,
            weighting="gkd",
            ea=ea,
            chunk_size=args.eakd_chunk_size,
            chunk_budget=args.eakd_chunk_budget,
            compile=not name.endswith("-eager"),
        )
        return lambda hs, ws, ht, wt, labels: loss(hs, ws, ht, wt, labels)
    if name.startswith("liger"):
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

        loss = LigerFusedLinearJSDLoss(
            weight_hard_loss=0.0,
            weight_soft_loss=1.0,
            beta=beta,
            ignore_index=-100,
            temperature=1.0,
            compiled=name == "liger-compiled",
            chunk_size=chunk,
        )

        def liger(hs, ws, ht, wt, labels):
            flat = (hs.reshape(-1, hs.shape[-1]), ws, ht.reshape(-1, ht.shape[-1]), wt)
            return loss(*flat, labels.reshape(-1))

        return liger
    if name == "trl-chunked":
        try:
            from trl.trainer.distillation_trainer import _chunked_divergence_loss
        except ImportError as exc:
            raise ImportError(
                "the installed trl has no trl.trainer.distillation_trainer."
                f"_chunked_divergence_loss (trl>=1.16 has it): {exc}"
            ) from exc

        def trl_chunked(hs, ws, ht, wt, labels):
            return _chunked_divergence_loss(hs, ht, ws, wt, labels != -100, beta)[0]

        return trl_chunked
    if name == "trl-full":
        gkd = None
        for module in ("trl.experimental.gkd", "trl"):
            with contextlib.suppress(ImportError, AttributeError):
                gkd = importlib.import_module(module).GKDTrainer
                break
        if gkd is None:
            raise ImportError("the installed trl has no GKDTrainer")

        def trl_full(hs, ws, ht, wt, labels):
            zs = hs @ ws.t()
            with torch.no_grad():
                zt = ht @ wt.t()
            return gkd.generalized_jsd_loss(zs, zt, labels, beta=beta)

        return trl_full
    raise ValueError(f"unknown path {name!r}; valid: {', '.join(PATHS)}")


# -- memory -------------------------------------------------------------------------------


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        match = re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.M)
    if match is None:
        raise OSError(f"no {key} in /proc/self/status")
    return int(match.group(1)) / 1024.0


class CpuMemory:
    """Resident set size of this process (Linux ``/proc/self``), in MB."""

    def __init__(self) -> None:
        self.resettable = True

    def current(self) -> float:
        return _status_mb("VmRSS")

    def reset_peak(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            self.resettable = False

    def peak(self) -> float:
        return _status_mb("VmHWM")


class CudaMemory:
    """Allocated CUDA memory of this process's caching allocator, in MB."""

    resettable = True

    def current(self) -> float:
        return torch.cuda.memory_allocated() / 2**20

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats()

    def peak(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**20


# -- worker (one path, one fresh process) ---------------------------------------------------


def worker(args) -> dict:
    name = args.worker
    n, h, v = args.sizes[0]
    dtype = DTYPES[args.dtype[0]]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        fn = build_path(name, args)
    except Exception as exc:  # a peer that is absent or does not import here is reported
        return {"missing": f"{type(exc).__name__}: {exc}"}
    # the compiler stack is imported by every path, so that the memory figure is the loss's
    for module in ("torch._dynamo", "torch._inductor.compile_fx"):
        importlib.import_module(module)

    device = args.device
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    memory = CudaMemory() if device.startswith("cuda") else CpuMemory()
    hs, ws, ht, wt, labels = make_inputs(n, h, v, dtype, device)
    sync()
    base = memory.current()

    def call():
        hs.grad = ws.grad = None
        start = time.perf_counter()
        loss = fn(hs, ws, ht, wt, labels)
        loss.backward()
        sync()
        return loss.detach(), time.perf_counter() - start

    try:
        loss, first = call()
        after_first = memory.current()
        memory.reset_peak()
        times = [call()[1] for _ in range(args.repeats)]
    except torch.OutOfMemoryError as exc:
        return {"error": f"out of memory: {str(exc).splitlines()[0]}"}
    peak = memory.peak()
    result = {
        "loss": float(loss.float()),
        "first_s": first,
        "time_s": statistics.median(times),
        "times": times,
        "base_mb": base,
        "peak_mb": peak - base,
        # held between calls (gradients, runtime state, freed memory the allocator kept)
        "held_mb": after_first - base,
        "peak_resettable": memory.resettable,
        "loss_dtype": str(loss.dtype).removeprefix("torch."),
        "grad_dtype": str(ws.grad.dtype).removeprefix("torch."),
    }
    return result | gradient_summary(hs.grad, ws.grad, hs, ws)


def interleaved(args) -> dict:
    """Every path of ``--paths`` in this one process, timed round-robin: ``--rounds`` rounds of
    one call each, after a first (compiling) call of each. On a shared machine the load then
    falls on every path alike, which the one-process-per-path timings cannot promise."""
    n, h, v = args.sizes[0]
    torch.set_num_threads(args.threads)
    inputs = make_inputs(n, h, v, DTYPES[args.dtype[0]], args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    fns = {}
    for name in args.paths:
        with contextlib.suppress(Exception):
            fns[name] = build_path(name, args)

    def call(fn):
        inputs[0].grad = inputs[1].grad = None
        start = time.perf_counter()
        fn(*inputs).backward()
        sync()
        return time.perf_counter() - start

    first = {name: call(fn) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            times[name].append(call(fn))
    return {
        name: {"first_s": first[name], "median_s": statistics.median(t), "min_s": min(t)}
        for name, t in times.items()
    }


def print_interleaved(res: dict, args) -> None:
    if "error" in res or "skipped" in res:
        print(f"interleaved timing: {res.get('error') or res.get('skipped')}")
        return
    base = res.get(BASELINE) or res.get("eakd-off")
    print(
        f"interleaved in one process, {args.rounds} rounds (ratios to "
        f"{PATHS[BASELINE if BASELINE in res else 'eakd-off'][0]}):"
    )
    for name, r in res.items():
        print(
            f"  {PATHS[name][0]:<20} median {r['median_s']:8.3f} s "
            f"({_ratio(r['median_s'], base and base['median_s']):>5})  min {r['min_s']:8.3f} s "
            f"({_ratio(r['min_s'], base and base['min_s']):>5})"
        )


def reference(args) -> dict:
    """Full-logit loss and gradients for EA off, token and sequence, one sequence at a time."""
    from eakd import EntropyAdaptive, build_loss
    from eakd.core import EASettings

    n, h, v = args.sizes[0]
    torch.set_num_threads(args.threads)
    hs, ws, ht, wt, labels = make_inputs(n, h, v, DTYPES[args.dtype[0]], args.device)
    hs32, ws32 = hs.detach().float(), ws.detach().float()
    ht32, wt32 = ht.float(), wt.float()
    jsd = build_loss("jsd", beta=args.beta, weighting="gkd")
    losses = {"off": jsd}
    for granularity in ("item", "sequence"):
        settings = EASettings(
            enabled=True, granularity=granularity, temperature=args.entropy_temperature
        )
        losses[granularity] = EntropyAdaptive(jsd, settings)
    # per mode: the summed loss and the gradients of the sum w.r.t. hidden states and weight
    acc = {m: [0.0, torch.zeros_like(hs32), torch.zeros_like(ws32)] for m in losses}
    denom = float((labels != -100).sum())
    for b in range(hs.shape[0]):
        zs = (hs32[b] @ ws32.t()).unsqueeze(0).requires_grad_(True)
        zt = (ht32[b] @ wt32.t()).unsqueeze(0)
        for mode, loss_fn in losses.items():
            total = loss_fn(zs, zt, labels[b : b + 1], reduction="sum")
            (g,) = torch.autograd.grad(total, zs)
            acc[mode][0] += float(total.detach())
            acc[mode][1][b] = g[0] @ ws32
            acc[mode][2].addmm_(g[0].t(), hs32[b])
    out = {}
    for mode, (total, g_h, g_w) in acc.items():
        summary = gradient_summary(g_h / denom, g_w / denom, hs, ws)
        out[mode] = {"loss": total / denom} | summary
    return out


# -- parent -------------------------------------------------------------------------------


def estimate_mb(name: str, n: int, h: int, v: int, args) -> float:
    """Rough CPU peak of a path above its inputs (float32 intermediates), to skip the ones
    that cannot fit; measured multiples of the largest ``(rows, V)`` float32 tensor."""
    f32 = 4 / 2**20
    if name == "trl-full":
        return 18 * n * v * f32
    if name == "trl-chunked":
        return 14 * min(n, 4096) * min(v, 32768) * f32 + 3 * n * h * f32
    chunk = args.chunk_size
    if name.startswith("eakd"):
        chunk = args.eakd_chunk_size or max(SEQ_LEN, args.eakd_chunk_budget // v)
    return 16 * min(n, chunk) * v * f32 + 3 * (n + v) * h * f32


def run_subprocess(argv: list[str], env: dict, args) -> dict:
    """Run this file with ``argv`` and return its JSON result. A subprocess that outlives
    ``--timeout`` failed; one stopped by ``--deadline`` (the whole run's budget) is skipped."""
    remaining = args.deadline_at - time.monotonic()
    if remaining <= 0:
        return {"skipped": "out of time (--deadline)"}
    timeout = min(args.timeout or math.inf, remaining)
    cmd = [sys.executable, os.path.abspath(__file__), *argv]
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            timeout=None if math.isinf(timeout) else timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        if args.timeout is None or remaining < args.timeout:
            return {"skipped": "out of time (--deadline)"}
        return {"error": f"timed out after {timeout:.0f} s (--timeout)"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    tail = (out.stderr or out.stdout).strip().splitlines()[-12:]
    return {"error": f"exit {out.returncode}: " + "\n    ".join(tail)}


def package_version(dist: str) -> str | None:
    """The installed version of a peer (``None`` when its module cannot be found), without
    importing it."""
    module = MODULES.get(dist, dist)
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def device_name(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or "CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    return f"{model}, {threads} threads"


def _ratio(x: float | None, base: float | None) -> str:
    if x is None or base is None or not base > 0:
        return "-"
    return f"{x / base:.2f}"


def _mb(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def compare(res: dict, ref: dict, tol: float) -> tuple[float, bool]:
    """Largest relative error of the loss, the gradient norms and the projections (those
    relative to the reference gradient's norm) against the reference."""
    errs = [abs(res["loss"] - ref["loss"]) / max(abs(ref["loss"]), 1e-12)]
    for g in ("h", "w"):
        norm = max(ref[f"grad_{g}_norm"], 1e-30)
        errs.append(abs(res[f"grad_{g}_norm"] - ref[f"grad_{g}_norm"]) / norm)
        errs.append(abs(res[f"grad_{g}_proj"] - ref[f"grad_{g}_proj"]) / norm)
    worst = max(errs)
    return worst, worst <= tol


def run_case(args, n, h, v, dtype_name, versions, env) -> tuple[dict, bool]:
    dtype = DTYPES[dtype_name]
    common = [
        "--sizes",
        f"{n}x{h}x{v}",
        "--dtype",
        dtype_name,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--chunk-size",
        str(args.chunk_size),
        "--beta",
        str(args.beta),
        "--entropy-temperature",
        str(args.entropy_temperature),
        "--repeats",
        str(args.repeats),
        "--eakd-chunk-budget",
        str(args.eakd_chunk_budget),
        "--rounds",
        str(args.rounds),
    ]
    if args.eakd_chunk_size:
        common += ["--eakd-chunk-size", str(args.eakd_chunk_size)]
    ref = None
    if not args.no_check:  # first, like the baseline: what a --deadline cuts is the rest
        ref = run_subprocess(["--reference", *common], env, args)
    results: dict[str, dict] = {}
    order = sorted(args.paths, key=lambda p: p != BASELINE)  # stable: the others keep their order
    for name in order:
        dist = PATHS[name][2]
        if dist != "eakd" and versions.get(dist) is None:
            results[name] = {
                "missing": f"{dist} is not installed: pip install 'eakd[bench]'",
            }
            continue
        need = estimate_mb(name, n, h, v, args)
        if not args.device.startswith("cuda") and need > 0.9 * available_mb():
            results[name] = {
                "skipped": f"needs ~{need:.0f} MB, {available_mb():.0f} MB available",
            }
            continue
        with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
            worker_env = dict(env)
            if not args.warm_cache:
                worker_env["TORCHINDUCTOR_CACHE_DIR"] = cache
                worker_env["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
            if args.live_memory:
                worker_env["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
            results[name] = run_subprocess(["--worker", name, *common], worker_env, args)
        print(f"  {PATHS[name][0]}: {_status(results[name])}", file=sys.stderr, flush=True)
    ok = print_case(args, n, h, v, dtype, results, ref)
    if args.rounds:
        paths = [p for p in args.paths if "time_s" in results.get(p, {})]
        with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
            worker_env = dict(env, TORCHINDUCTOR_CACHE_DIR=cache)
            res = run_subprocess(["--interleaved", *common, "--paths", *paths], worker_env, args)
        print_interleaved(res, args)
        results["interleaved"] = res
    return results, ok


def _status(res: dict) -> str:
    for key in ("missing", "skipped", "error"):
        if key in res:
            return f"{key}: {res[key]}"
    return f"{res['time_s']:.3f} s, {_mb(res['peak_mb'])} MB"


def baseline(results: dict) -> str:
    """Liger compiled, or eakd EA off where Liger did not run."""
    return BASELINE if "time_s" in results.get(BASELINE, {}) else "eakd-off"


def print_case(args, n, h, v, dtype, results, ref) -> bool:
    base_name = baseline(results)
    base = results.get(base_name, {})
    tol = TOLERANCE[dtype]
    dt = str(dtype).removeprefix("torch.")
    print(
        f"\n(B*T, H, V) = {(n, h, v)}, {dt} inputs; time: median of {args.repeats}; "
        f"peak memory above the inputs; ratios to {PATHS[base_name][0]}"
    )
    header = (
        f"{'path':<20} {'time s':>8} {'ratio':>6} {'peak MB':>8} {'ratio':>6} "
        f"{'1st call s (+extra)':>19} {'loss':>11} {'|grad h|':>10} {'|grad W|':>10}  check"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for name in args.paths:
        res, label = results[name], PATHS[name][0]
        if "time_s" not in res:
            print(f"{label:<20} {_status(res)}")
            ok = ok and "error" not in res
            continue
        if ref is None:
            check = "not checked (--no-check)"
        elif "skipped" in ref:
            check = "not checked (the reference ran out of time)"
        elif "error" in ref:
            check, ok = "reference failed", False
        else:
            err, good = compare(res, ref[PATHS[name][1]], tol)
            check = f"{'ok' if good else 'MISMATCH'} (rel. err {err:.1e}, tol {tol:.0e})"
            ok = ok and good
        peak = _mb(res["peak_mb"]) + ("" if res["peak_resettable"] else "*")
        # the first call's excess over a steady call: torch.compile's compile time, or warm-up
        first = f"{res['first_s']:.2f} (+{max(res['first_s'] - res['time_s'], 0):.2f})"
        print(
            f"{label:<20} {res['time_s']:8.3f} {_ratio(res['time_s'], base.get('time_s')):>6} "
            f"{peak:>8} {_ratio(res['peak_mb'], base.get('peak_mb')):>6} "
            f"{first:>19} {res['loss']:11.6f} {res['grad_h_norm']:10.3e} "
            f"{res['grad_w_norm']:10.3e}  {check}"
        )
    if ref is not None and "error" in ref:
        print(f"reference failed: {ref['error']}")
    if any(not r.get("peak_resettable", True) for r in results.values()):
        print("* /proc/self/clear_refs not writable: lifetime peak, first call included")
    return ok


def summary(args, table: list[tuple[tuple[int, int, int], str, dict]]) -> None:
    """A markdown table: one row per size and dtype, one column per path."""
    labels = [PATHS[p][0] for p in args.paths]
    print("\n| (B*T, H, V) | dtype | " + " | ".join(labels) + " | ratios to |")
    print("|---|---|" + "---|" * len(labels) + "---|")
    for size, dt, results in table:
        base_name = baseline(results)
        base = results.get(base_name, {})
        cells = []
        for name in args.paths:
            res = results[name]
            if "time_s" not in res:
                cells.append(
                    "missing" if "missing" in res else "skipped" if "skipped" in res else "failed"
                )
                continue
            rt = _ratio(res["time_s"], base.get("time_s"))
            rm = _ratio(res["peak_mb"], base.get("peak_mb"))
            cells.append(f"{res['time_s']:.2f} s / {_mb(res['peak_mb'])} MB ({rt}x / {rm}x)")
        print(f"| {size} | {dt} | " + " | ".join(cells) + f" | {PATHS[base_name][0]} |")


def parse_size(text: str) -> tuple[int, int, int]:
    parts = re.split(r"[x,]", text.strip("() "))
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"a size is N x H x V, e.g. 1024x256x16384, got {text!r}")
    n, h, v = (int(p) for p in parts)
    return n, h, v


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smallest size only")
    parser.add_argument(
        "--sizes", nargs="+", type=parse_size, help="sizes N x H x V (default: the three above)"
    )
    parser.add_argument(
        "--dtype", nargs="+", default=["float32"], choices=sorted(DTYPES), help="input dtypes"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    parser.add_argument(
        "--repeats", type=int, help="timed calls after the first (3 on the CPU, 10 on CUDA)"
    )
    parser.add_argument("--chunk-size", type=int, default=1024, help="rows per chunk (Liger)")
    parser.add_argument(
        "--eakd-chunk-size", type=int, help="rows per eakd chunk (default: from its budget)"
    )
    parser.add_argument(
        "--eakd-chunk-budget",
        type=int,
        default=None,
        help="logits per eakd chunk (default: eakd's DEFAULT_CHUNK_BUDGET)",
    )
    parser.add_argument(
        "--live-memory",
        action="store_true",
        help="MALLOC_MMAP_THRESHOLD_=1048576 in every path: the peak follows the live tensors",
    )
    parser.add_argument("--beta", type=float, default=0.5, help="JSD beta (Liger/TRL meaning)")
    parser.add_argument(
        "--entropy-temperature", type=float, default=1.0, help="EA's T' (the LLM recipes' 1)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--warm-cache", action="store_true", help="keep the inductor cache")
    parser.add_argument("--no-check", action="store_true", help="skip the reference check")
    parser.add_argument("--timeout", type=float, help="seconds per subprocess (else a failure)")
    parser.add_argument(
        "--deadline", type=float, help="seconds for the whole run; paths past it are skipped"
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", choices=list(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interleaved", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="also time the paths round-robin in one process, this many rounds (0: off)",
    )
    args = parser.parse_args()
    args.deadline_at = time.monotonic() + (args.deadline or math.inf)
    if args.eakd_chunk_budget is None:
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
        if os.path.isdir(src) and src not in sys.path:  # a source checkout, as the workers
            sys.path.insert(0, src)
        from eakd.losses.token.chunked import DEFAULT_CHUNK_BUDGET

        args.eakd_chunk_budget = DEFAULT_CHUNK_BUDGET
    args.sizes = args.sizes or (SIZES[:1] if args.quick else SIZES)
    if args.repeats is None:
        args.repeats = 10 if args.device.startswith("cuda") else 3
    if args.worker or args.reference or args.interleaved:
        import warnings

        warnings.filterwarnings("ignore")
        out = (
            worker(args)
            if args.worker
            else interleaved(args)
            if args.interleaved
            else reference(args)
        )
        print(RESULT + json.dumps(out), flush=True)
        return 0
    sys.stdout.reconfigure(line_buffering=True)  # the table in order with the progress lines
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("llm_loss_peers: --device cuda but CUDA is not available", file=sys.stderr)
        return 2

    versions = {dist: package_version(dist) for dist in ("liger-kernel", "trl")}
    print(
        f"torch {torch.__version__}, eakd {package_version('eakd')}, "
        + ", ".join(f"{d} {ver or 'not installed'}" for d, ver in versions.items())
    )
    eakd_chunk = (
        f"{args.eakd_chunk_size} rows"
        if args.eakd_chunk_size
        else f"budget {args.eakd_chunk_budget} logits"
    )
    print(
        f"device: {device_name(args.device, args.threads)}; Liger chunk {args.chunk_size} rows, "
        f"eakd chunk {eakd_chunk}, JSD beta {args.beta}, EA T' {args.entropy_temperature}, "
        f"{'warm' if args.warm_cache else 'empty'} inductor cache per process"
        + (", live memory (MALLOC_MMAP_THRESHOLD_=1 MiB)" if args.live_memory else "")
    )
    for dist, ver in versions.items():
        if ver is None:
            print(f"{dist} is not installed: pip install 'eakd[bench]'")
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    env["OMP_NUM_THREADS"] = str(args.threads)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    if os.path.isdir(src):  # a source checkout runs without an install
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    table = []
    ok = True
    for n, h, v in args.sizes:
        for dt in args.dtype:
            results, good = run_case(args, n, h, v, dt, versions, env)
            ok = ok and good
            table.append(((n, h, v), str(DTYPES[dt]).removeprefix("torch."), results))
    summary(args, table)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{"size": s, "dtype": d, "results": r} for s, d, r in table], fh, indent=1)
    if not ok:
        print("\nllm_loss_peers: a path failed or disagrees with the reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
