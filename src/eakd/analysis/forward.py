"""Test-set forward passes of a run's student (and its teacher) for the figures that need
per-sample predictions or features: accuracy by entropy segment, t-SNE, loss landscapes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.entropy import entropy
from .runs import Run, lookup

__all__ = ["Outputs", "TeacherSpec", "build_student", "collect_outputs", "data_key", "find_teacher"]


@dataclass
class Outputs:
    """Per-sample outputs of one model on one split, in loader order."""

    logits: torch.Tensor  # (N, C) float32
    targets: torch.Tensor  # (N,) int64
    features: torch.Tensor | None  # (N, D) pooled features, when the model returns them

    @property
    def correct(self) -> torch.Tensor:
        return self.logits.argmax(-1).eq(self.targets)

    def entropy(self, temperature: float) -> torch.Tensor:
        return entropy(self.logits, temperature)


@dataclass
class TeacherSpec:
    """How to rebuild the teacher: architecture, its keyword arguments, the weight file."""

    name: str
    kwargs: dict[str, Any]
    checkpoint: Path
    source: str  # where the spec came from, for the report
    input: dict[str, Any] | None = None  # the model's own input (teacher.input), if any

    def build(self, num_classes: int, data_name: str | None = None) -> nn.Module:
        return _rebuild(self.name, self.kwargs, self.input, num_classes, data_name, self.checkpoint)


def _rebuild(name, kwargs, input_spec, num_classes, data_name, checkpoint) -> nn.Module:
    """A model as its run built it (wrapped in its InputAdapter when the config gives an
    ``input`` section), with the weights of ``checkpoint``, in eval mode."""
    from ..config import from_dict
    from ..models import InputAdapter, InputSpec, build_model, load_checkpoint

    model = build_model(name, num_classes=num_classes, **kwargs)
    if input_spec:
        from ..data import dataset_info

        info = dataset_info(str(data_name))
        spec = from_dict(InputSpec, dict(input_spec), "input")
        model = InputAdapter.from_spec(model, spec, info.mean, info.std)
    load_checkpoint(model, checkpoint)
    return model.eval()


def data_key(run: Run) -> str:
    """Runs with the same key evaluate on the same test set (in the same order)."""
    d = run.config.get("data", {})
    return repr((d.get("name"), d.get("root"), sorted((d.get("options") or {}).items())))


def build_student(run: Run, which: str = "last") -> nn.Module:
    """The run's student with the weights of its checkpoint ``which`` (``last``, ``best``), in
    eval mode."""

    name = lookup(run.config, "student.name")
    kwargs = dict(lookup(run.config, "student.kwargs", {}) or {})
    spec = lookup(run.config, "student.input")
    data_name = lookup(run.config, "data.name")
    return _rebuild(name, kwargs, spec, run.num_classes, data_name, run.checkpoint(which))


def find_teacher(runs: list[Run], teacher: str | os.PathLike[str] | None = None) -> TeacherSpec:
    """The teacher of ``runs``: ``teacher`` (a checkpoint file) if given, else the
    ``teacher.checkpoint`` of the first distillation run that names one.

    The architecture comes from the checkpoint itself when ``eakd train`` wrote it (its
    ``config`` or ``arch``), else from the runs' ``teacher.name`` / ``teacher.kwargs``.

    Raises:
        FileNotFoundError: the checkpoint does not exist, or no run names one.
        ValueError: the architecture cannot be determined.
    """
    cfg_teacher = next(
        (r.config["teacher"] for r in runs if r.method != "vanilla" and r.config.get("teacher")),
        None,
    )
    if teacher is not None:
        path, source = Path(teacher).expanduser(), "--teacher"
    elif cfg_teacher and cfg_teacher.get("checkpoint"):
        path, source = Path(cfg_teacher["checkpoint"]).expanduser(), "teacher.checkpoint"
    else:
        raise FileNotFoundError(
            "no teacher checkpoint: the runs' configs name none (a teacher without "
            "teacher.checkpoint was random and cannot be rebuilt); pass --teacher CKPT"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher checkpoint not found: {path} (from {source}); pass --teacher CKPT with "
            "the teacher's weight file"
        )
    meta = torch.load(path, map_location="cpu", weights_only=True)
    name, kwargs, spec = None, {}, None
    if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
        name = lookup(meta["config"], "student.name")  # a teacher trained with eakd train
        kwargs = dict(lookup(meta["config"], "student.kwargs", {}) or {})
        spec = lookup(meta["config"], "student.input")
    if name is None and isinstance(meta, dict) and isinstance(meta.get("arch"), str):
        name = meta["arch"]
    if name is None and cfg_teacher and cfg_teacher.get("name"):
        name, kwargs = cfg_teacher["name"], dict(cfg_teacher.get("kwargs") or {})
    if cfg_teacher and cfg_teacher.get("input"):  # the distillation run's own adapter wins
        spec = cfg_teacher["input"]
    if name is None:
        raise ValueError(
            f"cannot tell the architecture of the teacher in {path}: the file records none and "
            "no run config names teacher.name"
        )
    return TeacherSpec(str(name), kwargs, path, source, spec)


def split_dataset(run: Run, split: str = "test"):
    """The run's dataset split with its test-time pipeline (no augmentation)."""
    from ..data import build_dataset, build_transform

    d = run.config.get("data", {})
    tf = build_transform(d["name"], "test")
    return build_dataset(d["name"], d.get("root"), split, transform=tf, **(d.get("options") or {}))


def split_loader(run: Run, split: str = "test", batch_size: int | None = None):
    """In-order loader over the run's split (the order the engine recorded entropies in)."""
    from ..data import build_loader

    bs = batch_size or int(lookup(run.config, "data.test_batch_size", 256))
    return build_loader(split_dataset(run, split), bs, False, 0)


@torch.no_grad()
def collect_outputs(model: nn.Module, loader, device: torch.device) -> Outputs:
    """Logits, targets and pooled features (``feats["pooled_feat"]``) over ``loader``."""
    model.eval().to(device)
    logits, targets, feats = [], [], []
    for batch in loader:
        x, y = batch[0].to(device), batch[-1]
        out = model(x)
        z = out[0] if isinstance(out, (tuple, list)) else out
        logits.append(z.float().cpu())
        targets.append(y.cpu())
        extra = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
        f = extra.get("pooled_feat") if isinstance(extra, dict) else None
        if isinstance(f, torch.Tensor):
            feats.append(f.float().flatten(1).cpu())
    features = torch.cat(feats) if feats and len(feats) == len(logits) else None
    return Outputs(torch.cat(logits), torch.cat(targets).long(), features)
