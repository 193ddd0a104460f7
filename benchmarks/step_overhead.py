"""Time per training step with EA-KD vs KD (the paper's "negligible cost", its Figure 1).

One step = teacher forward (no grad) + student forward/backward + SGD update, ResNet32x4 ->
ResNet8x4 at batch 64 on 32x32 inputs, float32. Both objectives run in the same process on the
same models and batches, interleaved; the figure is the ratio of medians EA-KD / KD
(target <= 1.02).

    python benchmarks/step_overhead.py [--steps 30] [--rounds 3] [--batch 64]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _steps import time_steps  # benchmarks/_steps.py (the script folder is on sys.path)

from eakd.core import EASettings
from eakd.engines.classification import ClassificationTask, MethodConfig
from eakd.models import build_model

TARGET = 1.02


def make_task(ea: bool, method: str, student, teacher) -> ClassificationTask:
    kw = {"kd": {"temperature": 4.0}, "dkd": {"alpha": 1.0, "beta": 8.0, "temperature": 4.0}}
    m = MethodConfig(name=method, ce_weight=0.1, kd_weight=0.9, loss=kw[method])
    # diagnostics off: the benchmark measures the objective, not the logging
    return ClassificationTask(student, teacher, m, EASettings(enabled=ea), 100, entropy_bins=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--method", default="kd", choices=("kd", "dkd"))
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = build_model("resnet32x4", num_classes=100)
    student = build_model("resnet8x4", num_classes=100)
    tasks = {ea: make_task(ea, args.method, student, teacher) for ea in (False, True)}
    opt = torch.optim.SGD(student.parameters(), lr=1e-4, momentum=0.9)
    batches = [
        (torch.randn(args.batch, 3, 32, 32), torch.randint(0, 100, (args.batch,))) for _ in range(4)
    ]
    for task in tasks.values():
        task.train()
    times = {False: [], True: []}
    for _ in range(args.rounds):  # interleave so load drifts hit both alike
        for ea, task in tasks.items():
            times[ea] += time_steps(task, opt, batches, args.steps, warmup=2)
    plain, ea = statistics.median(times[False]), statistics.median(times[True])
    ratio = ea / plain
    name = args.method.upper()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU float32")
    print(f"ResNet32x4 -> ResNet8x4, batch {args.batch}, {len(times[False])} steps each")
    print(f"{name} step {plain * 1e3:.1f} ms, EA-{name} step {ea * 1e3:.1f} ms")
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"EA-{name}/{name} step-time ratio {ratio:.3f} ({verdict} the target <= {TARGET})")


if __name__ == "__main__":
    main()
