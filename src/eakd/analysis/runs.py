"""Finding and reading the run directories of every engine (:class:`eakd.engines.run.RunDir`).

A *run* is a directory holding a config and, once finished, results (or a checkpoint while it
is still training). Sweeps lay runs out as ``<sweep>/<variant>/seed<k>/``; the runs of one
variant directory form a *group* (the same method over several seeds). Classification runs
also record what the figures need (diagnostics, test-set entropies, student checkpoints); a
detection or LLM run is read the same way and simply lacks those (:meth:`Run.missing`).
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..config import from_dict
from ..core import EASettings
from ..engines.classification.config import ExperimentConfig, resolve_ea
from ..engines.classification.train import list_snapshots
from ..engines.run import RunDir, load_state
from ..objectives import list_methods

__all__ = ["LAYOUT", "Group", "Run", "find_runs", "group_runs", "lookup", "method_label"]

#: Every run's paths relative to the run directory, for messages that name a run's file.
LAYOUT = RunDir(".")

_SEED_DIR = re.compile(r"seed(\d+)$")

#: The config section only that engine's config has.
_ENGINE_SECTIONS = {"method": "classification", "model": "llm", "distill": "detection"}

#: The classification config sections that decide the objective and its EA settings: enough to
#: resolve them, and bound alone so that a run written before a training or logging key was
#: renamed still reads.
_OBJECTIVE_SECTIONS = ("student", "teacher", "data", "method", "ea")


def method_label(method: str) -> str:
    """Display name of a method: ``CE`` for ``vanilla`` (labels only), else ``KD``, ``DKD``..."""
    return "CE" if method == "vanilla" else method.upper()


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
    """One training run directory, of any engine."""

    dir: RunDir
    config: dict[str, Any]
    results: dict[str, Any] | None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Run:
        run = RunDir(path)
        results = run.read_results() if run.results.is_file() else None
        return cls(run, run.read_config(), results)

    @property
    def path(self) -> Path:
        return self.dir.root

    # -- identity ----------------------------------------------------------------------
    @property
    def engine(self) -> str:
        """``classification``, ``detection`` or ``llm``: which engine wrote the run."""
        return next((e for k, e in _ENGINE_SECTIONS.items() if k in self.config), "unknown")

    @property
    def method(self) -> str:
        """``vanilla`` (labels only), ``kd``, ...; another engine's as its results name it
        (``n/a`` before it has results)."""
        named = lookup(self.config, "method.name") or (self.results or {}).get("method")
        return str(named or ("vanilla" if self.engine == "classification" else "n/a"))

    @cached_property
    def ea_settings(self) -> EASettings:
        """The EA settings the run trained with, preset resolved.

        A finished run recorded them (its results' "ea"). For a run still training, or one
        that recorded only whether EA was on, a classification run's are resolved from its
        config as the engine does; another engine's are its config's ``ea:`` section.
        """
        recorded = (self.results or {}).get("ea")
        if isinstance(recorded, dict):
            return from_dict(EASettings, recorded, "ea")
        if self.engine != "classification":
            return from_dict(EASettings, self.config.get("ea"), "ea")
        data = {k: v for k, v in self.config.items() if k in _OBJECTIVE_SECTIONS}
        return resolve_ea(from_dict(ExperimentConfig, data), self.num_classes)

    @property
    def ea(self) -> bool:
        return self.method != "vanilla" and self.ea_settings.enabled

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
        name = method_label(self.method)
        if lookup(self.config, "method.loss.standardize", False):
            name += "+LS"
        if self.ea:
            kind = self.ea_settings.kind
            name = "EA-" + name + ("" if kind == "ea" else f"[{kind}]")
        return name

    @property
    def sort_key(self) -> tuple:
        m = self.method
        methods = list_methods()
        return (methods.index(m) if m in methods else len(methods), m, self.ea)

    # -- recorded data -------------------------------------------------------------------
    @cached_property
    def num_classes(self) -> int:
        from ..data import dataset_info

        return int(dataset_info(str(lookup(self.config, "data.name"))).num_classes)

    def diagnostics(self) -> list[dict[str, Any]]:
        """Per-epoch rows of the diagnostics (empty for runs without a teacher); a resumed
        run's repeated epoch counts once."""
        rows = self.dir.read_diagnostics()
        by_epoch = {r.get("epoch", i): r for i, r in enumerate(rows)}
        return [by_epoch[e] for e in sorted(by_epoch)]

    def train_log(self) -> list[dict[str, float | str | None]]:
        """Rows of the training log (numbers as floats), empty before the first row."""
        if not self.dir.train_log.is_file():
            return []
        with self.dir.train_log.open(newline="") as fh:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]

    def teacher_entropies(self) -> torch.Tensor | None:
        """Test-set teacher entropies at ``T'`` (float32, test-loader order), if recorded."""
        p = self.dir.teacher_entropies()
        return load_state(p, "teacher entropies").float() if p.is_file() else None

    def student_entropies(self) -> dict[int, torch.Tensor]:
        """``{epoch: test-set student entropies at T'}`` for every recorded evaluation."""
        return {
            int(re.search(r"\d+$", p.stem)[0]): load_state(p, "student entropies").float()
            for p in self.dir.student_entropy_files()
        }

    def snapshots(self) -> dict[int, Path]:
        """``{epoch: checkpoint}`` of the per-epoch snapshots (``log.save_epochs``), oldest
        first; empty for a run that saved none."""
        return list_snapshots(self.dir)

    def checkpoint(self, which: str = "last") -> Path:
        """The student checkpoint ``which``: ``last``, ``best`` or a snapshot ``epochNNNN``."""
        p = self.dir.checkpoint(which)
        if not p.is_file() and which.startswith("epoch"):
            saved = list(self.snapshots())
            has = f"its snapshots are of epochs {saved}" if saved else "it saved none"
            raise FileNotFoundError(
                f"{self.path} has no {p.relative_to(self.path)}: {has} (train with "
                "log.save_epochs listing the epochs to keep)"
            )
        if not p.is_file():
            raise FileNotFoundError(
                f"{self.path} has no {p.relative_to(self.path)}; the run did not finish an "
                "epoch (or its checkpoints were removed)"
            )
        return p

    def missing(self) -> list[str]:
        """The files the figures read that this run lacks (a detection or LLM run lacks the
        classification ones), relative to the run directory."""
        run = self.dir
        wanted = (run.results, run.diagnostics, run.teacher_entropies(), run.last)
        gone = [str(p.relative_to(run.root)) for p in wanted if not p.is_file()]
        if not run.student_entropy_files():
            gone.append(f"student entropies in {RunDir.entropies.name}/")
        return gone

    def metric(self, key: str) -> float | None:
        """A number from the run's results (``best_top1``, ``last_top1``, ``step_time_s``)."""
        if self.results is None:
            return None
        v = self.results.get(key)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _number(text: str | None) -> float | str | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


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


def _started(run: RunDir) -> bool:
    """A run that finished or wrote a checkpoint (an empty run directory is not one yet)."""
    return run.config.is_file() and (
        run.results.is_file() or (run.checkpoints.is_dir() and any(run.checkpoints.iterdir()))
    )


def find_runs(paths: list[str | os.PathLike[str]]) -> list[Run]:
    """Every run directory at or below ``paths`` (each a run, a sweep, or a folder of them).

    Links are followed (a demo folder links the runs it shows), each directory once.

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
        hits = [run.root for run in RunDir(root).iter_runs() if _started(run)]
        if not hits:
            raise FileNotFoundError(
                f"{root} holds no run: expected RUN/{LAYOUT.config} with RUN/{LAYOUT.results} "
                "(a finished run) or SWEEP/<variant>/seed<k>/ (eakd sweep)"
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
