"""``eakd detect``: train and evaluate Faster R-CNN FPN detectors with RoI-level EA-KD.

    eakd detect train CONFIG [key=value ...] [--resume | --overwrite | --extend]
    eakd detect eval CONFIG [key=value ...] [--checkpoint PATH]
    eakd detect make-shapes OUT_DIR [--train N --val N --image-size PX --seed S]

Multi-process: ``torchrun --nproc_per_node N -m eakd.cli detect train CONFIG``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect",
        help="object detection: Faster R-CNN FPN with RoI-level (EA-)KD",
        description="Train and evaluate Faster R-CNN FPN detectors on COCO-format data, with "
        "KD/DKD on the RoI classification logits and EA weights per RoI.",
    )
    sub = p.add_subparsers(dest="detect_command", metavar="ACTION")

    t = sub.add_parser("train", help="train a detector (plain, or distilled from a teacher)")
    t.add_argument("config", help="a YAML config, e.g. configs/coco/ea_kd/r101_r18.yaml")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides (optim.lr=0.02)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the stopped run in OUTPUT_DIR/NAME from its checkpoints/last.pt",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run in OUTPUT_DIR/NAME (eakd's files only) instead of refusing",
    )
    t.add_argument(
        "--extend",
        action="store_true",
        help="continue a finished run to a larger optim.max_iters (its results are kept)",
    )
    t.set_defaults(handler=_train)

    e = sub.add_parser("eval", help="COCO mAP of a trained detector on data.val_*")
    e.add_argument("config")
    e.add_argument("overrides", nargs="*")
    e.add_argument(
        "--checkpoint",
        help="weights to evaluate (default: OUTPUT_DIR/NAME/checkpoints/final.pt, then last.pt)",
    )
    e.set_defaults(handler=_eval)

    g = sub.add_parser(
        "make-shapes", help="write the generated shapes dataset (COCO format) to a folder"
    )
    g.add_argument("out", help="output folder")
    g.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    g.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    g.add_argument("--image-size", type=int, default=128, help="image side in pixels")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--no-fashion-mnist",
        action="store_true",
        help="shapes only, even when /usr/share/datasets/fashion-mnist exists",
    )
    g.set_defaults(handler=_make_shapes)
    p.set_defaults(handler=lambda args: _help(p))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..engines.detection import load_detection_config, train

    cfg = load_detection_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite, extend=args.extend)
    from .main import is_main_process

    if not is_main_process():
        return 0
    if result["metrics"] is not None:
        print(_table(result["metrics"]))
    print(f"outputs in {result['run_dir']} (final weights: {result['model']})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..engines.detection import evaluate, load_detection_config

    cfg = load_detection_config(args.config, args.overrides)
    metrics = evaluate(cfg, args.checkpoint)
    from .main import is_main_process

    if is_main_process():
        print(_table(metrics))
    return 0


def _make_shapes(args: argparse.Namespace) -> int:
    from ..engines.detection import make_shapes_dataset

    fashion = False if args.no_fashion_mnist else None
    paths = make_shapes_dataset(
        args.out, args.train, args.val, args.image_size, fashion_mnist=fashion, seed=args.seed
    )
    for key, value in paths.items():
        print(f"{key}: {value}")
    return 0


def _table(metrics: dict[str, float]) -> str:
    head = "| " + " | ".join(metrics) + " |"
    rule = "|" + "---|" * len(metrics)
    row = "| " + " | ".join(f"{v:.2f}" for v in metrics.values()) + " |"
    return "\n".join((head, rule, row))
