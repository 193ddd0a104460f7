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
        default=None,
        help="classification demo data (default: mnist1d)",
    )
    p.add_argument("--seeds", type=int, default=None, help="student seeds (default: 3)")
    p.add_argument("--workers", type=int, default=None, help="runs trained at once (cores)")
    p.add_argument("--output", default=None, help="output folder (default: runs/demo/...)")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="retrain instead of reusing runs (removes eakd's own runs in the output folder "
        "only, never other files)",
    )
    p.set_defaults(handler=run)


#: The options each demo reads; any other given option is an error, not silently ignored.
OPTIONS = {
    "core": (),
    "classification": ("dataset", "seeds", "workers", "output", "fresh"),
    "detection": ("output", "fresh"),
    "llm": (),
}


def _check_options(args: argparse.Namespace) -> None:
    from .main import CLIError

    given = [
        name
        for name in ("dataset", "seeds", "workers", "output", "fresh")
        if getattr(args, name, None) not in (None, False) and name not in OPTIONS[args.task]
    ]
    if given:
        takes = ", ".join(f"--{o}" for o in OPTIONS[args.task]) or "no options"
        raise CLIError(
            f"eakd demo --task {args.task} does not use "
            f"{', '.join('--' + g for g in given)} (it takes {takes})"
        )
    for name in ("seeds", "workers"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise CLIError(f"--{name} must be >= 1, got {value}")


def run(args: argparse.Namespace) -> int:
    _check_options(args)
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
