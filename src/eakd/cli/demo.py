"""``eakd demo``: the offline demonstrations."""

from __future__ import annotations

import argparse

TASKS = ("core", "classification", "llm", "detection")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run an offline demonstration",
        description="Run an offline EA-KD demonstration on 2 CPU cores.",
    )
    p.add_argument(
        "--task", choices=TASKS, default="classification", help="which demo (default: %(default)s)"
    )
    p.add_argument(
        "--dataset",
        choices=("mnist1d", "fashion_mnist"),
        default="mnist1d",
        help="classification demo data (default: %(default)s)",
    )
    p.add_argument("--seeds", type=int, default=3, help="student seeds (default: 3)")
    p.add_argument("--workers", type=int, default=None, help="runs trained at once (cores)")
    p.add_argument("--output", default=None, help="output folder (default: runs/demo/DATASET)")
    p.add_argument("--fresh", action="store_true", help="retrain instead of reusing runs")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.task == "core":
        from ..demos.core import run as run_core

        print(run_core())
        return 0
    if args.task == "llm":
        from ..demos.llm import run_demo
    elif args.task == "detection":
        from ..demos.detection import run_demo
    else:
        from ..demos.classification import run_demo
    return run_demo(args)
