"""Finding where a feature method taps two networks, from the networks themselves.

Feature methods need channel counts and spatial sizes of the student's and the teacher's
intermediate maps. Rather than tables per architecture pair, a dummy forward (eval mode, no
gradient, training flags restored afterwards) reads them off the models, which follow the zoo's
forward contract ``logits, feats = model(x)`` (see :mod:`eakd.models.base`). Nothing here imports
the model zoo: any module with that contract works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["arch_name", "describe_shapes", "input_channels", "probe", "tap_error"]


def arch_name(model: Any) -> str:
    """A readable name of a model for error messages (its class, e.g. ``ResNet``)."""
    return type(model).__name__


def input_channels(model: nn.Module, default: int = 3) -> int:
    """Channels the model's first convolution expects (``default`` when it has none)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Conv3d):
            return int(m.in_channels)
    return default


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run a module in eval mode and restore every submodule's own flag afterwards (the teacher
    may be in eval mode and the student in train mode, or a mixture)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def probe(
    model: nn.Module,
    input_size: int | tuple[int, int] = 32,
    run: Callable[[nn.Module, torch.Tensor], Any] | None = None,
) -> Any:
    """Run ``model`` once on a random ``(2, C, H, W)`` batch in eval mode without gradients.

    The batch comes from a private generator, so the global random state is untouched, and it is
    random rather than zeros so that signs of the outputs are informative (post-ReLU maps are
    non-negative, linear ones are not). ``run(model, x)`` replaces ``model(x)`` when given.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, input_channels(model), h, w, generator=gen).to(_device(model))
    with eval_mode(model):
        return run(model, x) if run is not None else model(x)


def describe_shapes(shapes: Sequence[Sequence[int]]) -> str:
    """``[(64, 32, 32), (256,)]`` -> ``"64x32x32, 256"``."""
    return ", ".join("x".join(str(d) for d in s) for s in shapes) or "none"


def tap_error(method: str, student: Any, teacher: Any, student_shapes, teacher_shapes, why: str):
    """The ValueError of a pair whose feature taps cannot be matched: both architectures, the
    (C, H, W) shapes found on each side, the reason and what to do."""
    return ValueError(
        f"{method} cannot match the feature taps of student {arch_name(student)} "
        f"[{describe_shapes(student_shapes)}] and teacher {arch_name(teacher)} "
        f"[{describe_shapes(teacher_shapes)}]: {why}. Use a pair whose feature pyramids "
        "correspond (the paper's pairs all do), or pick another method for this pair"
    )
