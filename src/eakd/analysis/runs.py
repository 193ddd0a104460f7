"""Finding and reading classification run directories written by ``eakd train`` / ``eakd sweep``.

A *run* is a directory holding ``config.yaml`` and ``results.json`` (or ``checkpoints/last.pt``
while it is still training). Sweeps lay runs out as ``<sweep>/<variant>/seed<k>/``; the runs of
one variant directory form a *group* (the same method over several seeds).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

__all__ = ["METHOD_NAMES", "Group", "Run", "find_runs", "group_runs", "lookup"]

#: Display names of the engine's methods (``vanilla`` students learn from labels only).
METHOD_NAMES = {
    "vanilla": "CE",
    "kd": "KD",
    "dkd": "DKD",
    "ctkd": "CTKD",
    "mld": "MLD",
    "ttm": "TTM",
    "wttm": "WTTM",
}
_METHOD_ORDER = list(METHOD_NAMES)
_SEED_DIR = re.compile(r"seed(\d+)$")


def lookup(data: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``lookup(cfg, "method.loss.beta")``: a nested value, or ``default`` when absent."""
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


@dataclass
class Run:
    """One training run directory."""

    path: Path
    config: dict[str, Any]
    results: dict[str, Any] | None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Run:
        import yaml

        p = Path(path)
        cfg_path = p / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"{p} is not a run directory: it has no config.yaml (a run written by eakd "
                "train holds config.yaml, results.json, train_log.csv and checkpoints/)"
            )
        config = yaml.safe_load(cfg_path.read_text()) or {}
        res_path = p / "results.json"
        results = json.loads(res_path.read_text()) if res_path.is_file() else None
        return cls(p, config, results)

    # -- identity ----------------------------------------------------------------------
    @property
    def method(self) -> str:
        return str(lookup(self.config, "method.name", "vanilla"))

    @property
    def ea(self) -> bool:
        return bool(lookup(self.config, "ea.enabled", False)) and self.method != "vanilla"

    @property
    def seed(self) -> int:
        return int(lookup(self.config, "train.seed", 0))

    @property
    def group_key(self) -> str:
        """Runs of one sweep variant (``<variant>/seed<k>``) share a key."""
        parent = self.path.parent if _SEED_DIR.search(self.path.name) else self.path
        return str(parent.resolve())

    @property
    def variant(self) -> str:
        return Path(self.group_key).name

    @property
    def base_label(self) -> str:
        """``CE``, ``KD``, ``EA-KD``, ``EA-DKD+LS``, ``EA-KD[base]`` (ablation weights)."""
        name = METHOD_NAMES.get(self.method, self.method.upper())
        if lookup(self.config, "method.loss.standardize", False):
            name += "+LS"
        if self.ea:
            kind = lookup(self.config, "ea.kind", "ea")
            name = "EA-" + name + ("" if kind == "ea" else f"[{kind}]")
        return name

    @property
    def sort_key(self) -> tuple:
        m = self.method
        return (_METHOD_ORDER.index(m) if m in _METHOD_ORDER else len(_METHOD_ORDER), m, self.ea)

    # -- recorded data -------------------------------------------------------------------
    @cached_property
    def num_classes(self) -> int:
        from ..data import dataset_info

        return int(dataset_info(str(lookup(self.config, "data.name"))).num_classes)

    @property
    def ea_temperature(self) -> float:
        """The entropy temperature ``T'`` the run recorded its entropies at."""
        from ..engines.classification.task import ea_settings

        exp = self.experiment
        return float(ea_settings(exp.method, exp.ea, self.num_classes)["temperature"])

    @cached_property
    def experiment(self):
        """The run's config bound to :class:`ExperimentConfig` (validated)."""
        from ..config import from_dict
        from ..engines.classification.config import ExperimentConfig

        return from_dict(ExperimentConfig, self.config)

    def diagnostics(self) -> list[dict[str, Any]]:
        """Per-epoch rows of ``diagnostics.jsonl`` (empty for runs without a teacher)."""
        p = self.path / "diagnostics.jsonl"
        if not p.is_file():
            return []
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        by_epoch = {r["epoch"]: r for r in rows}  # a resumed run may repeat an epoch
        return [by_epoch[e] for e in sorted(by_epoch)]

    def teacher_entropies(self) -> torch.Tensor | None:
        """Test-set teacher entropies at ``T'`` (float32, test-loader order), if recorded."""
        p = self.path / "entropies" / "teacher.pt"
        return torch.load(p, map_location="cpu", weights_only=True).float() if p.is_file() else None

    def student_entropies(self) -> dict[int, torch.Tensor]:
        """``{epoch: test-set student entropies at T'}`` for every recorded evaluation."""
        out = {}
        for p in sorted((self.path / "entropies").glob("student_epoch*.pt")):
            epoch = int(p.stem.removeprefix("student_epoch"))
            out[epoch] = torch.load(p, map_location="cpu", weights_only=True).float()
        return out

    def checkpoint(self, which: str = "last") -> Path:
        p = self.path / "checkpoints" / f"{which}.pt"
        if not p.is_file():
            raise FileNotFoundError(
                f"{self.path} has no checkpoints/{which}.pt; the run did not finish an epoch "
                "(or its checkpoints were removed)"
            )
        return p

    def metric(self, key: str) -> float | None:
        """A number from ``results.json`` (``best_top1``, ``last_top1``, ``step_time_s``)."""
        if self.results is None:
            return None
        v = self.results.get(key)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


@dataclass
class Group:
    """The runs of one variant (several seeds), shown under one label."""

    key: str
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def representative(self) -> Run:
        """The lowest seed: what per-run figures show."""
        return self.runs[0]

    @property
    def method(self) -> str:
        return self.representative.method

    @property
    def ea(self) -> bool:
        return self.representative.ea


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (
        (path / "results.json").is_file() or (path / "checkpoints" / "last.pt").is_file()
    )


def find_runs(paths: list[str | os.PathLike[str]]) -> list[Run]:
    """Every run directory at or below ``paths`` (each a run, a sweep, or a folder of them).

    Raises:
        FileNotFoundError: a path does not exist or holds no run.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"no such run or sweep directory: {root}")
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is a file; pass a run or sweep directory")
        hits, seen = [], set()
        for dirpath, dirnames, _ in os.walk(root, followlinks=True):
            d = Path(dirpath)
            real = os.path.realpath(d)
            if real in seen:  # a symlink cycle, or the same folder linked twice
                dirnames[:] = []
                continue
            seen.add(real)
            if _is_run(d):
                hits.append(d)
                dirnames[:] = []  # a run's subdirectories hold no runs
            else:
                dirnames.sort()
        if not hits:
            raise FileNotFoundError(
                f"{root} holds no run: expected RUN/config.yaml with RUN/results.json (a run of "
                "eakd train) or SWEEP/<variant>/seed<k>/ (eakd sweep)"
            )
        for h in hits:
            found[h.resolve()] = None
    return [Run.load(p) for p in found]


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by variant, ordered CE, KD, EA-KD, DKD, EA-DKD, ...; labels made unique
    by appending the variant directory's name where two variants share a method label."""
    groups: dict[str, Group] = {}
    for run in runs:
        groups.setdefault(run.group_key, Group(run.group_key, run.base_label)).runs.append(run)
    ordered = sorted(
        groups.values(), key=lambda g: (g.representative.sort_key, g.representative.variant)
    )
    for g in ordered:
        g.runs.sort(key=lambda r: (r.seed, str(r.path)))
    counts: dict[str, int] = {}
    for g in ordered:
        counts[g.label] = counts.get(g.label, 0) + 1
    for g in ordered:
        if counts[g.label] > 1:
            g.label = f"{g.label} ({_variant_suffix(g.representative.variant)})"
    return ordered


def _variant_suffix(variant: str) -> str:
    """``kd+method.loss.temperature=2`` -> ``temperature=2`` (the method is in the label)."""
    parts = [p for p in variant.split("+") if "=" in p]
    if not parts:
        return variant
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in (p.split("=", 1) for p in parts))
