"""Models from other packages behind the same forward contract: ``"torchvision:<name>"`` and
``"timm:<name>"``; and user models by import path, ``"package.module:Constructor"``.

The package is imported only when such a name is built. Weights are never downloaded: the model
is built with random weights (torchvision ``weights=None``, timm ``pretrained=False``) and a
local file can be loaded with ``build_model(name, checkpoint=PATH)`` (the torchvision / timm
key layout, loaded into the wrapped model).

The wrapper returns ``logits, feats`` where only ``feats["pooled_feat"]`` is filled: it is the
input of the model's final ``nn.Linear`` (timm's ``get_classifier()``, else the last linear layer
registered), captured with a forward hook, flattened to ``(N, D)``; it is ``None`` when the model
has no final linear layer. ``feats["feats"]`` and ``feats["preact_feats"]`` are empty lists, so
external models serve logit-based methods (KD, DKD, MLD, ...). Feature methods (ReviewKD, FCFD)
need a zoo model, for example ``imagenet_resnet50``, which has torchvision's keys.

A user model named by import path (``"my_project.nets:TinyNet"``; the module must be importable)
is called with the keywords and returned unwrapped: it should return ``(logits, feats)`` like the
zoo (or plain logits, which serve logit methods only).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import torch
from torch import nn

from ..registry import bind_kwargs
from .base import FeatureModel, Features, check_num_classes

__all__ = ["ExternalModel", "build_external"]

_SOURCES = {"torchvision": "torchvision", "timm": "timm"}
_REFUSED = ("weights", "pretrained", "pretrained_cfg", "weights_backbone")


def _import(source: str) -> Any:
    try:
        return importlib.import_module(_SOURCES[source])
    except ImportError as e:
        raise ImportError(
            f"model source {source!r} needs the {_SOURCES[source]!r} package, which is not "
            f"installed; install it (pip install {_SOURCES[source]}) or use a registered model "
            f"(eakd.models.list_models())"
        ) from e


def build_external(name: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build ``"torchvision:<arch>"`` or ``"timm:<arch>"`` with random weights, wrapped in
    :class:`ExternalModel`; or call the constructor named by ``"package.module:Constructor"``.

    ``num_classes`` sets the classifier size (package default 1000 when ``None``); other keywords
    go to the package's constructor. Weight-download options are refused.
    """
    source, _, arch = name.partition(":")
    if not source or not arch:
        raise ValueError(
            f"external model names look like 'torchvision:resnet50', 'timm:resnet50' or "
            f"'package.module:Constructor', got {name!r}"
        )
    if source not in _SOURCES:
        return _build_from_path(name, source, arch, num_classes, kwargs)
    for key in _REFUSED:
        if key in kwargs:
            raise ValueError(
                f"{key!r} is not accepted for {name!r}: weights are never downloaded; build it "
                f"with random weights and pass checkpoint=PATH (a local weight file) instead"
            )
    if num_classes is not None:
        kwargs["num_classes"] = check_num_classes(num_classes)
    pkg = _import(source)
    if source == "torchvision":
        available = pkg.models.list_models()
        if arch not in available:
            raise ValueError(_unknown(name, arch, available))
        model = pkg.models.get_model(arch, weights=None, **kwargs)
    else:
        available = pkg.list_models()
        # timm names may carry a pretrained tag ("vit_small_patch16_224.augreg_in21k").
        if arch.split(".")[0] not in available:
            raise ValueError(_unknown(name, arch, available))
        model = pkg.create_model(arch, pretrained=False, **kwargs)
    return ExternalModel(model, name)


def _build_from_path(
    name: str, module: str, attr: str, num_classes: int | None, kwargs: dict[str, Any]
) -> nn.Module:
    if not all(part.isidentifier() for part in module.split(".")) or not attr.isidentifier():
        raise ValueError(
            f"{name!r} is neither a registered model nor 'torchvision:<name>', 'timm:<name>' or "
            f"an import path 'package.module:Constructor'"
        )
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"model {name!r}: cannot import module {module!r} ({e}); make it importable "
            f"(install it, or add its folder to PYTHONPATH)"
        ) from e
    ctor = getattr(mod, attr, None)
    if not callable(ctor):
        raise ValueError(f"model {name!r}: module {module!r} has no callable {attr!r}")
    if num_classes is not None:
        kwargs["num_classes"] = check_num_classes(num_classes)
    bind_kwargs(ctor, kwargs, f"model {name!r}")
    model = ctor(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {name!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _unknown(name: str, arch: str, available: list[str]) -> str:
    near = difflib.get_close_matches(arch, available, n=3)
    hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    return f"unknown external model {name!r}{hint}"


def _final_linear(model: nn.Module) -> nn.Linear | None:
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        if isinstance(head, nn.Linear):
            return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


class ExternalModel(FeatureModel):
    """Wraps a plain classifier ``model(x) -> logits`` into ``(logits, Features)``.

    The wrapped module is ``self.model``; its ``state_dict`` keys therefore carry a ``model.``
    prefix here, which :func:`eakd.models.load_checkpoint` handles in both directions.
    """

    def __init__(self, model: nn.Module, name: str = "external") -> None:
        super().__init__()
        self.model = model
        self.name = name
        head = _final_linear(model)
        # Kept in a tuple so the head is not registered twice (it would duplicate its keys).
        self._head: tuple[nn.Linear, ...] = (head,) if head is not None else ()
        self.num_classes: int | None = head.out_features if head is not None else None
        self._pooled: torch.Tensor | None = None
        if head is not None:
            head.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._pooled = torch.flatten(args[0], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Features]:
        self._pooled = None
        out = self.model(x)
        # Auxiliary-head models (GoogLeNet, Inception v3) return a named tuple in training mode.
        logits = out if isinstance(out, torch.Tensor) else out.logits
        pooled, self._pooled = self._pooled, None
        return logits, {"feats": [], "preact_feats": [], "pooled_feat": pooled}

    def get_stage_channels(self) -> list[int]:
        return []

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{self.name} exposes no stages; use a zoo model for that")

    def get_feat_modules(self) -> nn.ModuleList:
        raise NotImplementedError(
            f"{self.name} is an external model with no stage features; feature-based methods "
            f"need a zoo model (eakd.models.list_models())"
        )

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        raise NotImplementedError(
            f"{self.name} is an external model with no stage features; feature-based methods "
            f"need a zoo model (eakd.models.list_models())"
        )

    def get_classifier(self) -> nn.Linear:
        if not self._head:
            raise NotImplementedError(f"{self.name} has no final nn.Linear classifier")
        return self._head[0]
