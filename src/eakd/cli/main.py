"""``eakd`` command line: one sub-command module per task, each with ``register(subparsers)``.

Heavy imports (torchvision, transformers, matplotlib) happen inside the command handlers, so
``eakd --help`` and ``eakd list`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules under ``eakd.cli`` that add sub-commands. A module that is not present (a task not
#: built in this checkout) is skipped.
COMMAND_MODULES = ("demo", "classification", "llm", "detection", "analysis")


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="eakd",
        description="Entropy-based Adaptive Knowledge Distillation (EA-KD, ICCV 2025).",
    )
    parser.add_argument("--version", action="version", version=f"eakd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    ok = False
    try:
        status = int(args.handler(args) or 0)
        ok = True
        return status
    except (CLIError, FileNotFoundError, FileExistsError, ValueError, TypeError) as exc:
        if args.debug:
            raise
        print(f"eakd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        _close_process_group(wait=ok)


def _close_process_group(wait: bool) -> None:
    """A command run under torchrun joins a process group; leave it before the interpreter
    exits (only when torch is already loaded, so ``eakd --help`` stays light)."""
    if "torch" not in sys.modules:
        return
    from ..engines.utils import teardown_distributed

    teardown_distributed(wait=wait)
