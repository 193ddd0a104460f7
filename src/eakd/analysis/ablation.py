"""EA-KD's ablations as sweeps, printed in the paper's layout.

* Table 1: reweighting with ``w = H_T`` or ``w = H_S`` and the inverted ``H_ub - w``, against
  the unweighted loss (``ea.kind`` = ``none``, ``base``, ``student``, ``inverse_teacher``,
  ``inverse_student``).
* Table 9: the parts of ``w_EA``: ``w_base = H_T``, ``w_interact = H_T H_S / H_ub`` and
  ``w_EA = (w_base + w_interact) / 2`` (``ea.kind`` = ``base``, ``interact``, ``ea``).
* Table 8: the entropy temperature ``T'`` in {2, 3, 4} with ``w_EA``.

Each ablation is an ``eakd sweep`` (``run_sweep``): finished runs are reused and stopped ones
resumed, so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_open
from ..config import from_dict
from ..data import dataset_info
from ..engines.classification.config import ExperimentConfig
from .runs import lookup, method_label

__all__ = [
    "ABLATION_KINDS",
    "ABLATION_TEMPERATURES",
    "AblationResult",
    "format_table1",
    "format_table8",
    "format_table9",
    "run_ablation",
]

#: The weight kinds of Tables 1 and 9 (``none`` is the unweighted baseline).
ABLATION_KINDS = ("none", "base", "student", "interact", "ea", "inverse_teacher", "inverse_student")
#: The entropy temperatures of Table 8.
ABLATION_TEMPERATURES = (2.0, 3.0, 4.0)


@dataclass
class AblationResult:
    """Per weight kind and per ``T'``: the top-1 values (%) of every seed."""

    method: str
    teacher: str
    student: str
    kinds: dict[str, list[float]] = field(default_factory=dict)
    temperatures: dict[float, list[float]] = field(default_factory=dict)
    metric: str = "best"
    root: Path | None = None
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"# EA-KD ablations ({self.metric} top-1, %, mean +/- std over seeds)"]
        if self.kinds:
            parts += ["", "## Table 1: entropy-based reweighting", "", format_table1(self)]
            parts += ["", "## Table 9: reweighting factors", "", format_table9(self)]
        if self.temperatures:
            parts += ["", "## Table 8: entropy temperature T'", "", format_table8(self)]
        if self.notes:
            parts += ["", *[f"Note: {n}" for n in self.notes]]
        return "\n".join(parts) + "\n"


def _mean(values: Sequence[float] | None) -> float:
    return statistics.fmean(values) if values else math.nan


def _cell(values: Sequence[float] | None, ref: Sequence[float] | None = None) -> str:
    """``75.14 +/- 0.12 (+1.81)``: mean, std over seeds, difference of the means to ``ref``."""
    if not values:
        return "-"
    text = f"{_mean(values):.2f}"
    if len(values) > 1:
        text += f" +/- {statistics.stdev(values):.2f}"
    if ref:
        text += f" ({_mean(values) - _mean(ref):+.2f})"
    return text


def format_table1(res: AblationResult) -> str:
    """Table 1's layout: rows L, w L, (H_ub - w) L; columns w from H_T and from H_S."""
    k = res.kinds
    name = method_label(res.method)
    base = k.get("none")
    return "\n".join(
        [
            "| loss | w = H_T | w = H_S |",
            "|---|---|---|",
            f"| L_{name} (w = 1) | {_cell(base)} | |",
            f"| w * L_{name} | {_cell(k.get('base'), base)} | {_cell(k.get('student'), base)} |",
            f"| (H_ub - w) * L_{name} | {_cell(k.get('inverse_teacher'), base)} | "
            f"{_cell(k.get('inverse_student'), base)} |",
        ]
    )


def format_table9(res: AblationResult) -> str:
    """Table 9's layout: the method's accuracy, then w_base, w_interact and w_EA."""
    k = res.kinds
    name = method_label(res.method)
    base = k.get("none")
    return "\n".join(
        [
            "| method | acc. | w_base | w_interact | w_EA |",
            "|---|---|---|---|---|",
            f"| {name} | {_cell(base)} | {_cell(k.get('base'), base)} | "
            f"{_cell(k.get('interact'), base)} | {_cell(k.get('ea'), base)} |",
        ]
    )


def format_table8(res: AblationResult) -> str:
    """Table 8's layout: teacher, student, then one column per ``T'``."""
    temps = sorted(res.temperatures)
    head = " | ".join(f"T' = {t:g}" for t in temps)
    cells = " | ".join(_cell(res.temperatures[t]) for t in temps)
    return "\n".join(
        [
            f"| teacher | student | {head} |",
            "|---|---|" + "---|" * len(temps),
            f"| {res.teacher} | {res.student} | {cells} |",
        ]
    )


def _per_seed(rows: list[dict[str, Any]], metric: str) -> dict[str, list[float]]:
    key = "per_seed_best" if metric == "best" else "per_seed_last"
    return {r["variant"]: [float(v) for v in r[key]] for r in rows}


def run_ablation(
    base: dict[str, Any],
    seeds: Sequence[int],
    kinds: Sequence[str] = ABLATION_KINDS,
    temperatures: Sequence[float] = ABLATION_TEMPERATURES,
    metric: str = "best",
    quiet: bool = True,
    train_fn: Callable[..., dict[str, Any]] | None = None,
) -> AblationResult:
    """Run the weight-kind and ``T'`` ablations of ``base`` (a config dict) and tabulate them.

    Runs go to ``<output_dir>/<name>-ablation/weights/ea.kind=<kind>/seed<k>/`` and
    ``.../temperature/ea.temperature=<T'>/seed<k>/``; the ``T'`` of ``base`` is taken from the
    ``ea`` kind of the weight sweep instead of being trained twice. ``ablation.md`` in the
    ablation folder holds the tables.

    Args:
        base: an experiment config with a distillation method (EA is switched on here).
        seeds: training seeds of every variant.
        kinds: weight kinds (see :data:`ABLATION_KINDS`); empty skips Tables 1 and 9.
        temperatures: values of ``T'``; empty skips Table 8.
        metric: ``best`` or ``last`` top-1.
        quiet: no per-run lines.
        train_fn: passed to ``run_sweep`` (tests).
    """
    from ..engines.classification.sweep import run_sweep

    if metric not in ("best", "last"):
        raise ValueError(f"metric must be 'best' or 'last', got {metric!r}")
    exp = from_dict(ExperimentConfig, base)
    method = exp.method.name
    if method == "vanilla":
        raise ValueError(
            "the ablations reweight a distillation loss: set method.name to kd, dkd, ... "
            "(and teacher.checkpoint), not vanilla"
        )
    bad = [k for k in kinds if k not in ABLATION_KINDS]
    if bad:
        raise ValueError(f"unknown weight kind(s) {bad}; choose from {', '.join(ABLATION_KINDS)}")
    if not seeds:
        raise ValueError("run_ablation needs at least one seed")
    name = str(base.get("name", "experiment"))
    root = Path(str(base.get("output_dir", "runs"))) / f"{name}-ablation"
    result = AblationResult(
        method,
        str(lookup(base, "teacher.name", "-")),
        str(lookup(base, "student.name", "-")),
        metric=metric,
        root=root,
    )

    def sweep(sub: str, grid: list[str], extra: dict[str, Any]) -> dict[str, list[float]]:
        cfg = copy.deepcopy(base)
        cfg["output_dir"], cfg["name"] = str(root), sub
        cfg["ea"] = {**(cfg.get("ea") or {}), "enabled": True, **extra}
        rows, _ = run_sweep(cfg, list(seeds), grid, quiet=quiet, train_fn=train_fn)
        return _per_seed(rows, metric)

    base_t = exp.ea.temperature
    if kinds:
        got = sweep("weights", [f"ea.kind={','.join(kinds)}"], {})
        result.kinds = {k: got[f"ea.kind={k}"] for k in kinds}
    if temperatures:
        # the T' each run would train with once the preset is resolved for the method
        n = dataset_info(exp.data.name).num_classes
        used = [exp.ea.replace(temperature=t).resolve(method, n).temperature for t in temperatures]
        if used != [float(t) for t in temperatures]:
            fixed = ", ".join(sorted({f"{u:g}" for u in used}))
            result.notes.append(
                f"ea.preset={exp.ea.preset} fixes T' = {fixed} for {method_label(method)} (as "
                "the released code does), so Table 8 was not run; use ea.preset=paper"
            )
        else:
            reuse = "ea" in result.kinds
            todo = [t for t in temperatures if not (reuse and math.isclose(t, base_t))]
            got = {}
            if todo:
                grid = [f"ea.temperature={','.join(f'{t:g}' for t in todo)}"]
                got = sweep("temperature", grid, {"kind": "ea"})
            for t in temperatures:
                if reuse and math.isclose(t, base_t):
                    result.temperatures[float(t)] = result.kinds["ea"]
                else:
                    result.temperatures[float(t)] = got[f"ea.temperature={t:g}"]
    with atomic_open(root / "ablation.md") as fh:
        fh.write(result.markdown().encode())
    return result
