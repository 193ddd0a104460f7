"""Forward+backward time of eakd's EA-wrapped KD/DKD against plain KD/DKD written the usual way.

The baselines are what the released EA-KD code and most KD repositories write:
``F.log_softmax`` + ``F.kl_div(reduction="none").sum(1)`` for KD, and the mdistiller DKD
(softmax, target/non-target masks, ``log``, the ``-1000`` shift) for DKD. Both sides run in the
same process on the same inputs; the figure is the median time ratio EA / plain (target <= 1.25).

For KD a third column, ``bare/plain``, times the least a hand-written EA-KD can do in eager
PyTorch: plain KD plus one stacked no-grad entropy pass and the weights, inline, with no input
checks and no statistics. At small sizes op dispatch dominates, and this bare floor shows how
much of eakd's ratio any eager implementation pays.

    python benchmarks/loss_overhead.py [--repeats 30] [--sizes 64x100,512x1000,4096x1000]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from eakd import EntropyAdaptive, build_loss

TARGET = 1.25


def plain_kd(s, t, temperature=4.0):
    log_q = F.log_softmax(s / temperature, dim=1)
    p = F.softmax(t / temperature, dim=1)
    return (F.kl_div(log_q, p, reduction="none").sum(1) * temperature**2).mean()


def plain_dkd(s, t, y, alpha=1.0, beta=8.0, temperature=4.0):
    gt = torch.zeros_like(s).scatter_(1, y.unsqueeze(1), 1).bool()
    other = ~gt
    ps = F.softmax(s / temperature, dim=1)
    pt = F.softmax(t / temperature, dim=1)
    bs = torch.cat([(ps * gt).sum(1, keepdim=True), (ps * other).sum(1, keepdim=True)], 1)
    bt = torch.cat([(pt * gt).sum(1, keepdim=True), (pt * other).sum(1, keepdim=True)], 1)
    tckd = F.kl_div(torch.log(bs), bt, reduction="none").sum(1) * temperature**2
    pt2 = F.softmax(t / temperature - 1000.0 * gt, dim=1)
    log_ps2 = F.log_softmax(s / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_ps2, pt2, reduction="none").sum(1) * temperature**2
    return (alpha * tckd + beta * nckd).mean()


def bare_ea_kd(s, t, temperature=4.0, entropy_temperature=3.0):
    per = F.kl_div(
        F.log_softmax(s / temperature, dim=1),
        F.softmax(t / temperature, dim=1),
        reduction="none",
    ).sum(1) * (temperature**2)
    with torch.no_grad():
        log_p = torch.log_softmax(torch.stack((s.detach(), t)) / entropy_temperature, -1)
        hs, ht = -(log_p.exp() * log_p).sum(-1)
        w = 0.5 * ht * (1 + hs / math.log(s.shape[1]))
    return (per * w).mean()


def time_fb(fn, s, t, y, repeats):
    times = []
    for i in range(repeats + 3):
        s.grad = None
        start = time.perf_counter()
        fn(s, t, y).backward()
        if i >= 3:  # warm-up runs are discarded
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sizes", default="64x100,512x1000,4096x1000")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ea_kd = EntropyAdaptive(build_loss("kd", temperature=4.0), temperature=3.0)
    ea_dkd = EntropyAdaptive(build_loss("dkd", alpha=1.0, beta=8.0, temperature=4.0))
    pairs = {
        "KD": (lambda s, t, y: plain_kd(s, t), lambda s, t, y: ea_kd(s, t)),
        "DKD": (plain_dkd, lambda s, t, y: ea_dkd(s, t, y)),
    }
    bare = {"KD": lambda s, t, y: bare_ea_kd(s, t)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 on CPU")
    print(
        f"{'method':<6} {'N x C':>12} {'plain ms':>10} {'EA ms':>10} {'EA/plain':>9} "
        f"{'bare/plain':>11}"
    )
    worst = 0.0
    for size in args.sizes.split(","):
        n, c = (int(x) for x in size.split("x"))
        teacher = torch.randn(n, c) * 3
        student = (torch.randn(n, c) * 2).requires_grad_(True)
        target = torch.randint(0, c, (n,))
        for name, (plain, ea) in pairs.items():
            repeats = args.repeats if n * c < 1e6 else max(args.repeats // 2, 10)
            # interleave so drifts in machine load hit both sides alike
            tp, te, tb = [], [], []
            for _ in range(3):
                tp.append(time_fb(plain, student, teacher, target, repeats))
                te.append(time_fb(ea, student, teacher, target, repeats))
                if name in bare:
                    tb.append(time_fb(bare[name], student, teacher, target, repeats))
            tp_ms, te_ms = statistics.median(tp) * 1e3, statistics.median(te) * 1e3
            ratio = te_ms / tp_ms
            worst = max(worst, ratio)
            floor = f"{statistics.median(tb) * 1e3 / tp_ms:>11.2f}" if tb else f"{'':>11}"
            print(f"{name:<6} {f'{n}x{c}':>12} {tp_ms:>10.3f} {te_ms:>10.3f} {ratio:>9.2f} {floor}")
    verdict = "meets" if worst <= TARGET else "MISSES"
    print(f"worst EA/plain ratio {worst:.2f} ({verdict} the target <= {TARGET})")


if __name__ == "__main__":
    main()
