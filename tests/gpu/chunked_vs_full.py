"""The chunked LLM loss against the full-logit path at an LLM size, on CUDA: values, gradients,
peak ``torch.cuda.max_memory_allocated`` and time (scripts/gpu_check.sh runs it).

    PYTHONPATH=src python tests/gpu/chunked_vs_full.py [--size 4096x576x32000] [--dtype bf16]

For EA off, per token and per sequence (``T' = 1``), generalized JSD (beta 0.5): the full path
forms the ``(B, T, V)`` float32 logits of student and teacher, the registered ``jsd`` loss and
:class:`eakd.EntropyAdaptive`; the chunked path is :class:`ChunkedTokenDistillation` from the
hidden states. The loss must agree to ``1e-5`` and every gradient entry to ``1e-4`` of the
largest one (float32 inputs; bf16 inputs are compared with the full path on the same numbers in
float32: 1e-4 for the loss, 1e-2 for the bf16 gradients), and the chunked peak must be lower.
Prints one line per setting; exits 1 on a failure, 2 without CUDA.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from eakd import EntropyAdaptive, build_loss
from eakd.core import EASettings
from eakd.losses.token import ChunkedTokenDistillation

SEQ_LEN = 512
DEVICE = "cuda"


def inputs(n: int, h: int, v: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    b = max(1, n // SEQ_LEN)
    t = n // b
    hs = torch.randn(b, t, h, generator=g) * h**-0.25
    ws = torch.randn(v, h, generator=g) * h**-0.25
    ht = torch.randn(b, t, h, generator=g) * h**-0.25 * 1.5
    wt = torch.randn(v, h, generator=g) * h**-0.25
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, :8] = -100

    def put(x, grad=False):
        return x.to(DEVICE, dtype).requires_grad_(grad)

    return put(hs, True), put(ws, True), put(ht), put(wt), labels.to(DEVICE)


def full(hs, ws, ht, wt, labels, ea):
    jsd = build_loss("jsd", beta=0.5, weighting="gkd")
    loss = EntropyAdaptive(jsd, ea) if ea.enabled else jsd
    with torch.no_grad():
        zt = ht.float() @ wt.float().t()
    return loss(hs.float() @ ws.float().t(), zt, labels)


def chunked(hs, ws, ht, wt, labels, ea, chunk_size=1024):
    kd = ChunkedTokenDistillation("jsd", beta=0.5, weighting="gkd", ea=ea, chunk_size=chunk_size)
    return kd(hs, ws, ht, wt, labels)


def measure(fn, hs, ws, ht, wt, labels, ea):
    """Loss, gradients, peak MB above the allocation before the call, and seconds (the second
    of two calls, so that kernel selection is not timed)."""
    for _ in range(2):
        hs.grad = ws.grad = None
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = fn(hs, ws, ht, wt, labels, ea)
        loss.backward()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    return loss.detach().double(), hs.grad.double(), ws.grad.double(), peak, seconds


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest entry-wise error over the reference's largest magnitude."""
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="4096x576x32000", help="B*T x H x V")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bf16"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("chunked_vs_full: CUDA is not available")
        return 2
    n, h, v = (int(x) for x in args.size.split("x"))
    dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
    tol_loss, tol_grad = (1e-5, 1e-4) if dtype == torch.float32 else (1e-4, 1e-2)
    print(f"{torch.cuda.get_device_name()}: (B*T, H, V) = {(n, h, v)}, {args.dtype} inputs")
    print(
        f"{'EA':<9} {'loss err':>9} {'grad err':>9} {'full MB':>9} {'chunk MB':>9} {'ratio':>6} "
        f"{'full s':>8} {'chunk s':>8}  check"
    )
    ok = True
    for label, ea in (
        ("off", EASettings(enabled=False)),
        ("token", EASettings(enabled=True, granularity="item", temperature=1.0)),
        ("sequence", EASettings(enabled=True, granularity="sequence", temperature=1.0)),
    ):
        data = inputs(n, h, v, dtype)
        ref_in = [x.detach().float().requires_grad_(x.requires_grad) for x in data[:4]]
        lf, ghf, gwf, peak_f, t_f = measure(full, *ref_in, data[4], ea)
        del ref_in
        lc, ghc, gwc, peak_c, t_c = measure(chunked, *data, ea)
        e_loss = rel_err(lc, lf)
        e_grad = max(rel_err(ghc, ghf), rel_err(gwc, gwf))
        good = e_loss <= tol_loss and e_grad <= tol_grad and peak_c < peak_f
        ok = ok and good
        print(
            f"{label:<9} {e_loss:9.1e} {e_grad:9.1e} {peak_f:9.0f} {peak_c:9.0f} "
            f"{peak_c / peak_f:6.2f} {t_f:8.3f} {t_c:8.3f}  {'ok' if good else 'FAILED'}",
            flush=True,
        )
        del data, ghf, gwf, ghc, gwc
        torch.cuda.empty_cache()
    print(f"tolerances: loss {tol_loss:.0e}, gradients {tol_grad:.0e}; chunked peak < full peak")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
