"""``eakd train | eval | sweep | list``: classification experiments."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]

CONFIG_ROOT = Path(__file__).resolve().parents[3] / "configs"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a classification experiment from a config")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.1 ea.enabled=true"
    )
    p.add_argument("--resume", action="store_true", help="continue the stopped run of this config")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run of this config (eakd's files only) instead of refusing",
    )
    p.add_argument(
        "--extend",
        action="store_true",
        help="continue a finished run to a longer train.epochs (multistep/constant schedules; "
        "its results are kept as results.epochNNNN.json)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(handler=_train)

    p = subparsers.add_parser("eval", help="evaluate a checkpoint on a dataset")
    p.add_argument("checkpoint", help="a checkpoint written by eakd train, or any {'model': sd}")
    p.add_argument(
        "--data",
        default=None,
        help="dataset name (see eakd list); default: the run's, with its root and options",
    )
    p.add_argument("--root", default=None, help="dataset folder")
    p.add_argument("--model", default=None, help="architecture (read from eakd checkpoints)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, e.g. num_samples=4000",
    )
    p.set_defaults(handler=_eval)

    p = subparsers.add_parser("sweep", help="several seeds and variants; writes a results table")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="variants; method=kd,ea_kd toggles EA, other keys are config paths",
    )
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(handler=_sweep)

    p = subparsers.add_parser("list", help="list losses, models, datasets and shipped configs")
    p.add_argument("what", nargs="?", choices=("losses", "models", "datasets", "configs"))
    p.set_defaults(handler=_list)


def _train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..engines.classification import train

    results = train(
        load_config(args.config, args.overrides),
        resume=args.resume,
        quiet=args.quiet,
        overwrite=args.overwrite,
        extend=args.extend,
    )
    from .main import is_main_process

    if results.get("best_top1") is not None and is_main_process():
        print(
            f"{results['name']}: best top-1 {results['best_top1']:.2f}% (epoch "
            f"{results['best_epoch']}), last {results['last_top1']:.2f}%"
        )
    return 0


def _checkpoint_record(path: Path) -> dict:
    """What a checkpoint records besides its weights (eakd's: ``arch`` and the run's
    ``config``). A legacy file that pickles other Python objects (numpy scalars, argparse
    namespaces) records nothing here; :func:`eakd.models.load_checkpoint` reads it (and warns)."""
    from ..engines.run import CheckpointError, load_state

    try:
        record = load_state(path)
    except CheckpointError as exc:
        if not any(s in str(exc.__cause__) for s in ("Unsupported global", "Unsupported class")):
            raise
        return {}
    return record if isinstance(record, dict) else {}


def _eval(args: argparse.Namespace) -> int:
    from ..config import from_dict, parse_override
    from ..data import build_dataset, build_loader
    from ..engines.classification import evaluate
    from ..engines.utils import resolve_device
    from ..models import InputAdapter, InputSpec, build_model, load_checkpoint

    path = Path(args.checkpoint)
    meta = _checkpoint_record(path)
    arch = args.model or meta.get("arch")
    if not arch:
        raise ValueError(f"{path} does not record its architecture; pass --model NAME")
    # an eakd checkpoint records its run's config: its model kwargs, and its dataset (name,
    # root, options) as the default, so the test split is the one the run was scored on
    run = meta.get("config") or {}
    run_data = run.get("data") or {}
    name = args.data or run_data.get("name")
    if not name:
        raise ValueError(f"{path} does not record its dataset; pass --data NAME")
    same = name == run_data.get("name")
    options = dict(run_data.get("options") or {}) if same else {}
    for item in args.option:
        keys, value = parse_override(item)
        options[".".join(keys)] = value
    root = args.root if args.root is not None else (run_data.get("root") if same else None)
    ds = build_dataset(name, root, "test", **options)
    student = run.get("student") or {}
    kwargs = (student.get("kwargs") or {}) if student.get("name") == arch else {}
    model = build_model(arch, num_classes=ds.info.num_classes, **kwargs)
    if student.get("input") and student.get("name") == arch:  # the run's own input adapter
        spec = from_dict(InputSpec, dict(student["input"]), "student.input")
        model = InputAdapter.from_spec(model, spec, ds.info.mean, ds.info.std)
    load_checkpoint(model, path)
    device = resolve_device(args.device)
    res = evaluate(model.to(device), build_loader(ds, args.batch_size, False), device)
    print(
        f"{arch} on {name} ({res['count']} samples): top-1 {res['top1']:.2f}%, "
        f"top-5 {res['top5']:.2f}%, loss {res['loss']:.4f}"
    )
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..engines.classification import format_table, run_sweep

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    base = load_config(args.config, args.overrides)
    rows, out = run_sweep(base, range(args.seeds), args.grid, quiet=not args.verbose)
    print(format_table(rows))
    print(f"\nwritten: {out / 'sweep.md'} and {out / 'sweep.csv'}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from ..losses import list_losses

    sections = {}
    if args.what in (None, "losses"):
        sections["losses"] = list_losses()
    if args.what in (None, "models"):
        from ..models import list_models

        sections["models"] = list_models()
    if args.what in (None, "datasets"):
        from ..data import list_datasets

        sections["datasets"] = list_datasets()
    if args.what in (None, "configs"):
        root = CONFIG_ROOT
        sections["configs"] = (
            sorted(str(p.relative_to(root.parent)) for p in root.rglob("*.yaml"))
            if root.is_dir()
            else []
        )
    for title, names in sections.items():
        print(f"{title} ({len(names)}):")
        for n in names:
            print(f"  {n}")
    return 0
