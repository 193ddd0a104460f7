"""``eakd analyze`` (figures and a report for finished runs) and ``eakd ablate`` (the paper's
ablation tables as sweeps)."""

from __future__ import annotations

import argparse

__all__ = ["register"]

_ANALYZE_HELP = """\
PATH is a run directory (eakd train), a sweep directory (eakd sweep: <variant>/seed<k>/), or
any folder holding runs, e.g. the demo's output. Give a KD and an EA-KD run (or a sweep with
both) to compare them; runs of one sweep variant are grouped under one label. The figures read
classification runs; detection and LLM runs are listed in the report with what they lack.

figures (--figures, default: all that the runs support):
  loss_share     loss share by teacher-entropy quartile over epochs (Fig. 5)
  segments       teacher vs student accuracy by entropy segment (Figs. 2a, B1a)
  entropy_boxes  H_S vs H_T of the top-10% high-H_T test samples over epochs (Fig. 3)
  tsne           t-SNE of pooled features, high-entropy samples, CH index (Figs. 2b, 6, B3)
  time           time per training step vs accuracy, with and without EA (Fig. 1)
  sensitivity    accuracy across a swept hyper-parameter, with and without EA (Fig. 8)
  landscape      loss landscapes on a 2-D slice and Area@level (Figs. 7, B2)

Runs trained with log.save_epochs (e.g. [40, 120, 240]) kept a snapshot of the student at those
epochs (checkpoints/epochNNNN.pt); then landscape and tsne are followed by:
  landscape_epochs  the students' loss landscapes at each saved epoch (Figs. 7, B2)
  area_epochs       Area@level over the saved epochs, and the teacher's minus it
                    (Figs. 7, B2, lower right)
  tsne_epochs       t-SNE of the students at each saved epoch (Fig. B1b)

examples:
  eakd analyze runs/demo
  eakd analyze runs/kd runs/ea_kd --teacher teacher.pt --out figures
  eakd analyze runs/dkd_beta --figures sensitivity --param method.loss.beta
  eakd analyze runs/kd runs/ea_kd --figures landscape_epochs,area_epochs,tsne_epochs
  eakd analyze runs/ea_kd --checkpoint 120
"""

_ABLATE_HELP = """\
Runs EA-KD's ablations of CONFIG's distillation method as sweeps and prints them in the paper's
layout: Table 1 (w = H_T or H_S, and H_ub - w), Table 9 (w_base, w_interact, w_EA) and
Table 8 (T' in 2, 3, 4). Runs go to <output_dir>/<name>-ablation/; finished runs are reused.

example:
  eakd ablate configs/cifar100/kd/resnet32x4_resnet8x4.yaml --seeds 3
"""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="figures and a Markdown report for finished runs (paper Sec. 4.3, App. B)",
        description="Write EA-KD's analysis figures (PNG) and report.md for classification runs.",
        epilog=_ANALYZE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="run, sweep or demo directories")
    p.add_argument("--teacher", help="teacher checkpoint (default: the runs' teacher.checkpoint)")
    p.add_argument("--out", help="output folder (default: <first PATH>/analysis)")
    p.add_argument(
        "--figures",
        type=_csv,
        default=None,
        metavar="NAME,...",
        help="comma-separated figure names (see below); asked-for figures must be drawable",
    )
    p.add_argument(
        "--checkpoint",
        default="last",
        metavar="WHICH",
        help="student weights for the forward passes: last, best, or the epoch of a snapshot "
        "(log.save_epochs), e.g. 120 or epoch0120 (default: last)",
    )
    p.add_argument(
        "--param",
        default=None,
        help="swept config key of the sensitivity figure (default: method.loss.beta, else the "
        "one numeric key that varies)",
    )
    p.add_argument("--metric", choices=("best", "last"), default="best", help="top-1 to plot")
    p.add_argument("--segments", type=int, default=5, help="entropy segments (default: 5)")
    p.add_argument(
        "--top-fraction", type=float, default=0.1, help="highlighted share (default: 0.1)"
    )
    p.add_argument("--tsne-points", type=int, default=1000, help="t-SNE samples (default: 1000)")
    p.add_argument(
        "--tsne-classes", type=int, default=10, help="classes shown in t-SNE (default: 10)"
    )
    p.add_argument(
        "--landscape-grid", type=int, default=21, help="grid points per axis (default: 21)"
    )
    p.add_argument(
        "--landscape-range", type=float, default=1.0, help="half-width of the slice (default: 1)"
    )
    p.add_argument(
        "--landscape-samples",
        type=int,
        default=512,
        help="training samples for the landscape loss (default: 512)",
    )
    p.add_argument(
        "--level",
        type=float,
        default=None,
        help="loss level of Area@level (default: 1.6 / log 100 * log C)",
    )
    p.add_argument(
        "--max-epochs",
        type=int,
        default=8,
        help="most epochs in the box plots, tables and per-epoch figures (default: 8)",
    )
    p.add_argument("--device", default="auto", help="device for forward passes (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of t-SNE, subsets and directions")
    p.set_defaults(handler=_analyze)

    p = subparsers.add_parser(
        "ablate",
        help="run the paper's ablations (Tables 1, 8, 9) as sweeps",
        description="EA-KD's weight-kind and T' ablations for a config.",
        epilog=_ABLATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config of a distillation run (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=10")
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant (default: 3)")
    p.add_argument(
        "--kinds",
        type=_csv,
        default=None,
        metavar="KIND,...",
        help="weight kinds, empty for none (default: none,base,student,interact,ea,"
        "inverse_teacher,inverse_student)",
    )
    p.add_argument(
        "--temperatures",
        type=lambda s: [float(t) for t in _csv(s)],
        default=None,
        metavar="T,...",
        help="values of T', empty for none (default: 2,3,4)",
    )
    p.add_argument("--metric", choices=("best", "last"), default="best", help="top-1 to report")
    p.add_argument("--verbose", action="store_true", help="a line per finished run")
    p.set_defaults(handler=_ablate)


def _analyze(args: argparse.Namespace) -> int:
    from ..analysis import AnalysisOptions, analyze

    opts = AnalysisOptions(
        teacher=args.teacher,
        checkpoint=args.checkpoint,
        segments=args.segments,
        top_fraction=args.top_fraction,
        tsne_points=args.tsne_points,
        tsne_classes=args.tsne_classes,
        param=args.param,
        metric=args.metric,
        landscape_grid=args.landscape_grid,
        landscape_range=args.landscape_range,
        landscape_samples=args.landscape_samples,
        landscape_level=args.level,
        max_epochs=args.max_epochs,
        device=args.device,
        seed=args.seed,
    )
    report = analyze(args.paths, args.out, args.figures, opts, progress=print)
    drawn = sum(f.path is not None for f in report.figures)
    print(f"{drawn} figure(s) and {report.report} in {report.out_dir}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from ..analysis import ABLATION_KINDS, ABLATION_TEMPERATURES, run_ablation
    from ..config import load_config

    kinds = ABLATION_KINDS if args.kinds is None else args.kinds
    temperatures = ABLATION_TEMPERATURES if args.temperatures is None else args.temperatures
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if not kinds and not temperatures:
        raise ValueError("nothing to run: --kinds and --temperatures are both empty")
    base = load_config(args.config, args.overrides)
    res = run_ablation(
        base,
        range(args.seeds),
        kinds,
        temperatures,
        metric=args.metric,
        quiet=not args.verbose,
    )
    print(res.markdown())
    print(f"written: {res.root / 'ablation.md'}")
    return 0
