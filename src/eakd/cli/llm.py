"""``eakd llm train | eval``: distillation of causal LMs with Hugging Face transformers."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "llm",
        help="distil causal language models (transformers)",
        description="LLM distillation: train a student from a config, or evaluate Rouge-L.",
    )
    sub = p.add_subparsers(dest="llm_command", metavar="{train,eval}", required=True)
    t = sub.add_parser("train", help="train a student (SFT, KD variants, EA-KD) from a config")
    t.add_argument("config", help="YAML config (see configs/llm/)")
    t.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. ea.enabled=true train.lr=1e-4"
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in <output_dir>/<name> from its checkpoints/last",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run in <output_dir>/<name> (eakd's files only)",
    )
    t.add_argument(
        "--extend",
        action="store_true",
        help="continue a finished run to a longer constant schedule (its results are kept)",
    )
    t.add_argument("--quiet", action="store_true", help="print nothing while training")
    t.set_defaults(handler=_train)
    e = sub.add_parser("eval", help="Rouge-L over seeds on the config's eval.datasets")
    e.add_argument("config", help="YAML config (see configs/llm/)")
    e.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.seeds=[10]")
    e.add_argument(
        "--checkpoint",
        default=None,
        help="model folder (default: the run's best, else final, in <output_dir>/<name>)",
    )
    e.set_defaults(handler=_eval)


def _train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..engines.llm import train

    result = train(
        load_config(args.config, args.overrides),
        resume=args.resume,
        quiet=args.quiet,
        overwrite=args.overwrite,
        extend=args.extend,
    )
    best = result["best"]
    extra = (
        f"; best validation Rouge-L {best['rouge_l']:.2f} at step {best['step']}" if best else ""
    )
    from .main import is_main_process

    if is_main_process():
        print(f"trained {result['steps']} steps; final model in {result['final']}{extra}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..engines.llm import evaluate

    evaluate(load_config(args.config, args.overrides), checkpoint=args.checkpoint)
    return 0
