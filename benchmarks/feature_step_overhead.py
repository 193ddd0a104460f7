"""Time per training step with EA vs without for the feature methods ReviewKD and FCFD.

One step = the classification task's forward (teacher under no_grad, student, ReviewKD's ABF
fusion and HCL, or FCFD's bridges and two mixed paths) + backward + SGD update, ResNet32x4 ->
ResNet8x4 at batch 64 on 32x32 inputs, float32. Plain and EA variants run in the same process on
the same models and batches, interleaved in rounds (each round reseeds the generator, so both
FCFD variants draw the same mixed paths); the figure is the ratio of medians EA / plain
(target <= 1.02).

    python benchmarks/feature_step_overhead.py [--method reviewkd fcfd] [--steps 6] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _steps import time_steps  # benchmarks/_steps.py (the script folder is on sys.path)

from eakd import EntropyAdaptive
from eakd.core import EASettings
from eakd.engines.classification import ClassificationTask, MethodConfig
from eakd.losses.feature import PerItemValues
from eakd.models import build_model

TARGET = 1.02
METHOD = {
    "reviewkd": MethodConfig(name="reviewkd", ce_weight=1.0, kd_weight=5.0, warmup_epochs=20),
    "fcfd": MethodConfig(name="fcfd", loss={"temperature": 4.0, "l2_weight": 5.0}),
}


def bench(method: str, args) -> float:
    torch.manual_seed(0)
    teacher = build_model("resnet32x4", num_classes=100)
    student = build_model("resnet8x4", num_classes=100)
    tasks, opts = {}, {}
    for ea in (False, True):
        # diagnostics off: the benchmark measures the objective, not the logging
        task = ClassificationTask(student, teacher, METHOD[method], EASettings(enabled=ea), 100, 0)
        task.train()
        task.set_epoch(30)
        tasks[ea] = task
        # a tiny learning rate keeps the shared student near its start for both variants
        opts[ea] = torch.optim.SGD(
            task.trainable_parameters(), lr=1e-6, momentum=0.9, nesterov=method == "fcfd"
        )
    batches = [
        (torch.randn(args.batch, 3, 32, 32), torch.randint(0, 100, (args.batch,))) for _ in range(3)
    ]
    times = {False: [], True: []}
    for r in range(args.rounds):  # interleave so load drifts hit both alike
        order = (False, True) if r % 2 == 0 else (True, False)
        for ea in order:
            torch.manual_seed(r)  # FCFD draws its paths: the same draws for both variants
            times[ea] += time_steps(tasks[ea], opts[ea], batches, args.steps)
    plain, ea = statistics.median(times[False]), statistics.median(times[True])
    ratio = ea / plain
    name = {"reviewkd": "ReviewKD", "fcfd": "FCFD"}[method]
    print(
        f"{name}: {len(times[False])} steps each; step {plain * 1e3:.1f} ms, "
        f"EA-{name} step {ea * 1e3:.1f} ms"
    )
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"EA-{name}/{name} step-time ratio {ratio:.3f} ({verdict} the target <= {TARGET})")
    # what EA adds, timed alone (less noisy than the difference of two step medians): the
    # entropies and weights of the (batch, 100) logits and the weighted reduction
    zs, zt = torch.randn(args.batch, 100, requires_grad=True), torch.randn(args.batch, 100)
    per = torch.rand(args.batch, requires_grad=True)
    ea_part = EntropyAdaptive(PerItemValues())
    calls = []
    for _ in range(200):
        t0 = time.perf_counter()
        ea_part(per, None, logits=(zs.detach(), zt)).backward()
        calls.append(time.perf_counter() - t0)
    extra = statistics.median(calls)
    print(
        f"EA weighting alone: {extra * 1e3:.3f} ms per step = {100 * extra / plain:.3f}% of a step"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", nargs="+", default=["reviewkd", "fcfd"], choices=list(METHOD))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU float32")
    print(f"ResNet32x4 -> ResNet8x4, batch {args.batch}")
    for method in args.method:
        bench(method, args)


if __name__ == "__main__":
    main()
