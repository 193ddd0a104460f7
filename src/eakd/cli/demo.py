"""``eakd demo``: the offline demonstrations."""

from __future__ import annotations

import argparse

TASKS = ("core", "classification", "llm", "detection")
TRAINERS = ("eakd", "trl")


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
    p.add_argument(
        "--trainer",
        choices=TRAINERS,
        default=None,
        help="LLM demo: eakd's own loop (SFT vs KD vs EA-KD, the default) or a few on-policy "
        "EA-KD steps through TRL's DistillationTrainer (needs pip install 'eakd[trl]')",
    )
    p.add_argument("--seeds", type=int, default=None, help="student seeds (default: 3)")
    p.add_argument("--workers", type=int, default=None, help="runs trained at once (cores)")
    p.add_argument(
        "--output",
        default=None,
        help="output folder (default: runs/demo/...; a temporary one for --trainer trl)",
    )
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
    "llm": ("trainer",),
}
#: The LLM demo's further options per ``--trainer``.
LLM_TRAINER_OPTIONS = {"eakd": (), "trl": ("output",)}
_ALL_OPTIONS = ("dataset", "trainer", "seeds", "workers", "output", "fresh")


def _takes(args: argparse.Namespace) -> tuple[str, tuple[str, ...]]:
    """The demo as the user named it and the options it reads."""
    if args.task != "llm":
        return f"--task {args.task}", OPTIONS[args.task]
    trainer = args.trainer or "eakd"
    return f"--task llm --trainer {trainer}", OPTIONS["llm"] + LLM_TRAINER_OPTIONS[trainer]


def _check_options(args: argparse.Namespace) -> None:
    from .main import CLIError

    demo, takes = _takes(args)
    given = [
        name
        for name in _ALL_OPTIONS
        if getattr(args, name, None) not in (None, False) and name not in takes
    ]
    if given:
        takes_text = ", ".join(f"--{o}" for o in takes) or "no options"
        if args.task == "llm":  # an option of the other LLM trainer names it
            takes_text += "".join(
                f"; --{g} is read with --trainer {t}"
                for g in given
                for t, opts in LLM_TRAINER_OPTIONS.items()
                if g in opts
            )
        raise CLIError(
            f"eakd demo {demo} does not use "
            f"{', '.join('--' + g for g in given)} (it takes {takes_text})"
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
    if args.task == "llm" and args.trainer == "trl":
        from ..demos.llm_trl import run_demo
    elif args.task == "llm":
        from ..demos.llm import run_demo
    elif args.task == "detection":
        from ..demos.detection import run_demo
    else:
        from ..demos.classification import run_demo
    return run_demo(args)
