"""``eakd`` command line: one sub-command module per task, each with ``register(subparsers)``.

Heavy imports (torchvision, transformers, matplotlib) happen inside the command handlers, so
``eakd --help`` and ``eakd list`` stay fast.

Every command runs inside one error handler (:func:`main`). An expected failure prints one line,
``eakd: error: <what went wrong, where, the fix>``, on stderr and sets the exit status:

* 2, the command could not run as asked: a bad config key or value, a bad argument
  (``ConfigError``, ``ValueError``, ``TypeError``, :class:`CLIError`), a missing file or
  dataset (``FileNotFoundError``), an existing run without ``--resume`` (``RunExists``), a
  missing or corrupt checkpoint (``CheckpointError``), a missing optional extra (``ImportError``);
* 1, the run started and failed: a non-finite loss (``NonFiniteLoss``);
* 130, interrupted (Ctrl-C): where the run stopped, its last checkpoint and the command that
  resumes it.

``key=value`` overrides may come before or after the options.

The run module's errors are caught through their built-in bases (``RunExists`` is a
``FileExistsError``, ``CheckpointError`` a ``ValueError``, ``NonFiniteLoss`` a
``FloatingPointError``), so this module imports neither torch nor the engines. Anything else
is a bug and keeps its traceback; ``--debug`` (before or after the command) or ``EAKD_DEBUG=1``
shows the traceback of the expected failures too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from collections.abc import Sequence

#: Modules under ``eakd.cli`` that add sub-commands. A module that is not present (a task not
#: built in this checkout) is skipped.
COMMAND_MODULES = ("demo", "classification", "llm", "detection", "analysis")

#: Exception types that mean "the command could not run as asked" (exit status 2); a
#: checkpoint path that is a folder raises ``IsADirectoryError``.
BAD_INPUT = (ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError)

#: Optional extras (pyproject.toml) -> the import names of the packages they install.
EXTRAS = {
    "vision": ("torchvision", "yaml", "tqdm", "numpy", "PIL", "mnist1d", "tensorboard"),
    "detection": ("torchvision", "pycocotools", "yaml", "tqdm", "numpy", "PIL"),
    "llm": ("transformers", "accelerate", "gguf", "rouge_score", "peft", "yaml", "tqdm", "numpy"),
    "analysis": ("matplotlib", "sklearn", "numpy", "yaml"),
}
#: The extra a command needs, preferred when several extras provide a missing package.
COMMAND_EXTRAS = {"detect": "detection", "llm": "llm", "analyze": "analysis", "ablate": "analysis"}


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def is_main_process() -> bool:
    """Whether this process prints a command's summary: not a worker of ``torchrun`` /
    ``accelerate launch`` other than rank 0 (each would print it again)."""
    return os.environ.get("RANK", "0") == "0"


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="eakd",
        description="Entropy-based Adaptive Knowledge Distillation (EA-KD, ICCV 2025).",
    )
    parser.add_argument("--version", action="version", version=f"eakd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        module.register(subparsers)
    _add_debug(parser, default=False, seen=set())
    return parser


def _add_debug(parser: argparse.ArgumentParser, default: object, seen: set[int]) -> None:
    """``--debug`` on the top-level parser and every sub-command (``eakd train c.yaml --debug``).

    Sub-commands leave the value unset unless given (``SUPPRESS``), so a ``--debug`` before the
    command is not reset by the sub-command's default.
    """
    if id(parser) in seen:  # an alias shares its parser
        return
    seen.add(id(parser))
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the full traceback of an error (or set EAKD_DEBUG=1)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_debug(sub, argparse.SUPPRESS, seen)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` overrides may also follow the options
    (``eakd train c.yaml --resume name=x``)."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all(_is_override(e) for e in extra):
        args.overrides = [*args.overrides, *extra]
        return args
    return parser.parse_args(argv)  # the usual usage error for anything else


def _is_override(arg: str) -> bool:
    key, eq, _ = arg.partition("=")
    return bool(eq) and bool(key) and not arg.startswith("-")


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    # torch warns on import when numpy is absent (a core-only install): eakd needs numpy only
    # where an extra installs it, and says so then
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(parser, argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get("EAKD_DEBUG", "") not in ("", "0")
    ok = False
    try:
        status = int(args.handler(args) or 0)
        ok = True
        return status
    except KeyboardInterrupt as exc:
        if debug:
            raise
        message = _message(exc) or "interrupted"
        if getattr(exc, "resumable", False):
            again = [a for a in argv if a not in ("--resume", "--overwrite", "--extend")]
            message += f"; resume with: eakd {shlex.join(again)} --resume"
        return _fail(message, 130)
    except (CLIError, *BAD_INPUT) as exc:
        if debug:
            raise
        return _fail(_message(exc), 2)
    except FloatingPointError as exc:
        if debug:
            raise
        return _fail(_message(exc), 1)
    except ImportError as exc:
        hint = _missing_extra(exc, args.command)
        if debug or hint is None:
            raise
        return _fail(hint, 2)
    finally:
        _close_process_group(wait=ok)


def _fail(message: str, status: int) -> int:
    print(f"eakd: error: {message}", file=sys.stderr)
    return status


def _message(exc: BaseException) -> str:
    """The exception's message on one line (an ``OSError`` from ``open``: reason and path)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _missing_extra(exc: ImportError, command: str) -> str | None:
    """The message for an optional package that is not installed, naming the extra to install;
    ``None`` for an ImportError that is not about a missing optional package (a bug)."""
    message = _message(exc)
    if "pip install" in message:
        return message
    package = (exc.name or "").partition(".")[0]
    extras = [extra for extra, packages in EXTRAS.items() if package in packages]
    if not isinstance(exc, ModuleNotFoundError) or not extras:
        return None
    extra = COMMAND_EXTRAS.get(command)
    extra = extra if extra in extras else extras[0]
    return f"{message}; install the {extra} extra: pip install 'eakd[{extra}]'"


def _close_process_group(wait: bool) -> None:
    """A command run under torchrun joins a process group; leave it before the interpreter
    exits (only when torch is already loaded, so ``eakd --help`` stays light)."""
    if "torch" not in sys.modules:
        return
    from ..engines.utils import teardown_distributed

    teardown_distributed(wait=wait)
