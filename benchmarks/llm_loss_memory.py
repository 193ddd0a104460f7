"""Peak memory and time of EA-KD (forward KL) for causal LMs: chunked path vs full logits.

For each ``(B*T, H, V)``:

* full: the logits ``(B*T, V)`` of student and teacher are materialised (``h @ W.T``), the
  per-token forward KL is computed by the registered loss, and the EA weights by
  ``eakd.ea_weights`` from the same logits in a separate pass (as the released EA-KD code does),
  then ``reduce`` and ``backward``;
* chunked: :class:`eakd.losses.token.ChunkedTokenDistillation` from the hidden states and both
  ``lm_head`` weights (EA on, and EA off for the time comparison).

Peak memory is the peak resident set size (``ru_maxrss``) of a fresh subprocess per case and
path, reported in total and above the inputs (RSS after the inputs were built); the chunked
path runs its eager step there (``ru_maxrss`` would also hold ``torch.compile``'s own peak),
and its default step (``compile="auto"``) in the timings. Targets: the
chunked path's peak <= 20 % of the full path's, and EA adds <= 10 % time over the same chunked
loss without EA (timed in one process, alternating, median of the repeats).

    python benchmarks/llm_loss_memory.py            # (4096, 576, 49152) and (8192, 768, 50257)
    python benchmarks/llm_loss_memory.py --quick    # (1024, 256, 16384): a minute on 2 cores

Measured on 2 shared CPU cores (AMD EPYC, torch 2.14.1, chunk 256): (4096, 576, 49152): peak
RSS 1273 MB chunked vs 7106 MB full (0.18; above the inputs 410 vs 6242 MB, 0.07); EA / no-EA
time 50.6 / 50.2 s (1.008, median of 5). (8192, 768, 50257): 1459 vs 13850 MB (0.11; above the
inputs 434 vs 12824 MB, 0.03).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from _memory import available_mb

CASES = [(4096, 576, 49152), (8192, 768, 50257)]
QUICK = [(1024, 256, 16384)]
SEQ_LEN = 512


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _inputs(n: int, h: int, v: int):
    g = torch.Generator().manual_seed(0)
    b = max(1, n // SEQ_LEN)
    t = n // b
    hs = (torch.randn(b, t, h, generator=g) / h**0.25).requires_grad_(True)
    ws = (torch.randn(v, h, generator=g) / h**0.25).requires_grad_(True)
    ht = torch.randn(b, t, h, generator=g) / h**0.25
    wt = torch.randn(v, h, generator=g) / h**0.25
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, :8] = -100  # a short prompt per sequence
    return hs, ws, ht, wt, labels


def full_path(hs, ws, ht, wt, labels):
    from eakd import build_loss, ea_weights, reduce

    zs = hs @ ws.t()
    with torch.no_grad():
        zt = ht @ wt.t()
    per = build_loss("forward_kl").per_item_loss(zs, zt, labels)
    w = ea_weights(zs.detach(), zt, temperature=1.0)  # a separate pass over the logits
    loss = reduce(per, weight=w, mask=labels != -100)
    loss.backward()
    return float(loss.detach())


def chunked_path(hs, ws, ht, wt, labels, ea: bool, chunk: int, compile: bool | str = "auto"):
    from eakd.losses.token import ChunkedTokenDistillation

    loss = ChunkedTokenDistillation("forward_kl", ea=ea, chunk_size=chunk, compile=compile)(
        hs, ws, ht, wt, labels
    )
    loss.backward()
    return float(loss.detach())


def worker(mode: str, n: int, h: int, v: int, chunk: int, repeats: int) -> dict:
    torch.manual_seed(0)
    inputs = _inputs(n, h, v)
    base = _rss_mb()
    if mode == "memory-full":
        full_path(*inputs)
        return {"base_mb": base, "peak_mb": _rss_mb()}
    if mode == "memory-chunked":  # eager: ru_maxrss would also hold torch.compile's own peak
        chunked_path(*inputs, ea=True, chunk=chunk, compile=False)
        return {"base_mb": base, "peak_mb": _rss_mb()}
    times: dict[str, list[float]] = {"ea": [], "no_ea": []}
    for _ in range(repeats):
        for ea in (False, True):
            for x in (inputs[0], inputs[1]):
                x.grad = None
            start = time.perf_counter()
            chunked_path(*inputs, ea=ea, chunk=chunk)
            times["ea" if ea else "no_ea"].append(time.perf_counter() - start)
    start = time.perf_counter()
    full_path(*inputs)
    full = time.perf_counter() - start
    return {k: statistics.median(t) for k, t in times.items()} | {"full": full}


def run_worker(*args) -> dict:
    cmd = [sys.executable, __file__, "--worker", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small case (1024, 256, 16384)")
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-only", action="store_true", help="skip the timings")
    parser.add_argument(
        "--case", type=int, action="append", help="run only these cases (0, 1) of the full list"
    )
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, n, h, v, chunk, repeats = args.worker
        print(json.dumps(worker(mode, int(n), int(h), int(v), int(chunk), int(repeats))))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU, "
        f"chunk {args.chunk_size}"
    )
    print(
        f"{'(B*T, H, V)':>22} {'full peak MB':>13} {'chunked MB':>11} {'ratio':>6} "
        f"{'above inputs':>13} {'ratio':>6} {'t full':>7} {'t no-EA':>8} {'t EA':>7} {'EA/noEA':>8}"
    )
    cases = QUICK if args.quick else [CASES[i] for i in (args.case or range(len(CASES)))]
    for n, h, v in cases:
        # the full path holds about nine (B*T, V) float32 tensors at its peak
        need = 9 * n * v * 4 / 2**20 + 1024
        if need > available_mb():
            print(
                f"{(n, h, v)!s:>22} skipped: the full path needs ~{need:.0f} MB, "
                f"{available_mb():.0f} MB available"
            )
            continue
        full = run_worker("memory-full", n, h, v, args.chunk_size, 1)
        chunk = run_worker("memory-chunked", n, h, v, args.chunk_size, 1)
        nan = float("nan")
        t = (
            {"full": nan, "no_ea": nan, "ea": nan}
            if args.memory_only
            else run_worker("time", n, h, v, args.chunk_size, args.repeats)
        )
        total_ratio = chunk["peak_mb"] / full["peak_mb"]
        extra_ratio = (chunk["peak_mb"] - chunk["base_mb"]) / (full["peak_mb"] - full["base_mb"])
        print(
            f"{(n, h, v)!s:>22} {full['peak_mb']:13.0f} {chunk['peak_mb']:11.0f} "
            f"{total_ratio:6.2f} {chunk['peak_mb'] - chunk['base_mb']:6.0f}/"
            f"{full['peak_mb'] - full['base_mb']:<6.0f} {extra_ratio:6.2f} {t['full']:7.1f} "
            f"{t['no_ea']:8.1f} {t['ea']:7.1f} {t['ea'] / t['no_ea']:8.3f}",
            flush=True,
        )
    print("targets: chunked peak / full peak <= 0.20; chunked EA time / chunked no-EA <= 1.10")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    main()
