"""``analyze(paths)``: every figure of EA-KD's Section 4.3 / Appendix B for a set of runs, and a
Markdown report with the numbers behind each figure.

Runs are found below the given paths (run directories, ``eakd sweep`` outputs, the demo's
output). Runs of one sweep variant (``<variant>/seed<k>``) form a group shown under one label;
figures that show one model per method use each group's lowest seed, figures built from logs
(loss shares, time, sensitivity) pool or average all seeds. Runs that kept per-epoch snapshots
(``log.save_epochs``) also get the loss landscape, its Area@level and the t-SNE at each saved
epoch (:data:`EPOCH_FIGURES`, drawn with ``landscape`` and ``tsne``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_open
from ..core import DEFAULT_ENTROPY_TEMPERATURE
from ..engines.classification.train import snapshot_name
from .forward import Outputs, build_student, collect_outputs, data_key, find_teacher, split_loader
from .metrics import (
    accuracy_by_segment,
    area_below,
    calinski_harabasz,
    entropy_segments,
    quantile_loss_shares,
    quantile_share_uncertainty,
    top_fraction,
)
from .runs import LAYOUT, Group, Run, find_runs, group_runs, lookup

__all__ = [
    "EPOCH_FIGURES",
    "FIGURES",
    "AnalysisOptions",
    "AnalysisReport",
    "FigureResult",
    "analyze",
    "write_demo_figures",
]

#: Figure name -> (file name, what it shows). ``--figures`` takes these names.
FIGURES: dict[str, tuple[str, str]] = {
    "loss_share": ("loss_share.png", "loss share by teacher-entropy quartile over epochs (Fig. 5)"),
    "segments": ("entropy_segments.png", "accuracy by entropy segment (Figs. 2a, B1a)"),
    "entropy_boxes": ("entropy_boxes.png", "H_S vs H_T of the top-10 % H_T samples (Fig. 3)"),
    "tsne": ("tsne.png", "t-SNE of pooled features, high-entropy samples, CH index (Figs. 6, B3)"),
    "time": ("time_vs_accuracy.png", "training time per batch vs accuracy (Fig. 1)"),
    "sensitivity": ("sensitivity.png", "accuracy across a swept hyper-parameter (Fig. 8)"),
    "landscape": ("landscape.png", "loss landscapes on a 2-D slice, Area@level (Figs. 7, B2)"),
}

#: The figures of the runs' per-epoch snapshots (``log.save_epochs``), each drawn after the
#: figure it follows (``landscape``, ``tsne``) when a run has snapshots; ``--figures`` takes
#: their names too (then a run without snapshots is an error, or a skip in the report).
EPOCH_FIGURES: dict[str, tuple[str, str]] = {
    "landscape_epochs": (
        "landscape_epochs.png",
        "loss landscapes of the students at their saved epochs (Figs. 7, B2)",
    ),
    "area_epochs": (
        "area_epochs.png",
        "Area@level of the students' landscapes over epochs, and the teacher's minus it "
        "(Figs. 7, B2, lower right)",
    ),
    "tsne_epochs": (
        "tsne_epochs.png",
        "t-SNE of the students' pooled features at their saved epochs (Fig. B1b)",
    ),
}

#: Figure -> the per-epoch figures drawn after it when a run has snapshots.
_FOLLOWERS = {"landscape": ("landscape_epochs", "area_epochs"), "tsne": ("tsne_epochs",)}

_ALL_FIGURES = {**FIGURES, **EPOCH_FIGURES}

#: EA-KD's Area@1.6 on CIFAR-100 as a fraction of the chance-level loss log(100).
PAPER_LEVEL_FRACTION = 1.6 / math.log(100.0)


@dataclass
class AnalysisOptions:
    """Settings of :func:`analyze` (the ``eakd analyze`` flags of the same names).

    Attributes:
        teacher: teacher checkpoint (default: the runs' ``teacher.checkpoint``).
        checkpoint: which student weights the forward passes use: ``last``, ``best`` or a
            snapshot of ``log.save_epochs`` by its epoch (``40``, ``"epoch0040"``; stored as
            ``"epoch0040"``). The per-epoch figures use every snapshot whatever this is.
        parts: entropy quantiles of the loss-share figure (4: quartiles, as in the paper).
        segments: equal-count entropy segments of the accuracy figure.
        top_fraction: share of samples highlighted in the box and t-SNE figures (0.1).
        tsne_points, tsne_classes: at most this many test samples of the first classes.
        param: hyper-parameter of the sensitivity figure (dotted config key); ``None`` takes
            ``method.loss.beta`` if it varies, else the one numeric key that varies.
        metric: ``best`` or ``last`` top-1 for the time and sensitivity figures.
        landscape_grid, landscape_range: grid points per axis over ``[-range, range]``.
        landscape_samples: training samples (test-time transform) the landscape loss uses.
        landscape_level: level of Area@level; ``None``: EA-KD's 1.6 scaled to ``log C``
            (``1.6 / log 100 * log C``), or the pooled 25th percentile if no surface reaches it.
        max_epochs: most epochs shown in the box plots, the report tables and the per-epoch
            figures (evenly spread snapshots, the first and the last included).
        device: where forward passes run (``auto``: CUDA, then MPS, then CPU).
        seed: seeds the t-SNE, the sample subsets and the landscape directions.
    """

    teacher: str | None = None
    checkpoint: str | int = "last"
    parts: int = 4
    segments: int = 5
    top_fraction: float = 0.1
    tsne_points: int = 1000
    tsne_classes: int = 10
    param: str | None = None
    metric: str = "best"
    landscape_grid: int = 21
    landscape_range: float = 1.0
    landscape_samples: int = 512
    landscape_level: float | None = None
    max_epochs: int = 8
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        self.checkpoint = checkpoint_name(self.checkpoint)
        if self.metric not in ("last", "best"):
            raise ValueError(f"metric must be 'last' or 'best', got {self.metric!r}")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        for name in ("parts", "segments", "tsne_classes", "max_epochs", "landscape_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tsne_points < 10:
            raise ValueError(f"tsne_points must be >= 10, got {self.tsne_points}")
        if self.landscape_grid < 2 or self.landscape_range <= 0:
            raise ValueError("landscape_grid must be >= 2 and landscape_range > 0")


def checkpoint_name(which: str | int) -> str:
    """``last``, ``best``, or the checkpoint name of a snapshot from its epoch: ``40``,
    ``"40"``, ``"epoch40"`` and ``"epoch0040"`` all give ``"epoch0040"``."""
    epoch = None
    if isinstance(which, int) and not isinstance(which, bool):
        epoch = which
    elif isinstance(which, str):
        if which in ("last", "best"):
            return which
        m = re.fullmatch(r"(?:epoch)?(\d+)", which.strip())
        epoch = int(m[1]) if m is not None else None
    if epoch is None or epoch < 1:
        raise ValueError(
            "checkpoint must be 'last', 'best' or the epoch of a snapshot (log.save_epochs), "
            f"e.g. 40 or epoch0040; got {which!r}"
        )
    return snapshot_name(epoch)


@dataclass
class FigureResult:
    """One figure: its file (``None`` when skipped), its report section, or why it was skipped.
    ``data`` holds the numbers of the per-epoch figures (see :data:`EPOCH_FIGURES`)."""

    name: str
    path: Path | None
    markdown: str = ""
    skipped: str | None = None
    data: dict[str, Any] | None = None


@dataclass
class AnalysisReport:
    out_dir: Path
    report: Path
    figures: list[FigureResult] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        """The written PNG files, then the report."""
        return [f.path for f in self.figures if f.path is not None] + [self.report]


class SkipFigure(Exception):
    """A figure cannot be drawn from these runs; the message says what it needs."""


# ----------------------------------------------------------------------------------------------
def analyze(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
    figures: Sequence[str] | None = None,
    options: AnalysisOptions | None = None,
    progress: Callable[[str], None] | None = None,
    strict: bool | None = None,
    **kwargs: Any,
) -> AnalysisReport:
    """Write the analysis figures and ``report.md`` for the runs found below ``paths``.

    Args:
        paths: run directories, sweep directories (``<variant>/seed<k>/``) or folders of them.
        out_dir: where the PNGs and ``report.md`` go (default: ``<paths[0]>/analysis``).
        figures: names from :data:`FIGURES` (default: all) or :data:`EPOCH_FIGURES`. A figure
            the runs cannot support (no parameter sweep, no teacher checkpoint, ...) is
            skipped with the reason in the report. ``landscape`` and ``tsne`` are followed by
            their per-epoch figures when a run kept snapshots (and by nothing otherwise).
        options: :class:`AnalysisOptions`; keyword arguments override its fields.
        progress: called with a line per figure (e.g. ``print``).
        strict: raise ``ValueError`` for a figure that cannot be drawn instead of skipping it;
            default: strict when ``figures`` names the figures.

    Returns:
        an :class:`AnalysisReport` (``.paths`` lists the written files).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("analyze needs at least one run or sweep directory")
    valid = {f.name for f in fields(AnalysisOptions)}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; valid options: {sorted(valid)}")
    base = options or AnalysisOptions()
    opts = AnalysisOptions(**{**{k: getattr(base, k) for k in valid}, **kwargs})
    explicit = figures is not None if strict is None else strict
    names = list(FIGURES) if figures is None else list(dict.fromkeys(figures))
    bad = [n for n in names if n not in _ALL_FIGURES]
    if bad:
        raise ValueError(f"unknown figure(s) {bad}; choose from {', '.join(_ALL_FIGURES)}")
    plan = []  # (figure, drawn only when a run has snapshots)
    for n in names:
        plan.append((n, False))
        plan += [(f, True) for f in _FOLLOWERS.get(n, ()) if f not in names]

    from .plots import require_matplotlib

    require_matplotlib()  # before any work: every figure needs it
    runs = _without_teachers(find_runs(list(paths)), opts.teacher)
    out = Path(out_dir) if out_dir is not None else Path(paths[0]) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    ctx = _Context(runs, opts, out)
    say = progress or (lambda _msg: None)
    results = []
    for name, needs_snapshots in plan:
        if needs_snapshots and not ctx.snapshot_groups(ctx.students()):
            continue
        file_name, what = _ALL_FIGURES[name]
        try:
            if not ctx.groups:
                raise SkipFigure(
                    "the figures read what classification runs record; these runs are "
                    + ", ".join(sorted({r.engine for r in ctx.others}))
                )
            path, markdown, *data = _DRAW[name](ctx, out / file_name)
            results.append(FigureResult(name, path, markdown, data=data[0] if data else None))
            say(f"wrote {path} ({what})")
        except SkipFigure as exc:
            if explicit:
                raise ValueError(f"cannot draw {name}: {exc}") from None
            results.append(FigureResult(name, None, skipped=str(exc)))
            say(f"skipped {name}: {exc}")
    report = out / "report.md"
    with atomic_open(report) as fh:
        fh.write(_report(ctx, results).encode())
    say(f"wrote {report}")
    return AnalysisReport(out, report, results)


def write_demo_figures(
    sweep_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    teacher: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> list[Path]:
    """Every figure that the demo's runs support, and ``report.md``; returns the written files.

    ``sweep_dir`` is a ``run_sweep`` output (``<variant>/seed<k>/`` run directories, e.g. CE,
    KD and EA-KD students over several seeds) or any folder of runs; figures the runs cannot
    support (a hyper-parameter sweep, a teacher without a checkpoint) are skipped, with the
    reason in the report; a teacher's own run found there is left out. ``out_dir`` defaults to
    ``<sweep_dir>/analysis``; ``options`` are :class:`AnalysisOptions` fields (the demo uses a
    15 x 15 landscape on 256 samples unless told otherwise).
    """
    opts = AnalysisOptions(teacher=str(teacher) if teacher is not None else None)
    try:
        from .plots import require_matplotlib

        require_matplotlib()
    except ImportError as exc:  # the demo's numbers stand without the figures
        (progress or print)(f"no figures: {exc}")
        return []
    return analyze([sweep_dir], out_dir, None, opts, progress, **{**DEMO_OPTIONS, **options}).paths


def _without_teachers(runs: list[Run], teacher: str | None) -> list[Run]:
    """Drop the runs that trained the teacher (a demo folder holds the teacher's run too)."""
    ckpts = {Path(teacher).expanduser().resolve()} if teacher else set()
    for r in runs:
        path = lookup(r.config, "teacher.checkpoint") if r.method != "vanilla" else None
        if path:
            ckpts.add(Path(path).expanduser().resolve())
    students = [r for r in runs if r.dir.checkpoints.resolve() not in {c.parent for c in ckpts}]
    if not students:
        raise FileNotFoundError("the given folders hold only the teacher's run; add student runs")
    return students


DEMO_OPTIONS = {"landscape_grid": 15, "landscape_range": 0.5, "landscape_samples": 256}


# ----------------------------------------------------------------------------------------------
class _Context:
    """Runs, groups, colours and cached forward passes shared by the figures."""

    def __init__(self, runs: list[Run], opts: AnalysisOptions, out: Path) -> None:
        from ..engines.utils import resolve_device

        self.runs = [r for r in runs if r.engine == "classification"]
        self.others = [r for r in runs if r.engine != "classification"]  # listed, not drawn
        self.opts = opts
        self.out = out
        self.groups = group_runs(self.runs)
        self.device = resolve_device(opts.device)
        self.colors = _colors(self.groups)
        self._outputs: dict[tuple[str, str], Outputs] = {}
        self._surfaces: dict[tuple[str, str], np.ndarray] = {}
        self._batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._epoch_landscapes: _EpochLandscapes | None = None
        self._teacher: Any = None
        self._teacher_error: str | None = None
        distilled = [g for g in self.groups if g.method != "vanilla"]
        first = (distilled or self.groups)[:1]
        self.main = first[0].representative if first else None  # defines the test set
        self.key = data_key(self.main) if first else None
        self.temperature = (
            self.main.ea_settings.temperature if distilled else DEFAULT_ENTROPY_TEMPERATURE
        )

    # -- selections -----------------------------------------------------------------------
    def students(self, distilled_only: bool = False) -> list[Group]:
        """Groups evaluated on the main test set (one panel each)."""
        return [
            g
            for g in self.groups
            if data_key(g.representative) == self.key
            and (g.method != "vanilla" or not distilled_only)
        ]

    # -- models ---------------------------------------------------------------------------
    def teacher_model(self):
        """The teacher (rebuilt from its checkpoint), or ``None`` with the reason kept."""
        if self._teacher is None and self._teacher_error is None:
            try:
                spec = find_teacher(self.runs, self.opts.teacher)
                data_name = lookup(self.main.config, "data.name")
                self._teacher = spec.build(self.main.num_classes, data_name).to(self.device)
                self.teacher_source = f"{spec.name} from {spec.checkpoint} ({spec.source})"
            except (FileNotFoundError, ValueError) as exc:
                self._teacher_error = str(exc)
        return self._teacher

    def teacher_outputs(self) -> Outputs | None:
        model = self.teacher_model()
        if model is None:
            return None
        k = ("teacher", self.key)
        if k not in self._outputs:
            self._outputs[k] = collect_outputs(model, split_loader(self.main), self.device)
        return self._outputs[k]

    def student_outputs(self, run: Run, which: str | None = None) -> Outputs:
        """Test-set outputs of ``run``'s checkpoint ``which`` (default: ``--checkpoint``)."""
        k = (str(run.path), which or self.opts.checkpoint)
        if k not in self._outputs:
            model = build_student(run, k[1])
            self._outputs[k] = collect_outputs(model, split_loader(run), self.device)
        return self._outputs[k]

    def snapshot_groups(self, groups: list[Group]) -> list[tuple[Group, list[int]]]:
        """The groups whose representative kept snapshots, with the epochs shown (at most
        ``max_epochs``, evenly spread)."""
        out = []
        for g in groups:
            epochs = list(g.representative.snapshots())
            if epochs:
                out.append((g, _epochs_subset(epochs, self.opts.max_epochs)))
        return out

    # -- loss landscapes ------------------------------------------------------------------
    @property
    def landscape_xs(self) -> np.ndarray:
        r = self.opts.landscape_range
        return np.linspace(-r, r, self.opts.landscape_grid)

    def landscape_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._batches is None:
            self._batches = _landscape_batches(self)
        return self._batches

    def surface(self, key: tuple[str, str], build: Callable[[], Any]) -> np.ndarray:
        """The loss surface of the model ``build()`` on the landscape grid, cached by ``key``.
        Every model gets directions drawn from the same two seeds (``seed``, ``seed + 1``),
        filter-normalised to its own weights."""
        from .landscape import filter_normalized_direction, loss_surface

        if key not in self._surfaces:
            model = build()
            gen1 = torch.Generator().manual_seed(self.opts.seed)
            gen2 = torch.Generator().manual_seed(self.opts.seed + 1)
            dirs = (
                filter_normalized_direction(model, gen1),
                filter_normalized_direction(model, gen2),
            )
            self._surfaces[key] = loss_surface(
                model, self.landscape_batches(), dirs, self.landscape_xs
            )
        return self._surfaces[key]

    def teacher_surface(self) -> np.ndarray | None:
        teacher = self.teacher_model()
        return None if teacher is None else self.surface(("teacher", ""), lambda: teacher)

    def student_surface(self, run: Run, which: str) -> np.ndarray:
        return self.surface(
            (str(run.path), which), lambda: build_student(run, which).to(self.device)
        )

    def area_level(self, surfaces: Sequence[np.ndarray]) -> tuple[float, str]:
        """The level of Area@level and how it was chosen: ``landscape_level`` if given, else
        EA-KD's 1.6 scaled to ``log C``, else (no surface reaches that) the pooled 25th
        percentile of ``surfaces``."""
        log_c = math.log(self.main.num_classes)
        level, how = self.opts.landscape_level, "given"
        if level is None:
            level, how = PAPER_LEVEL_FRACTION * log_c, "EA-KD's 1.6 at log 100, scaled to log C"
            if all(s.min() >= level for s in surfaces):
                level = float(np.percentile(np.concatenate([s.ravel() for s in surfaces]), 25))
                how = "25th percentile of all surfaces (no surface reaches 1.6 / log 100 * log C)"
        return level, how

    def epoch_landscapes(self) -> _EpochLandscapes:
        """The surfaces of every shown snapshot (and the teacher's), with one Area level."""
        if self._epoch_landscapes is None:
            chosen = self.snapshot_groups(self.students(distilled_only=True))
            chosen = chosen or self.snapshot_groups(self.students())
            if not chosen:
                raise SkipFigure(_NO_SNAPSHOTS)
            by_group = [
                (g, {e: self.student_surface(g.representative, snapshot_name(e)) for e in epochs})
                for g, epochs in chosen
            ]
            teacher = self.teacher_surface()
            pooled = [s for _, by_epoch in by_group for s in by_epoch.values()]
            level, how = self.area_level(pooled + ([] if teacher is None else [teacher]))
            self._epoch_landscapes = _EpochLandscapes(by_group, teacher, level, how)
        return self._epoch_landscapes

    def teacher_entropy(self, run: Run | None = None) -> np.ndarray | None:
        """Test-set H_T at ``run``'s T' (default: the main run's): recorded by the engine, else
        from the teacher's outputs."""
        run = run or self.main
        h = run.teacher_entropies() if run.method != "vanilla" else None
        if h is not None:
            return h.numpy().astype(np.float64)
        t = self.teacher_outputs()
        temperature = run.ea_settings.temperature if run.method != "vanilla" else self.temperature
        return None if t is None else t.entropy(temperature).numpy().astype(np.float64)


@dataclass
class _EpochLandscapes:
    groups: list[tuple[Group, dict[int, np.ndarray]]]  # surfaces by epoch, per student group
    teacher: np.ndarray | None
    level: float
    how: str


_NO_SNAPSHOTS = (
    "no run kept per-epoch snapshots (checkpoints/epochNNNN.pt): train with log.save_epochs "
    "listing the epochs, e.g. [40, 120, 240]"
)


def _colors(groups: list[Group]) -> dict[str, Any]:
    from .plots import TEACHER_COLOR

    palette = ["#1b9e77", "#7570b3", "#d95f02", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]
    palette += ["#1f78b4", "#b2df8a", "#fb9a99", "#cab2d6", "#ff7f00"]
    colors = {"teacher": TEACHER_COLOR}
    single_ce = sum(g.method == "vanilla" for g in groups) == 1
    k = 0
    for g in groups:
        if g.method == "vanilla" and single_ce:
            colors[g.label] = "#999999"
        else:
            colors[g.label] = palette[k % len(palette)]
            k += 1
    return colors


def _epochs_subset(epochs: Sequence[int], most: int) -> list[int]:
    epochs = sorted(epochs)
    if len(epochs) <= most:
        return list(epochs)
    picks = np.unique(np.round(np.linspace(0, len(epochs) - 1, most)).astype(int))
    return [epochs[i] for i in picks]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Figure 5
def _loss_share(ctx: _Context, path: Path):
    from .plots import SharePanel, plot_loss_share

    parts = ctx.opts.parts
    panels, sections, bounds = [], [], []
    bins = None
    for g in ctx.groups:
        diags = [r.diagnostics() for r in g.runs]
        diags = [d for d in diags if d]
        if g.method == "vanilla" or not diags:
            continue
        common = sorted(set.intersection(*({row["epoch"] for row in d} for d in diags)))
        shares, raw_shares, unc = [], [], []
        for e in common:
            rows = [next(row for row in d if row["epoch"] == e) for d in diags]
            count = np.sum([row["hist_count"] for row in rows], axis=0)
            weighted = np.sum([row["hist_weighted"] for row in rows], axis=0)
            plain = np.sum([row["hist_loss"] for row in rows], axis=0)
            shares.append(quantile_loss_shares(count, weighted, parts))
            raw_shares.append(quantile_loss_shares(count, plain, parts))
            unc.append(quantile_share_uncertainty(count, weighted, parts))
            bins = len(count)
        shares_a = np.array(shares)
        seeds = f"{len(diags)} seed{'s' if len(diags) > 1 else ''} pooled"
        what = "EA-weighted loss" if g.ea else "loss"
        panels.append(SharePanel(g.label, common, shares_a, f"{what}, {seeds}"))
        bounds.append(max(unc))
        shown = _epochs_subset(common, 10)
        rows_md = []
        for e in shown:
            i = common.index(e)
            rows_md.append([e, *(100 * shares_a[i]), 100 * unc[i]])
        header = ["epoch", *[f"Q{k + 1} (%)" for k in range(parts)], "max error (pp)"]
        text = f"**{g.label}** ({what}, {seeds}):\n\n" + _table(header, rows_md)
        if g.ea:
            last = 100 * raw_shares[-1]
            text += (
                f"\n\nThe same epoch-{common[-1]} samples without the EA weights: "
                + ", ".join(f"Q{k + 1} {v:.1f} %" for k, v in enumerate(last))
                + "."
            )
        sections.append(text)
    if not panels:
        raise SkipFigure(
            f"no distillation run with {LAYOUT.diagnostics} (train with a teacher and "
            "log.diagnostics=true)"
        )
    width = math.log(ctx.main.num_classes) / bins
    note = (
        f"Quantiles from the per-epoch histogram of training-set teacher entropy at T'="
        f"{ctx.temperature:g}: {bins} bins of {width:.3f} nats over [0, log C]; a bin that "
        f"straddles a quantile boundary is split by sample count (largest possible error: "
        f"{100 * max(bounds):.1f} percentage points)."
    )
    if max(bounds) > 0.05:
        note += (
            f" The teacher entropies crowd into few bins: train with log.entropy_bins="
            f"{max(1024, 8 * bins)} or more for exact quartiles."
        )
    out = plot_loss_share(panels, path, note=note)
    md = (
        "Share of the distillation loss contributed by each quartile of teacher entropy "
        "(Q1: lowest, Q4: highest), per training epoch. " + note + "\n\n" + "\n\n".join(sections)
    )
    return out, md


# ----------------------------------------------------------------------------------------------
# Figures 2a / B1a
def _segments(ctx: _Context, path: Path):
    from .plots import plot_segments

    groups = ctx.students()
    ht = ctx.teacher_entropy()
    if ht is None:
        raise SkipFigure(
            f"needs the teacher's test-set entropies ({LAYOUT.teacher_entropies()}) or its "
            f"checkpoint (--teacher): {ctx._teacher_error or 'no distillation run recorded them'}"
        )
    n_seg = ctx.opts.segments
    teacher = ctx.teacher_outputs()
    segs = entropy_segments(ht, n_seg)
    ticks = [f"S{k + 1}\n{ht[s].min():.2f}-{ht[s].max():.2f}" for k, s in enumerate(segs)]
    acc: dict[str, np.ndarray] = {}
    t_correct = teacher.correct.numpy() if teacher is not None else None
    if t_correct is not None:
        acc["teacher"] = accuracy_by_segment(t_correct, segs)
    right: dict[str, np.ndarray] = {}
    right_rows = []
    for g in groups:
        out = ctx.student_outputs(g.representative)
        if out.logits.shape[0] != ht.shape[0]:
            raise SkipFigure(
                f"{g.label} was evaluated on {out.logits.shape[0]} test samples, "
                f"the teacher on {ht.shape[0]}"
            )
        correct = out.correct.numpy()
        acc[g.label] = accuracy_by_segment(correct, segs)
        hs = out.entropy(ctx.temperature).numpy()
        s_segs = entropy_segments(hs, n_seg)
        s_acc = accuracy_by_segment(correct, s_segs)
        if t_correct is not None:
            t_acc = accuracy_by_segment(t_correct, s_segs)
            right[g.label] = t_acc - s_acc
            right_rows += [
                [
                    g.label,
                    f"S{k + 1}",
                    f"{hs[s].min():.2f}-{hs[s].max():.2f}",
                    t_acc[k],
                    s_acc[k],
                    t_acc[k] - s_acc[k],
                ]
                for k, s in enumerate(s_segs)
            ]
        else:
            right[g.label] = s_acc
            right_rows += [
                [
                    g.label,
                    f"S{k + 1}",
                    f"{hs[s].min():.2f}-{hs[s].max():.2f}",
                    math.nan,
                    s_acc[k],
                    math.nan,
                ]
                for k, s in enumerate(s_segs)
            ]
    s_ticks = [
        f"S{k + 1}" + (" (low)" if k == 0 else " (high)" if k == n_seg - 1 else "")
        for k in range(n_seg)
    ]
    note = (
        f"Entropies at T'={ctx.temperature:g} on {len(ht)} test samples, {n_seg} equal-count "
        f"segments; students use {LAYOUT.checkpoint(ctx.opts.checkpoint)} of their lowest seed."
        + ("" if t_correct is not None else " No teacher checkpoint: teacher accuracy omitted.")
    )
    out_path = plot_segments(
        {"ticks": ticks, "acc": acc},
        {"ticks": s_ticks, "values": right, "gap": t_correct is not None},
        ctx.colors,
        path,
        note=note,
    )
    rows = []
    for k, s in enumerate(segs):
        rows.append(
            [
                f"S{k + 1}",
                f"{ht[s].min():.2f}-{ht[s].max():.2f}",
                len(s),
                *[acc[label][k] for label in acc],
            ]
        )
    md = (
        note
        + "\n\nTop-1 (%) per teacher-entropy segment:\n\n"
        + _table(["segment", "H_T range", "samples", *acc], rows)
        + "\n\nPer segment of each student's own entropy (teacher and student top-1, %):\n\n"
        + _table(["student", "segment", "H_S range", "teacher", "student", "gap (pp)"], right_rows)
    )
    return out_path, md


# ----------------------------------------------------------------------------------------------
# Figure 3
def _entropy_boxes(ctx: _Context, path: Path):
    from .plots import BoxPanel, plot_entropy_boxes

    if ctx.teacher_entropy() is None:
        raise SkipFigure(
            f"needs {LAYOUT.teacher_entropies()} (recorded by distillation runs) or --teacher"
        )
    panels, sections = [], []
    for g in ctx.students():
        ht_all = ctx.teacher_entropy(g.representative)
        top = top_fraction(ht_all, ctx.opts.top_fraction)
        hs_by_epoch = g.representative.student_entropies()
        hs_by_epoch = {e: h for e, h in hs_by_epoch.items() if h.shape[0] == ht_all.shape[0]}
        if not hs_by_epoch:
            continue
        shown = _epochs_subset(list(hs_by_epoch), ctx.opts.max_epochs)
        student = {e: hs_by_epoch[e].numpy()[top].astype(np.float64) for e in shown}
        teacher = ht_all[top]
        panels.append(BoxPanel(g.label, teacher, student))
        rows = []
        for e in shown:
            h = student[e]
            q1, med, q3 = np.percentile(h, [25, 50, 75])
            rows.append([e, med, q3 - q1, float(np.abs(h - teacher).mean())])
        sections.append(
            f"**{g.label}** (teacher median {np.median(teacher):.2f} nats):\n\n"
            + _table(["epoch", "median H_S", "IQR H_S", "mean abs(H_S - H_T)"], rows)
        )
    if not panels:
        raise SkipFigure(
            "no run recorded test-set student entropies: they need log.test_entropies=true "
            "and a single-process run (DDP runs do not record them)"
        )
    log_c = math.log(ctx.main.num_classes)
    note = (
        f"The {len(top)} test samples with the highest teacher entropy (top "
        f"{100 * ctx.opts.top_fraction:g} %), entropies at T'={ctx.temperature:g}; a narrower "
        "box closer to the teacher's means a student that mimics the teacher's uncertainty."
    )
    out = plot_entropy_boxes(panels, path, log_c, ctx.opts.top_fraction, note=note)
    return out, note + "\n\n" + "\n\n".join(sections)


# ----------------------------------------------------------------------------------------------
# Figures 2b / 6 / B3
def _tsne(ctx: _Context, path: Path):
    from .plots import plot_tsne

    _require_tsne()
    opts = ctx.opts
    groups = ctx.students()
    subset, labels, classes = _tsne_subset(ctx, groups)
    models: list[tuple[str, Outputs, str, np.ndarray | None]] = []
    teacher = ctx.teacher_outputs()
    if teacher is not None:
        models.append(("teacher", teacher, "$H_T$", teacher.entropy(ctx.temperature).numpy()))
    for g in groups:
        out = ctx.student_outputs(g.representative)
        models.append((g.label, out, *_highlight_score(ctx, g.representative, out)))
    panels, rows, notes = [], [], []
    for label, out, crit, score in models:
        panel, row = _tsne_panel(label, out, crit, score, subset, labels, opts, notes)
        panels.append(panel)
        rows.append(row)
    note = (
        f"{subset.size} test samples of {classes.size} classes; CH index with the true classes "
        "on the 2-D t-SNE map (as on the panels) and on the pooled features (whose widths "
        "differ between teacher and students)." + (" " + "; ".join(notes) + "." if notes else "")
    )
    names = _class_names(ctx.main)
    out_path = plot_tsne(panels, path, names, note=note, top_fraction=opts.top_fraction)
    header = ["model", "highlighted", "CH index (t-SNE map)", "CH index (features)", "feature dim"]
    md = note + "\n\n" + _table(header, rows)
    return out_path, md


def _tsne_epochs(ctx: _Context, path: Path):
    from .plots import TsnePanel, plot_tsne

    _require_tsne()
    opts = ctx.opts
    chosen = ctx.snapshot_groups(ctx.students())
    if not chosen:
        raise SkipFigure(_NO_SNAPSHOTS)
    subset, labels, classes = _tsne_subset(ctx, ctx.students())
    epochs = sorted({e for _, shown in chosen for e in shown})
    panels: list[TsnePanel | None] = []
    rows, notes = [], []
    ch: dict[str, dict[int, float]] = {}
    for g, shown in chosen:
        run = g.representative
        for e in epochs:
            if e not in shown:
                panels.append(None)
                continue
            out = ctx.student_outputs(run, snapshot_name(e))
            crit, score = _highlight_score(ctx, run, out)
            label = f"{g.label}, epoch {e}"
            panel, row = _tsne_panel(label, out, crit, score, subset, labels, opts, notes)
            panels.append(panel)
            rows.append([g.label, e, *row[1:]])
            ch.setdefault(g.label, {})[e] = float(panel.ch)
    note = (
        f"{subset.size} test samples of {classes.size} classes (those of the t-SNE figure); "
        f"one row per student ({_shown_epochs(chosen, ctx)} of its lowest seed), the samples "
        "highlighted by that epoch's own student entropy or EA weight; CH index with the true "
        "classes on the 2-D t-SNE map and on the pooled features."
        + (" " + "; ".join(dict.fromkeys(notes)) + "." if notes else "")
    )
    title = (
        "t-SNE of the students' pooled features across training epochs (test set); "
        "high-entropy / high-weight samples as ▲"
    )
    out_path = plot_tsne(
        panels,
        path,
        _class_names(ctx.main),
        note=note,
        top_fraction=opts.top_fraction,
        ncols=len(epochs),
        title=title,
    )
    header = [
        "model",
        "epoch",
        "highlighted",
        "CH index (t-SNE map)",
        "CH index (features)",
        "feature dim",
    ]
    md = note + "\n\n" + _table(header, rows)
    return out_path, md, {"ch_index": ch}


def _require_tsne() -> None:
    try:
        import sklearn.manifold  # noqa: F401
        import threadpoolctl  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise SkipFigure("t-SNE needs scikit-learn: pip install 'eakd[analysis]'") from None


def _tsne_subset(ctx: _Context, groups: list[Group]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test samples every t-SNE panel shows: at most ``tsne_points`` of the first
    ``tsne_classes`` classes, drawn with ``seed``; returns their indices, classes and the
    classes shown."""
    opts = ctx.opts
    first = ctx.student_outputs(groups[0].representative)
    targets = first.targets.numpy()
    classes = np.unique(targets)[: opts.tsne_classes]
    pool = np.flatnonzero(np.isin(targets, classes))
    rng = np.random.default_rng(opts.seed)
    subset = np.sort(rng.choice(pool, size=min(opts.tsne_points, pool.size), replace=False))
    return subset, targets[subset], classes


def _highlight_score(ctx: _Context, run: Run, out: Outputs) -> tuple[str, np.ndarray]:
    """What a student's t-SNE panel highlights: its EA weights ``w`` from its own entropies
    and the teacher's for an EA run, else its entropy ``H_S`` at T'."""
    hs = out.entropy(ctx.temperature).numpy()
    ht_run = ctx.teacher_entropy(run) if run.ea else None
    if ht_run is None:
        return "$H_S$", hs
    from ..core import weights_from_entropies

    ea = run.ea_settings
    hs_w = out.entropy(ea.temperature).double()
    h_ub = ea.max_entropy_for(run.num_classes)
    w = weights_from_entropies(hs_w, torch.from_numpy(ht_run), h_ub, ea.kind).numpy()
    return ("$w_{EA}$" if ea.kind == "ea" else f"$w$ ({ea.kind})"), w


def _tsne_panel(label, out, crit, score, subset, labels, opts, notes):
    """One model's t-SNE panel and its report row (``notes`` collects what the note says)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    from .plots import TsnePanel

    perplexity = float(min(30.0, max(2.0, (subset.size - 1) / 3.0)))
    if out.features is not None:
        feats = out.features.numpy()[subset]
    else:
        feats = out.logits.numpy()[subset]
        notes.append(f"{label} returns no pooled features: its logits are shown")
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=opts.seed)
    # One OpenMP thread: with torch's OpenMP runtime loaded as well, scikit-learn's
    # multi-threaded Barnes-Hut gradient can run ten times slower than single-threaded.
    with threadpool_limits(1):
        emb = tsne.fit_transform(feats.astype(np.float32))
    highlight = top_fraction(score[subset], opts.top_fraction)
    ch_map = calinski_harabasz(emb, labels)
    ch_feat = calinski_harabasz(feats, labels)
    pct = f"{100 * opts.top_fraction:g}"
    title = f"{label}: top {pct} % {crit} ▲"
    plain = crit.replace("$", "").replace("{EA}", "EA")
    return (
        TsnePanel(title, emb, labels, highlight, crit, ch_map),
        [label, f"top {pct} % {plain}", ch_map, ch_feat, feats.shape[1]],
    )


def _class_names(run: Run) -> list[str] | None:
    try:
        from ..data import build_dataset

        d = run.config["data"]
        ds = build_dataset(
            d["name"], d.get("root"), "test", transform=None, **(d.get("options") or {})
        )
        names = list(getattr(ds, "classes", []) or [])
        return [str(n) for n in names] or None
    except Exception:  # class names are cosmetic
        return None


# ----------------------------------------------------------------------------------------------
# Figure 1
def _non_ea_twin(group: Group, groups: list[Group]) -> str | None:
    """The label of the group that differs from ``group`` only by EA being off."""
    if not group.ea:
        return None

    def bare(cfg: dict[str, Any]) -> dict[str, Any]:
        cfg = {k: v for k, v in cfg.items() if k not in ("name", "output_dir", "ea")}
        cfg["train"] = {k: v for k, v in (cfg.get("train") or {}).items() if k != "seed"}
        return cfg

    me = bare(group.representative.config)
    for other in groups:
        if (
            not other.ea
            and other.method == group.method
            and bare(other.representative.config) == me
        ):
            return other.label
    return None


def _time(ctx: _Context, path: Path):
    from .plots import TimePoint, plot_time_accuracy

    key = f"{ctx.opts.metric}_top1"
    points, rows = [], []
    for g in ctx.groups:
        ms = [1000 * v for r in g.runs if (v := r.metric("step_time_s")) is not None]
        acc = [v for r in g.runs if (v := r.metric(key)) is not None]
        if not ms or not acc:
            continue
        base = _non_ea_twin(g, ctx.groups)
        p = TimePoint(
            g.label,
            float(np.mean(ms)),
            float(np.std(ms, ddof=1)) if len(ms) > 1 else 0,
            float(np.mean(acc)),
            float(np.std(acc, ddof=1)) if len(acc) > 1 else 0,
            g.ea,
            base,
            len(acc),
        )
        points.append(p)
    if not points:
        raise SkipFigure(f"no run has {LAYOUT.results} with step_time_s and top-1")
    by_label = {p.label: p for p in points}
    for p in points:
        ref = by_label.get(p.base) if p.ea else None
        overhead = 100 * (p.ms / ref.ms - 1) if ref is not None and ref.ms > 0 else math.nan
        gain = p.acc - ref.acc if ref is not None else math.nan
        rows.append([p.label, p.seeds, p.ms, p.ms_std, p.acc, p.acc_std, overhead, gain])
    sizes = sorted({int(lookup(r.config, "data.batch_size", 0)) for r in ctx.runs})
    batch = (
        f"batch of {sizes[0]}" if len(sizes) == 1 else "batch sizes " + ", ".join(map(str, sizes))
    )
    xlabel = f"time per training step (ms, {batch}; distillation steps include the teacher)"
    note = (
        f"Mean over seeds of each run's mean training-step time ({LAYOUT.results} step_time_s), "
        "as measured on the machine that trained it; error bars: std over seeds."
    )
    out = plot_time_accuracy(points, path, ctx.colors, xlabel, ctx.opts.metric, note=note)
    md = (
        note
        + "\n\n"
        + _table(
            [
                "method",
                "seeds",
                "ms/step",
                "std",
                f"{ctx.opts.metric} top-1 (%)",
                "std",
                "time vs base (%)",
                "top-1 vs base (pp)",
            ],
            rows,
        )
    )
    return out, md


# ----------------------------------------------------------------------------------------------
# Figure 8
_NOT_PARAMS = {
    "name",
    "output_dir",
    "train.seed",
    "train.progress",
    "train.threads",
    "train.device",
    "data.num_workers",
    "log.tensorboard",
}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _param_value(run: Run, param: str) -> float | None:
    v = lookup(run.config, param)
    if v is None:  # a default the config does not spell out: read the sweep variant's name
        for part in run.variant.split("+"):
            k, _, val = part.partition("=")
            if k == param:
                v = val
    try:
        return float(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None


def _choose_param(ctx: _Context) -> str | None:
    if ctx.opts.param:
        return ctx.opts.param
    if len({_param_value(r, "method.loss.beta") for r in ctx.runs} - {None}) > 1:
        return "method.loss.beta"
    flat = [_flatten(r.config) for r in ctx.runs]
    varying = []
    for k in sorted(set().union(*flat)):
        if k in _NOT_PARAMS:
            continue
        vals = [f.get(k) for f in flat]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        if numeric and len(set(vals)) > 1:
            varying.append(k)
    return varying[0] if len(varying) == 1 else None


def _sensitivity(ctx: _Context, path: Path):
    from .plots import SensitivitySeries, plot_sensitivity

    param = _choose_param(ctx)
    if param is None:
        raise SkipFigure(
            "no hyper-parameter is swept across these runs; sweep one with eakd sweep (e.g. "
            "--grid method=dkd,ea_dkd --grid method.loss.beta=1,2,4,8) or pass --param KEY"
        )
    key = f"{ctx.opts.metric}_top1"
    table: dict[str, dict[float, list[float]]] = {}
    for r in ctx.runs:
        v, acc = _param_value(r, param), r.metric(key)
        if v is None or acc is None or r.method == "vanilla":
            continue
        table.setdefault(r.base_label, {}).setdefault(v, []).append(acc)
    series = []
    for label, by_value in table.items():
        if len(by_value) < 2:
            continue
        values = sorted(by_value)
        means = [float(np.mean(by_value[v])) for v in values]
        stds = [float(np.std(by_value[v], ddof=1)) if len(by_value[v]) > 1 else 0.0 for v in values]
        series.append(
            SensitivitySeries(label, values, means, stds, [len(by_value[v]) for v in values])
        )
    if not series:
        raise SkipFigure(f"no method was run with two or more values of {param}")
    colors = {**ctx.colors}
    palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"]
    for k, s in enumerate(series):
        colors.setdefault(s.label, palette[k % len(palette)])
    note = (
        f"{ctx.opts.metric} top-1, mean +/- std over seeds per value; 'variance' is the "
        f"variance (ddof=1) of the per-value means across the values of {param}."
    )
    out = plot_sensitivity(series, param, path, colors, ctx.opts.metric, note=note)
    values = sorted({v for s in series for v in s.values})
    rows = []
    for v in values:
        row: list[Any] = [f"{v:g}"]
        for s in series:
            if v in s.values:
                i = s.values.index(v)
                row.append(f"{s.means[i]:.2f} +/- {s.stds[i]:.2f} ({s.seeds[i]})")
            else:
                row.append("-")
        rows.append(row)
    rows.append(["variance", *[f"{s.variance:.3f}" for s in series]])
    rows.append(["mean", *[f"{np.mean(s.means):.2f}" for s in series]])
    md = note + "\n\n" + _table([param, *[f"{s.label} (seeds)" for s in series]], rows)
    return out, md


# ----------------------------------------------------------------------------------------------
# Figures 7 / B2
def _landscape(ctx: _Context, path: Path):
    from .plots import LandscapePanel, plot_landscapes

    opts = ctx.opts
    groups = ctx.students(distilled_only=True) or ctx.students()
    batches = ctx.landscape_batches()
    xs = ctx.landscape_xs
    surfaces = []
    teacher = ctx.teacher_surface()
    if teacher is not None:
        surfaces.append(("teacher", teacher))
    for g in groups:
        surfaces.append((g.label, ctx.student_surface(g.representative, opts.checkpoint)))
    level, how = ctx.area_level([s for _, s in surfaces])
    panels, rows = [], []
    centre = opts.landscape_grid // 2 if opts.landscape_grid % 2 else None
    areas = {}
    for label, s in surfaces:
        area = area_below(s, level, xs, xs)
        areas[label] = area
        panels.append(LandscapePanel(label, xs, xs, s, level, area))
        origin = float(s[centre, centre]) if centre is not None else math.nan
        rows.append([label, origin, float(s.mean()), float(s.var()), f"{area:.4g}"])
    n = sum(len(b[1]) for b in batches)
    note = (
        f"Mean cross-entropy on {n} training samples (test-time transform) over a "
        f"{opts.landscape_grid}x{opts.landscape_grid} grid in [-{opts.landscape_range:g}, "
        f"{opts.landscape_range:g}]^2 of two filter-normalised random directions (Li et al. "
        f"2018; biases and norm layers fixed); Area@{level:.3g} ({how}) in squared direction "
        "units."
    )
    out = plot_landscapes(panels, path, note=note)
    md = (
        note
        + "\n\n"
        + _table(["model", "loss at origin", "mean", "variance", f"Area@{level:.3g}"], rows)
    )
    if "teacher" in areas:
        diffs = [f"{k} {areas['teacher'] - v:+.3g}" for k, v in areas.items() if k != "teacher"]
        md += "\n\nArea difference teacher - student: " + ", ".join(diffs) + "."
    return out, md


def _landscape_note(ctx: _Context, level: float, how: str, what: str) -> str:
    opts = ctx.opts
    n = sum(len(b[1]) for b in ctx.landscape_batches())
    return (
        f"Mean cross-entropy on {n} training samples (test-time transform) over a "
        f"{opts.landscape_grid}x{opts.landscape_grid} grid in [-{opts.landscape_range:g}, "
        f"{opts.landscape_range:g}]^2 of two filter-normalised random directions (Li et al. "
        f"2018; biases and norm layers fixed); {what}; Area@{level:.3g} ({how}) in squared "
        "direction units."
    )


def _shown_epochs(chosen: Sequence[tuple[Group, Sequence[int]]], ctx: _Context) -> str:
    """How the shown snapshots were chosen, for the notes."""
    saved = {len(g.representative.snapshots()) for g, _ in chosen}
    if max(saved) <= ctx.opts.max_epochs:
        return "every saved snapshot"
    return f"at most {ctx.opts.max_epochs} snapshots per student, evenly spread (--max-epochs)"


def _landscape_epochs(ctx: _Context, path: Path):
    from .plots import LandscapePanel, plot_landscapes

    land = ctx.epoch_landscapes()
    xs = ctx.landscape_xs
    epochs = sorted({e for _, by_epoch in land.groups for e in by_epoch})
    panels: list[LandscapePanel | None] = []
    rows = []
    centre = ctx.opts.landscape_grid // 2 if ctx.opts.landscape_grid % 2 else None
    for g, by_epoch in land.groups:
        for e in epochs:
            s = by_epoch.get(e)
            if s is None:
                panels.append(None)
                continue
            area = area_below(s, land.level, xs, xs)
            panels.append(LandscapePanel(f"{g.label}, epoch {e}", xs, xs, s, land.level, area))
            origin = float(s[centre, centre]) if centre is not None else math.nan
            rows.append([g.label, e, origin, float(s.mean()), float(s.var()), f"{area:.4g}"])
    chosen = [(g, list(by_epoch)) for g, by_epoch in land.groups]
    note = _landscape_note(
        ctx,
        land.level,
        land.how,
        f"one row per student ({_shown_epochs(chosen, ctx)} of its lowest seed), the same two "
        "seeded directions at every epoch",
    )
    title = (
        "Loss landscapes of the students across training epochs (+: the weights of that "
        "epoch); red: loss = level of Area@level"
    )
    out = plot_landscapes(panels, path, note=note, max_cols=len(epochs), title=title)
    header = ["model", "epoch", "loss at origin", "mean", "variance", f"Area@{land.level:.3g}"]
    md = note + "\n\n" + _table(header, rows)
    data = {
        "level": land.level,
        "surfaces": {g.label: dict(by_epoch) for g, by_epoch in land.groups},
    }
    return out, md, data


def _area_epochs(ctx: _Context, path: Path):
    from .plots import AreaSeries, plot_area_epochs

    land = ctx.epoch_landscapes()
    xs = ctx.landscape_xs
    series = [
        AreaSeries(
            g.label,
            list(by_epoch),
            [area_below(s, land.level, xs, xs) for s in by_epoch.values()],
        )
        for g, by_epoch in land.groups
    ]
    teacher = None if land.teacher is None else area_below(land.teacher, land.level, xs, xs)
    chosen = [(g, list(by_epoch)) for g, by_epoch in land.groups]
    note = _landscape_note(
        ctx,
        land.level,
        land.how,
        f"{_shown_epochs(chosen, ctx)} of each student's lowest seed; the teacher's "
        + ("surface is that of its checkpoint" if teacher is not None else "is not known")
        + (f" (--teacher: {ctx._teacher_error})" if teacher is None and ctx._teacher_error else ""),
    )
    out = plot_area_epochs(series, path, land.level, ctx.colors, teacher, note=note)
    epochs = sorted({e for s in series for e in s.epochs})
    header = ["epoch", *[f"{s.label} Area" for s in series]]
    if teacher is not None:
        header += [f"teacher - {s.label}" for s in series]
    rows = []
    for e in epochs:
        area = [dict(zip(s.epochs, s.areas, strict=True)).get(e) for s in series]
        row: list[Any] = ["-" if a is None else f"{a:.4g}" for a in area]
        if teacher is not None:
            row += ["-" if a is None else f"{teacher - a:+.4g}" for a in area]
        rows.append([e, *row])
    md = note + "\n\n" + _table(header, rows)
    if teacher is not None:
        md += f"\n\nTeacher Area@{land.level:.3g}: {teacher:.4g}."
    data = {
        "level": land.level,
        "teacher": teacher,
        "area": {s.label: dict(zip(s.epochs, s.areas, strict=True)) for s in series},
    }
    return out, md, data


def _landscape_batches(ctx: _Context) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from .forward import split_dataset

    ds = split_dataset(ctx.main, "train")
    g = torch.Generator().manual_seed(ctx.opts.seed)
    idx = torch.randperm(len(ds), generator=g)[: ctx.opts.landscape_samples].sort().values
    xs, ys = zip(*(ds[int(i)] for i in idx), strict=True)
    x = torch.stack([torch.as_tensor(v) for v in xs])
    y = torch.as_tensor([int(v) for v in ys])
    bs = int(lookup(ctx.main.config, "data.test_batch_size", 256))
    return [
        (x[i : i + bs].to(ctx.device), y[i : i + bs].to(ctx.device)) for i in range(0, len(y), bs)
    ]


_DRAW = {
    "loss_share": _loss_share,
    "segments": _segments,
    "entropy_boxes": _entropy_boxes,
    "tsne": _tsne,
    "time": _time,
    "sensitivity": _sensitivity,
    "landscape": _landscape,
    "landscape_epochs": _landscape_epochs,
    "area_epochs": _area_epochs,
    "tsne_epochs": _tsne_epochs,
}


# ----------------------------------------------------------------------------------------------
def _report(ctx: _Context, results: list[FigureResult]) -> str:
    lines = ["# EA-KD analysis"]
    rows = []
    known_teacher = next(
        (
            v
            for r in ctx.runs
            if (v := r.metric("teacher_top1")) is not None and ctx.key == data_key(r)
        ),
        None,
    )
    for g in ctx.groups:
        best = [v for r in g.runs if (v := r.metric("best_top1")) is not None]
        last = [v for r in g.runs if (v := r.metric("last_top1")) is not None]
        teach = g.representative.metric("teacher_top1") or known_teacher
        rows.append(
            [
                g.label,
                len(g.runs),
                _mean_std(best),
                _mean_std(last),
                "n/a" if teach is None else f"{teach:.2f}",
                os.path.relpath(Path(g.key), ctx.out),
            ]
        )
    if rows:
        header = ["variant", "seeds", "best top-1 (%)", "last top-1 (%)", "teacher (%)", "runs"]
        lines += ["", _table(header, rows)]
    if ctx.others:
        rows = [
            [
                os.path.relpath(r.path, ctx.out),
                r.engine,
                r.method,
                r.seed,
                "on" if r.ea_settings.enabled else "off",
                len(r.train_log()),
                len(r.diagnostics()),
                ", ".join(r.missing()) or "-",
            ]
            for r in ctx.others
        ]
        header = ["run", "engine", "method", "seed", "EA", "log rows", "diagnostics", "missing"]
        lines += [
            "",
            "Runs of other engines, left out of the figures (which read what classification "
            "runs record):",
            "",
            _table(header, rows),
        ]
    other = [g.label for g in ctx.groups if g not in ctx.students()]
    if other:
        lines += [
            "",
            f"Trained on other data than {ctx.main.path.name} and left out of the per-sample "
            f"figures: {', '.join(other)}.",
        ]
    if getattr(ctx, "teacher_source", None):
        lines += ["", f"Teacher: {ctx.teacher_source}."]
    elif ctx._teacher_error:
        lines += ["", f"Teacher not rebuilt: {ctx._teacher_error}"]
    for f in results:
        what = _ALL_FIGURES[f.name][1]
        lines += ["", f"## {what[0].upper()}{what[1:]}", ""]
        if f.path is None:
            lines.append(f"Skipped: {f.skipped}")
        else:
            lines += [f"![{f.name}]({f.path.name})", "", f.markdown]
    return "\n".join(lines) + "\n"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} +/- {np.std(values, ddof=1):.2f}"
