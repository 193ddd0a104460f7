"""Figures as PNG files, from plain arrays (no run directories here).

matplotlib is used through its object-oriented API (``Figure`` + the Agg canvas): no pyplot, no
global backend switch, no display needed. Files are written atomically.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_open

__all__ = [
    "AreaSeries",
    "BoxPanel",
    "LandscapePanel",
    "SensitivitySeries",
    "SharePanel",
    "TimePoint",
    "TsnePanel",
    "plot_area_epochs",
    "plot_entropy_boxes",
    "plot_landscapes",
    "plot_loss_share",
    "plot_segments",
    "plot_sensitivity",
    "plot_time_accuracy",
    "plot_tsne",
    "require_matplotlib",
]

#: Q1/Q2 (low teacher entropy) in blues, Q3/Q4 (high) in reds, as in EA-KD's Figure 5.
QUARTILE_COLORS = ("#1f4e9c", "#8fb3e0", "#f2a08c", "#b2182b")
TEACHER_COLOR = "#555555"
DPI = 130


def require_matplotlib():
    """Import matplotlib's Figure class, or explain how to install the analysis extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the analysis figures need matplotlib: pip install 'eakd[analysis]' "
            "(matplotlib>=3.7, scikit-learn>=1.3)"
        ) from exc
    return Figure


def _subplots(ncols: int, nrows: int = 1, width: float = 4.8, height: float = 4.0, **kw):
    figure_cls = require_matplotlib()
    fig = figure_cls(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _panel_grid(n: int, max_cols: int, width: float, height: float, **kw):
    """``n`` panels in rows of at most ``max_cols``; returns the figure, the ``n`` axes in
    reading order and the axes of the first column (they carry the y labels)."""
    ncols = min(n, max_cols)
    nrows = math.ceil(n / ncols)
    fig, axes = _subplots(ncols, nrows, width=width, height=height, **kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n], [flat[k] for k in range(0, n, ncols)]


def _save(fig, path: str | os.PathLike[str]) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    path = Path(path)
    with atomic_open(path) as fh:
        fh.write(buf.getvalue())
    return path


def _note(fig, text: str | None) -> None:
    if text:
        fig.text(0.5, -0.02, text, ha="center", va="top", fontsize=8, color="0.3", wrap=True)


# ----------------------------------------------------------------------------------------------
# Figure 5: loss share by teacher-entropy quartile
@dataclass
class SharePanel:
    label: str
    epochs: Sequence[int]
    shares: np.ndarray  # (epochs, parts), rows summing to 1
    subtitle: str = ""


def plot_loss_share(panels: Sequence[SharePanel], path, note: str | None = None) -> Path:
    """Stacked shares of the distillation loss per teacher-entropy quantile over epochs."""
    if not panels:
        raise ValueError("plot_loss_share needs at least one run with recorded diagnostics")
    fig, axes, first = _panel_grid(len(panels), 4, 4.6, 3.9, sharey=True)
    parts = panels[0].shares.shape[1]
    colors = QUARTILE_COLORS if parts == 4 else _ramp(parts)
    for ax, panel in zip(axes, panels, strict=True):
        epochs = np.asarray(panel.epochs)
        shares = 100.0 * np.asarray(panel.shares)
        names = [f"Q{k + 1}" for k in range(parts)]
        names[0] += " (lowest $H_T$)"
        names[-1] += " (highest $H_T$)"
        if len(epochs) <= 30:
            bottom = np.zeros(len(epochs))
            for k in range(parts):
                ax.bar(
                    epochs,
                    shares[:, k],
                    bottom=bottom,
                    width=0.8,
                    color=colors[k],
                    label=names[k],
                    edgecolor="white",
                    linewidth=0.4,
                )
                bottom += shares[:, k]
            ax.set_xticks(_ticks(epochs))
        else:
            ax.stackplot(epochs, shares.T, colors=colors, labels=names)
            ax.set_xlim(epochs[0], epochs[-1])
        ax.axhline(50, color="black", lw=0.8, ls=":")
        ax.set_ylim(0, 100)
        ax.set_xlabel("epoch")
        ax.set_title(panel.label + (f"\n{panel.subtitle}" if panel.subtitle else ""), fontsize=10)
    for ax in first:
        ax.set_ylabel("share of distillation loss (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles[::-1],
        labels[::-1],
        loc="outside right center",
        fontsize=8,
        title="teacher-entropy\nquartile",
        title_fontsize=8,
    )
    fig.suptitle("Who the distillation loss comes from: share per teacher-entropy quartile")
    _note(fig, note)
    return _save(fig, path)


def _ramp(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"]
    return [cmap(0.1 + 0.8 * k / max(n - 1, 1)) for k in range(n)]


def _ticks(epochs: np.ndarray, most: int = 10) -> np.ndarray:
    step = max(1, math.ceil(len(epochs) / most))
    return epochs[::step]


# ----------------------------------------------------------------------------------------------
# Figure 2a / B1a: accuracy by entropy segment
def plot_segments(
    teacher_segments: dict[str, Any],
    student_segments: dict[str, Any],
    colors: dict[str, Any],
    path,
    note: str | None = None,
) -> Path:
    """Left: top-1 of teacher and students per teacher-entropy segment. Right: the teacher's
    lead over each student (or the student's top-1 without a teacher) per segment of that
    student's own entropy.

    ``teacher_segments``: ``{"ticks": [...], "acc": {label: (S,)}}``.
    ``student_segments``: ``{"ticks": [...], "values": {label: (S,)}, "gap": bool}``.
    """
    fig, axes = _subplots(2, width=5.6, height=4.2)
    ax = axes[0][0]
    _grouped_bars(ax, teacher_segments["ticks"], teacher_segments["acc"], colors)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_xlabel("test samples by teacher entropy $H_T$ (equal-count segments, nats)")
    ax.set_title("Accuracy per teacher-entropy segment")
    ax.set_ylim(0, 105)
    ax = axes[0][1]
    _grouped_bars(ax, student_segments["ticks"], student_segments["values"], colors)
    ax.set_xlabel("test samples by the student's own entropy $H_S$ (equal-count segments)")
    if student_segments.get("gap", True):
        ax.set_ylabel("teacher top-1 - student top-1 (percentage points)")
        ax.set_title("Teacher lead over student per $H_S$ segment")
        ax.axhline(0, color="black", lw=0.8)
    else:
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title("Student accuracy per $H_S$ segment")
        ax.set_ylim(0, 105)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle("Accuracy by entropy segment (test set; segments from lowest to highest entropy)")
    _note(fig, note)
    return _save(fig, path)


def _grouped_bars(ax, ticks: Sequence[str], series: dict[str, np.ndarray], colors) -> None:
    n = len(series)
    width = 0.8 / max(n, 1)
    x = np.arange(len(ticks))
    for k, (label, values) in enumerate(series.items()):
        ax.bar(
            x + (k - (n - 1) / 2) * width,
            values,
            width=width * 0.95,
            label=label,
            color=colors.get(label),
        )
    ax.set_xticks(x, ticks, fontsize=8)
    ax.grid(axis="y", alpha=0.3)


# ----------------------------------------------------------------------------------------------
# Figure 3: entropies of the top-10 % high-teacher-entropy samples over epochs
@dataclass
class BoxPanel:
    label: str
    teacher: np.ndarray  # (n,) H_T of the selected samples
    student: dict[int, np.ndarray]  # epoch -> (n,) H_S of the same samples


def plot_entropy_boxes(
    panels: Sequence[BoxPanel],
    path,
    max_entropy: float | None = None,
    fraction: float = 0.1,
    color: str = "#d95f02",
    note: str | None = None,
) -> Path:
    """Box plots: the teacher's entropy of the selected samples, then the student's per epoch."""
    if not panels:
        raise ValueError("plot_entropy_boxes needs at least one run with recorded entropies")
    width = max(4.6, 0.55 * _max_boxes(panels))
    fig, axes, first = _panel_grid(len(panels), 3, width, 4.0, sharey=True)
    for ax, panel in zip(axes, panels, strict=True):
        epochs = sorted(panel.student)
        data = [panel.teacher] + [panel.student[e] for e in epochs]
        bp = ax.boxplot(
            data,
            patch_artist=True,
            widths=0.6,
            showfliers=True,
            flierprops={"markersize": 2.5, "alpha": 0.5},
            medianprops={"color": "black"},
        )
        for k, box in enumerate(bp["boxes"]):
            box.set_facecolor(TEACHER_COLOR if k == 0 else color)
            box.set_alpha(0.75)
        ax.set_xticks(range(1, len(data) + 1), ["teacher"] + [str(e) for e in epochs], fontsize=8)
        ax.set_xlabel("student at epoch")
        if max_entropy is not None:
            ax.axhline(max_entropy, color="black", lw=0.8, ls="--")
        ax.set_title(f"{panel.label} ({len(panel.teacher)} samples)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in first:
        ax.set_ylabel("entropy at $T'$ (nats)")
    from matplotlib.patches import Patch

    handles = [
        Patch(color=TEACHER_COLOR, alpha=0.75, label="teacher $H_T$"),
        Patch(color=color, alpha=0.75, label="student $H_S$"),
    ]
    if max_entropy is not None:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="black", lw=0.8, ls="--", label="log C (uniform)"))
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    pct = f"{100 * fraction:g}"
    fig.suptitle(f"Entropy of the top {pct} % highest-$H_T$ test samples: teacher vs student")
    _note(fig, note)
    return _save(fig, path)


def _max_boxes(panels: Sequence[BoxPanel]) -> int:
    return max(len(p.student) + 1 for p in panels)


# ----------------------------------------------------------------------------------------------
# Figures 2b / 6 / B3: t-SNE of pooled features
@dataclass
class TsnePanel:
    title: str
    embedding: np.ndarray  # (n, 2)
    labels: np.ndarray  # (n,) class ids
    highlight: np.ndarray  # indices into the n points
    highlight_name: str  # e.g. "top 10 % H_S"
    ch: float | None = None


def plot_tsne(
    panels: Sequence[TsnePanel | None],
    path,
    class_names: Sequence[str] | None = None,
    note=None,
    top_fraction: float = 0.1,
    ncols: int | None = None,
    title: str | None = None,
) -> Path:
    """Scatter of 2-D embeddings coloured by class, highlighted samples as black-edged triangles.

    Panels fill rows of ``ncols`` (default: 2 for four panels, else up to 3); a ``None`` panel
    leaves its place empty (a model without that epoch in a models x epochs grid)."""
    drawn = [p for p in panels if p is not None]
    if not drawn:
        raise ValueError("plot_tsne needs at least one model")
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    if ncols is None:
        ncols = 2 if len(panels) == 4 else min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = _subplots(ncols, nrows, width=4.4, height=4.3)
    classes = np.unique(np.concatenate([p.labels for p in drawn]))
    cmap = colormaps["tab10" if classes.size <= 10 else "tab20"]
    color_of = {c: cmap(k % cmap.N) for k, c in enumerate(classes)}
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    for ax, panel in zip(axes.flat, panels, strict=False):
        if panel is None:
            ax.set_axis_off()
            continue
        cols = np.array([color_of[c] for c in panel.labels])
        mask = np.zeros(len(panel.labels), dtype=bool)
        mask[panel.highlight] = True
        e = panel.embedding
        ax.scatter(e[~mask, 0], e[~mask, 1], c=cols[~mask], s=7, alpha=0.55, linewidths=0)
        ax.scatter(
            e[mask, 0],
            e[mask, 1],
            c=cols[mask],
            s=34,
            marker="^",
            edgecolors="black",
            linewidths=0.6,
        )
        ch = f"\nCH index (t-SNE map) {panel.ch:.1f}" if panel.ch is not None else ""
        ax.set_title(f"{panel.title}{ch}", fontsize=10)
        ax.set_xlabel("t-SNE 1 (a.u.)")
        ax.set_ylabel("t-SNE 2 (a.u.)")
        ax.tick_params(labelsize=7)
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            color=color_of[c],
            markersize=5,
            label=class_names[c]
            if class_names is not None and c < len(class_names)
            else f"class {c}",
        )
        for c in classes
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="^",
            ls="",
            color="white",
            markeredgecolor="black",
            markersize=7,
            label=f"highlighted: top {100 * top_fraction:g} %\n(see panel title)",
        )
    )
    fig.legend(handles=handles, loc="outside right center", fontsize=7)
    fig.suptitle(
        title or "t-SNE of pooled features (test set); high-entropy / high-weight samples as ▲"
    )
    _note(fig, note)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Figure 1: time per batch vs accuracy
@dataclass
class TimePoint:
    label: str
    ms: float
    ms_std: float
    acc: float
    acc_std: float
    ea: bool
    base: str | None  # label of the same variant without EA: an arrow goes from it to this
    seeds: int = 1


def plot_time_accuracy(
    points: Sequence[TimePoint],
    path,
    colors: dict[str, Any],
    xlabel: str,
    metric: str = "best",
    note: str | None = None,
) -> Path:
    """Each method's mean training-step time against its mean top-1; arrows join a method to
    its EA variant."""
    if not points:
        raise ValueError("plot_time_accuracy needs runs whose results record step_time_s")
    fig, axes = _subplots(1, width=6.4, height=4.6)
    ax = axes[0][0]
    by_label = {p.label: p for p in points}
    for p in points:
        marker = "*" if p.ea else "o"
        ax.errorbar(
            p.ms,
            p.acc,
            xerr=p.ms_std or None,
            yerr=p.acc_std or None,
            fmt=marker,
            ms=13 if p.ea else 8,
            color=colors.get(p.label),
            capsize=3,
            label=f"{p.label} ({p.seeds} seed{'s' if p.seeds > 1 else ''})",
        )
        if len(points) <= 4:  # more names than that collide; the legend has them
            ax.annotate(
                p.label, (p.ms, p.acc), textcoords="offset points", xytext=(7, 5), fontsize=8
            )
    for p in points:
        src = by_label.get(p.base)
        if p.ea and src is not None and src is not p:
            ax.annotate(
                "",
                xy=(p.ms, p.acc),
                xytext=(src.ms, src.acc),
                arrowprops={"arrowstyle": "->", "color": "0.4", "lw": 1},
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} test top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.2)
    if len(points) <= 4:
        ax.legend(fontsize=8, loc="best")
    else:
        fig.legend(loc="outside right center", fontsize=8)
    ax.set_title("Training time per batch vs accuracy (● without EA, ★ with EA)")
    _note(fig, note)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Figure 8: hyper-parameter sensitivity
@dataclass
class SensitivitySeries:
    label: str
    values: list[float]
    means: list[float]
    stds: list[float]
    seeds: list[int] = field(default_factory=list)

    @property
    def variance(self) -> float:
        """Variance of the mean accuracy across the parameter's values (the paper's number)."""
        m = np.asarray(self.means, dtype=np.float64)
        return float(m.var(ddof=1)) if m.size > 1 else 0.0


def plot_sensitivity(
    series: Sequence[SensitivitySeries],
    param: str,
    path,
    colors: dict[str, Any],
    metric: str = "best",
    note: str | None = None,
) -> Path:
    """Accuracy (mean +/- std over seeds) against a swept hyper-parameter, with and without EA."""
    if not series:
        raise ValueError(f"no runs vary {param}")
    fig, axes = _subplots(1, width=6.4, height=4.4)
    ax = axes[0][0]
    for s in series:
        m, sd = np.asarray(s.means), np.asarray(s.stds)
        ax.plot(
            s.values,
            m,
            marker="o",
            color=colors.get(s.label),
            label=f"{s.label}: mean {m.mean():.2f} %, variance {s.variance:.3f}",
        )
        ax.fill_between(s.values, m - sd, m + sd, color=colors.get(s.label), alpha=0.15)
    ax.set_xlabel(f"{param} (swept value)")
    ax.set_ylabel(f"{metric} test top-1 accuracy (%)")
    ax.set_xticks(sorted({v for s in series for v in s.values}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", title="variance: across values", title_fontsize=8)
    ax.set_title(f"Sensitivity to {param.rsplit('.', 1)[-1]} (shaded: +/- 1 std over seeds)")
    _note(fig, note)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Figure 7 / B2: loss landscapes
@dataclass
class LandscapePanel:
    label: str
    xs: np.ndarray
    ys: np.ndarray
    surface: np.ndarray  # (len(ys), len(xs))
    level: float
    area: float


def plot_landscapes(
    panels: Sequence[LandscapePanel | None],
    path,
    note: str | None = None,
    max_cols: int = 3,
    title: str | None = None,
) -> Path:
    """Filled contours of each surface on one colour scale, the chosen level in bold.

    Panels fill rows of at most ``max_cols``; a ``None`` panel leaves its place empty (a model
    without that epoch in a models x epochs grid)."""
    drawn = [p for p in panels if p is not None]
    if not drawn:
        raise ValueError("plot_landscapes needs at least one model")
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig, axes, first = _panel_grid(len(panels), max_cols, 4.2, 4.1, sharey=True)
    lo = max(min(float(p.surface.min()) for p in drawn), 1e-3)
    hi = max(float(p.surface.max()) for p in drawn)
    hi = max(hi, lo * 1.01)
    levels = np.geomspace(lo, hi, 16)
    norm = LogNorm(lo, hi)
    mappable = None
    for ax, p in zip(axes, panels, strict=True):
        if p is None:
            ax.set_axis_off()
            continue
        s = np.clip(p.surface, lo, hi)
        mappable = ax.contourf(p.xs, p.ys, s, levels=levels, norm=norm, cmap="viridis")
        ax.contour(p.xs, p.ys, s, levels=levels, colors="white", linewidths=0.3, alpha=0.5)
        if lo < p.level < hi:
            ax.contour(p.xs, p.ys, p.surface, levels=[p.level], colors="red", linewidths=1.6)
        ax.plot(0, 0, marker="+", color="white", ms=10, mew=2)
        ax.set_xlabel("direction 1 (filter-normalised)")
        mean, var = float(p.surface.mean()), float(p.surface.var())
        ax.set_title(
            f"{p.label}\nmean {mean:.3g}, variance {var:.3g}\nArea@{p.level:.3g} = {p.area:.3g}",
            fontsize=9,
        )
    for ax in first:
        ax.set_ylabel("direction 2 (filter-normalised)")
    cbar = fig.colorbar(mappable, ax=axes, shrink=0.85, ticks=levels[::3])
    cbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))
    cbar.ax.yaxis.set_minor_formatter(NullFormatter())
    cbar.set_label("cross-entropy loss (nats, log scale)")
    fig.suptitle(
        title
        or "Loss landscape around the trained weights (+), 2-D slice; red: loss = level of "
        "Area@level"
    )
    _note(fig, note)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Figure 7 (lower right) / B2 (lower right): Area@level over epochs
@dataclass
class AreaSeries:
    label: str
    epochs: list[int]
    areas: list[float]  # Area@level of the student's surface at each epoch


def plot_area_epochs(
    series: Sequence[AreaSeries],
    path,
    level: float,
    colors: dict[str, Any],
    teacher_area: float | None = None,
    note: str | None = None,
) -> Path:
    """Left: each student's Area@level over the epochs of its snapshots (the teacher's as a
    dashed line). Right, with a teacher: the teacher's Area@level minus the student's, the
    line of EA-KD's Figures 7 and B2 (closer to 0: a surface closer to the teacher's)."""
    if not series:
        raise ValueError("plot_area_epochs needs at least one student with snapshots")
    fig, axes = _subplots(2 if teacher_area is not None else 1, width=5.2, height=4.2)
    ax = axes[0][0]
    for s in series:
        ax.plot(s.epochs, s.areas, marker="o", color=colors.get(s.label), label=s.label)
    if teacher_area is not None:
        ax.axhline(teacher_area, color=TEACHER_COLOR, ls="--", lw=1.2, label="teacher")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"Area@{level:.3g} (squared direction units)")
    ax.set_title(f"Area of the landscape below loss {level:.3g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    epochs = sorted({e for s in series for e in s.epochs})
    ax.set_xticks(epochs)
    if teacher_area is not None:
        ax = axes[0][1]
        for s in series:
            diff = [teacher_area - a for a in s.areas]
            ax.plot(s.epochs, diff, marker="o", color=colors.get(s.label), label=s.label)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"teacher Area@{level:.3g} - student Area@{level:.3g}")
        ax.set_title("Difference from the teacher's Area")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.set_xticks(epochs)
    fig.suptitle(f"Area@{level:.3g} of the students' loss landscapes over training epochs")
    _note(fig, note)
    return _save(fig, path)
