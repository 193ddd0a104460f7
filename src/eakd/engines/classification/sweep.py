"""Several seeds and variants of one experiment, summarised like the paper's Tables 2 and C4."""

from __future__ import annotations

import csv
import io
import itertools
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...config import apply_overrides, from_dict
from ..run import RunDir, atomic_write_text
from .config import ExperimentConfig

__all__ = ["expand_grid", "format_table", "run_sweep", "summarize", "sweep_runs"]


def _variant_overrides(key: str, value: str) -> tuple[str, list[str]]:
    """``method=ea_dkd`` -> DKD with EA on; ``method=kd`` -> KD with EA off; other keys are
    dotted config paths."""
    if key == "method":
        from ...objectives import list_methods

        ea = value.startswith("ea_")
        name = value[3:] if ea else value
        if name not in list_methods():
            known = ", ".join(list_methods())
            raise ValueError(
                f"--grid method={value}: unknown method {name!r}; use one of {known}, or "
                "ea_<method> for the method with EA on"
            )
        return value, [f"method.name={name}", f"ea.enabled={str(ea).lower()}"]
    return f"{key}={value}", [f"{key}={value}"]


def expand_grid(grid: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["method=kd,ea_kd", "ea.temperature=2,3"]`` -> named variants with their overrides."""
    axes = []
    for item in grid:
        if "=" not in item:
            raise ValueError(f"--grid {item!r} must look like key=value1,value2")
        key, values = item.split("=", 1)
        options = [v for v in values.split(",") if v]
        if not options:
            raise ValueError(f"--grid {item!r} lists no values")
        axes.append([_variant_overrides(key.strip(), v.strip()) for v in options])
    if not axes:
        return [("base", [])]
    variants = []
    for combo in itertools.product(*axes):
        name = "+".join(label for label, _ in combo)
        variants.append((name, [o for _, ovr in combo for o in ovr]))
    return variants


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per variant: mean/std of best and last top-1 over seeds, and differences of the means to
    the first variant (the baseline)."""
    rows = []
    base = None
    for variant, runs in results.items():
        best = [r["best_top1"] for r in runs]
        last = [r["last_top1"] for r in runs if r.get("last_top1") is not None]
        bm, bs = _mean_std(best)
        lm, ls = _mean_std(last)
        row = {
            "variant": variant,
            "seeds": len(runs),
            "best_mean": bm,
            "best_std": bs,
            "last_mean": lm,
            "last_std": ls,
            "per_seed_best": best,
            "per_seed_last": last,
        }
        if base is None:
            base = row
        row["best_diff"] = bm - base["best_mean"]
        row["last_diff"] = lm - base["last_mean"]
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], baseline_label: str | None = None) -> str:
    """A Markdown table: mean +/- std of best and last top-1 (%), and the difference to the
    first row."""
    base = baseline_label or (rows[0]["variant"] if rows else "")
    lines = [
        f"| variant | seeds | best top-1 (%) | last top-1 (%) | best - {base} | last - {base} |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['seeds']} | {r['best_mean']:.2f} +/- {r['best_std']:.2f} | "
            f"{r['last_mean']:.2f} +/- {r['last_std']:.2f} | {r['best_diff']:+.2f} | "
            f"{r['last_diff']:+.2f} |"
        )
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = [
        "variant",
        "seeds",
        "best_mean",
        "best_std",
        "last_mean",
        "last_std",
        "best_diff",
        "last_diff",
        "per_seed_best",
        "per_seed_last",
    ]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {
                **r,
                "per_seed_best": json.dumps(r["per_seed_best"]),
                "per_seed_last": json.dumps(r["per_seed_last"]),
            }
        )
    return buf.getvalue()


def sweep_runs(
    base: dict[str, Any], seeds: Sequence[int], grid: Sequence[str] = ()
) -> tuple[Path, list[tuple[str, dict[str, Any], RunDir]]]:
    """The sweep's folder ``<output_dir>/<name>`` and, per variant x seed, the variant's name,
    the run's config and its run directory ``<variant>/seed<k>``."""
    root_cfg = from_dict(ExperimentConfig, base)
    sweep_dir = Path(root_cfg.output_dir) / root_cfg.name
    runs = []
    for variant, overrides in expand_grid(grid):
        for seed in seeds:
            data = apply_overrides(base, [*overrides, f"train.seed={seed}"])
            data["output_dir"] = str(sweep_dir / variant)
            data["name"] = f"seed{seed}"
            runs.append((variant, data, RunDir(sweep_dir / variant / data["name"])))
    return sweep_dir, runs


def run_sweep(
    base: dict[str, Any],
    seeds: Sequence[int],
    grid: Sequence[str] = (),
    quiet: bool = True,
    train_fn=None,
) -> tuple[list[dict[str, Any]], Path]:
    """Run every variant x seed (finished runs are reused, stopped ones resumed) and write
    ``sweep.md`` and ``sweep.csv`` next to the runs."""
    from .train import train

    train_fn = train_fn or train
    sweep_dir, runs = sweep_runs(base, seeds, grid)
    # every variant's config is checked before the first run trains
    configs = [from_dict(ExperimentConfig, data) for _, data, _ in runs]
    results: dict[str, list[dict[str, Any]]] = {}
    for (variant, _, run), cfg in zip(runs, configs, strict=True):
        if run.results.exists():
            res = run.read_results()
        else:
            res = train_fn(cfg, resume=run.holds_run(), quiet=quiet)
        results.setdefault(variant, []).append(res)
        if not quiet:
            best, last = res["best_top1"], res["last_top1"]
            print(f"{variant} seed {cfg.train.seed}: best {best:.2f}, last {last:.2f}")
    rows = summarize(results)
    atomic_write_text(sweep_dir / "sweep.md", format_table(rows) + "\n")
    atomic_write_text(sweep_dir / "sweep.csv", _csv(rows))
    return rows, sweep_dir
