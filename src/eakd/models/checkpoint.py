"""Building models and loading weights the way users already have them.

:func:`build_model` builds a registered or external model, optionally loading a checkpoint.

Accepted files (all read with ``map_location``, CPU by default, so GPU-saved files load anywhere):

* ``{"model": state_dict, ...}``: CRD/RepDistiller teachers (``ckpt_epoch_240.pth`` from
  ``cifar_teachers.tar``) and mdistiller ``student_*`` files;
* ``{"state_dict": ...}`` or ``{"model_state_dict": ...}``; a raw state dict; a pickled module;
* keys prefixed by wrappers: ``module.`` (DataParallel / DDP), ``_orig_mod.`` (torch.compile),
  or any prefix shared by every key; distiller checkpoints (mdistiller ``latest`` / ``best`` /
  ``epoch_N``, keys ``module.student.*``, ``module.teacher.*``, ...) give their ``student.`` part.
  Among these readings the one that matches most of the model's keys is used;
* ``.safetensors`` files (the Hugging Face hub's format, e.g. timm's ``model.safetensors``).

A model wrapped in :class:`~eakd.models.InputAdapter` loads the files of the model inside it.

Files are first read with ``torch.load(weights_only=True)``. Old checkpoints that pickle other
Python objects (numpy scalars, argparse namespaces) fail that; with ``weights_only=None`` (the
default) they are then read with ``weights_only=False`` and a warning says so. That executes the
file's pickle code: only do it for files you trust (``weights_only=True`` refuses instead).
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import sys
import tarfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .external import ExternalModel, build_external
from .input_adapter import InputAdapter
from .registry import ALIASES, MODELS

__all__ = ["build_model", "guess_architecture", "load_checkpoint", "read_state_dict"]

log = logging.getLogger(__name__)

_CONTAINER_KEYS = ("model", "state_dict", "model_state_dict")
_SUBMODEL_PREFIXES = ("student.",)
_SHOW = 5


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"checkpoint file not found: {p} (mdistiller/CRD CIFAR teachers are at "
            f"<root>/cifar_teachers/<name>_vanilla/ckpt_epoch_240.pth once cifar_teachers.tar "
            f"is extracted)"
        )
    if p.is_dir():
        found = sorted(str(q.relative_to(p)) for q in p.rglob("*.pth"))[:_SHOW]
        hint = f"; .pth files inside: {', '.join(found)}" if found else ""
        raise IsADirectoryError(f"checkpoint path {p} is a directory, not a file{hint}")
    return p


def _tar_hint(p: Path) -> str | None:
    """A message for a tar archive of checkpoints (not torch's own legacy tar format)."""
    try:
        if not tarfile.is_tarfile(p):
            return None
        with tarfile.open(p) as tar:
            names = tar.getnames()
    except (OSError, tarfile.TarError):
        return None
    if {"pickle", "storages", "tensors"} <= {n.split("/")[-1] for n in names}:
        return None  # torch's pre-1.0 tar serialisation: torch.load's business
    inner = [n for n in names if n.endswith((".pth", ".pt", ".ckpt", ".bin"))]
    listing = ", ".join(inner[:_SHOW]) + (" ..." if len(inner) > _SHOW else "")
    return (
        f"{p} is a tar archive, not a PyTorch checkpoint: extract it first "
        f"(tar -xf {p.name}) and load one of the files inside"
        + (f" ({listing})" if listing else "")
    )


def _torch_load(p: Path, map_location: Any, weights_only: bool | None) -> Any:
    if weights_only is False:
        return torch.load(p, map_location=map_location, weights_only=False)
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as e:
        msg = str(e)
        if "Weights only load failed" not in msg and "legacy .tar format" not in msg:
            raise
        hint = _tar_hint(p)
        if hint is not None:
            raise ValueError(hint) from e
        if weights_only:
            raise ValueError(
                f"{p} cannot be read with weights_only=True (it pickles Python objects besides "
                f"tensors, or uses the pre-1.0 tar format). If you trust the file, pass "
                f"weights_only=False"
            ) from e
        obj = torch.load(p, map_location=map_location, weights_only=False)
        warnings.warn(
            f"{p} pickles Python objects besides tensors (a legacy checkpoint), so it was read "
            f"with torch.load(weights_only=False), which runs the file's pickle code; only do "
            f"this for files you trust (pass weights_only=True to refuse such files)",
            UserWarning,
            stacklevel=4,
        )
        return obj


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _unwrap(obj: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _CONTAINER_KEYS:
            if key in obj and (isinstance(obj[key], nn.Module) or _is_state_dict(obj[key])):
                return _unwrap(obj[key], where)
        keys = ", ".join(repr(k) for k in list(obj)[:10])
        raise ValueError(
            f"{where} holds a dict without a state dict: top-level keys {keys}; expected a "
            f"state dict or a dict with one under {', '.join(map(repr, _CONTAINER_KEYS))}"
        )
    raise ValueError(
        f"{where} holds a {type(obj).__name__}, not a state dict or a dict containing one"
    )


def read_state_dict(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device | None = "cpu",
    weights_only: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Read the state dict stored in ``path`` (any accepted container), keys as stored."""
    p = _check_path(path)
    if p.suffix == ".safetensors":
        return _read_safetensors(p, map_location)
    try:
        obj = _torch_load(p, map_location, weights_only)
    except (ModuleNotFoundError, AttributeError) as e:
        raise ValueError(
            f"{p} pickles Python objects whose code is not importable here ({e}); it was probably "
            f"saved with torch.save(model) from another code base: re-save its state_dict there"
        ) from e
    except (ValueError, pickle.UnpicklingError, RuntimeError, KeyError, EOFError, OSError) as e:
        if isinstance(e, (FileNotFoundError, PermissionError)):
            raise
        hint = _tar_hint(p)
        if hint is not None:
            raise ValueError(hint) from e
        if isinstance(e, ValueError):
            raise
        reason = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else "empty"
        raise ValueError(
            f"could not read {p} as a PyTorch checkpoint ({type(e).__name__}: {reason}); the "
            "file is truncated or not a checkpoint: copy or save it again"
        ) from e
    return _unwrap(obj, str(p))


def _read_safetensors(p: Path, map_location: Any) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file (the Hugging Face hub's weight format, e.g. timm's
    ``model.safetensors``): a flat state dict, no pickle."""
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise ImportError(
            f"{p} is a safetensors file: reading it needs the 'safetensors' package "
            f"(pip install safetensors; timm and transformers install it)"
        ) from e
    device = "cpu" if map_location is None else str(map_location)
    try:
        return dict(load_file(p, device=device))
    except Exception as e:  # the package raises its own error types for a malformed file
        raise ValueError(f"could not read {p} as a safetensors file: {e}") from e


def _readings(sd: dict[str, torch.Tensor]) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Candidate key readings: as stored, then with wrapper prefixes removed / a sub-model kept."""
    out = [("", sd)]
    i = 0
    while i < len(out) and len(out) < 12:
        desc, d = out[i]
        i += 1
        firsts = {k.split(".", 1)[0] for k in d}
        if len(firsts) == 1 and all("." in k for k in d):
            p = next(iter(firsts)) + "."
            out.append((f"{desc}stripped {p!r}; ", {k[len(p) :]: v for k, v in d.items()}))
        for p in _SUBMODEL_PREFIXES:
            sub = {k[len(p) :]: v for k, v in d.items() if k.startswith(p)}
            if sub and len(sub) < len(d):
                out.append((f"{desc}kept the {p!r} part; ", sub))
    return out


def _adapt(sd: dict[str, torch.Tensor], target: set[str]) -> tuple[dict[str, torch.Tensor], str]:
    best, best_desc, best_hits = sd, "", -1
    for desc, d in _readings(sd):
        hits = len(target.intersection(d))
        if hits > best_hits:
            best, best_desc, best_hits = d, desc, hits
    return best, best_desc


def _load_target(model: nn.Module) -> nn.Module:
    """The module whose keys a weight file holds: inside input adapters, the network an
    :class:`ExternalModel` wraps (so torchvision / timm files load as they are)."""
    while isinstance(model, InputAdapter):
        model = model.model
    return model.model if isinstance(model, ExternalModel) else model


def _is_timm(model: nn.Module) -> bool:
    while isinstance(model, InputAdapter):
        model = model.model
    return isinstance(model, ExternalModel) and model.name.startswith("timm:")


def _timm_filter(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's own conversion of a weight file for ``model`` (its module's
    ``checkpoint_filter_fn``), as timm applies it to pretrained weights: official release
    layouts, buffers some files carry that timm does not save, resized position tables."""
    module = sys.modules.get(type(model).__module__)
    convert = getattr(module, "checkpoint_filter_fn", None)
    if not callable(convert):
        return sd
    return dict(convert(sd, model))


def _classifier_key(model: nn.Module) -> str | None:
    head: nn.Module | None = None
    get = getattr(model, "get_classifier", None)  # the zoo's and timm's
    if callable(get):
        try:
            head = get()
        except NotImplementedError:
            head = None
    if not isinstance(head, nn.Linear):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    for name, m in model.named_modules():
        if m is head:
            return f"{name}.weight"
    return None


@functools.cache
def _signature(name: str) -> tuple[dict[str, tuple[int, ...]], str | None]:
    """Key -> shape of a registered model (built on the meta device: no memory, no init cost)."""
    try:
        with torch.device("meta"):
            model = MODELS.build(name)
    except Exception:  # a user-registered model that needs arguments: it cannot be guessed
        return {}, None
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return shapes, _classifier_key(model)


def guess_architecture(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Registered model names whose keys and (non-classifier) shapes match ``state_dict``.

    Wrapper prefixes and distiller layouts are handled as in :func:`load_checkpoint`.
    """
    matches: list[str] = []
    for name in MODELS.names():
        shapes, cls_key = _signature(name)
        if not shapes:
            continue
        sd, _ = _adapt(dict(state_dict), set(shapes))
        if set(sd) != set(shapes):
            continue
        head = cls_key.rsplit(".", 1)[0] + "." if cls_key else None
        if all(
            tuple(v.shape) == shapes[k] or (head is not None and k.startswith(head))
            for k, v in sd.items()
        ):
            matches.append(name)
    return matches


def _closest(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, int, int] | None:
    best = None
    for name in MODELS.names():
        shapes, _ = _signature(name)
        if not shapes:
            continue
        sd, _ = _adapt(dict(state_dict), set(shapes))
        common = len(set(sd) & set(shapes))
        score = common / len(set(sd) | set(shapes))
        if best is None or score > best[0]:
            best = (score, name, common, len(shapes))
    if best is None or best[0] < 0.5:
        return None
    return best[1], best[2], best[3]


def _arch_note(sd: Mapping[str, torch.Tensor]) -> str:
    guesses = guess_architecture(sd)
    if guesses:
        return f" The checkpoint's keys look like {' / '.join(map(repr, guesses))}."
    closest = _closest(sd)
    if closest is not None:
        name, common, total = closest
        return f" The nearest registered layout is {name!r} ({common} of its {total} keys)."
    return " Its keys match no registered model."


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def build_model(
    name: str,
    num_classes: int | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by registry name.

    Args:
        name: a registered name (see :func:`eakd.models.list_models`), ``"torchvision:<name>"``
            / ``"timm:<name>"`` for a model from that package (built with random weights), or
            ``"package.module:Constructor"`` for a user model (returned as built).
        num_classes: size of the classifier; ``None`` keeps the constructor's default
            (100 for the CIFAR family, 1000 for ImageNet and external models).
        checkpoint: optional local weight file loaded with :func:`load_checkpoint`
            (strict; accepts mdistiller/RepDistiller/torchvision/trainer layouts).
        **kwargs: constructor options (for example ``double_bn_update`` for wide ResNets);
            an unknown keyword raises ``TypeError`` naming the valid ones.

    Returns:
        a module with ``logits, feats = model(x)`` (see :mod:`eakd.models.base`).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if ":" in name:
        model = build_external(name, **kwargs)
    else:
        model = MODELS.build(ALIASES.get(name, name), **kwargs)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def load_checkpoint(
    model_or_name: nn.Module | str,
    path: str | os.PathLike[str],
    num_classes: int | None = None,
    strict: bool = True,
    map_location: str | torch.device | None = "cpu",
    *,
    weights_only: bool | None = None,
    replace_head: bool = False,
) -> nn.Module:
    """Load a checkpoint file into a model (or build the named model and load it).

    Args:
        model_or_name: a module, or a name for :func:`build_model`.
        path: the checkpoint file (see the module docstring for accepted layouts).
        num_classes: with a name, the classifier size to build (``None``: read it from the
            checkpoint); with a module, a consistency check.
        strict: require the checkpoint's keys to match the model's exactly (after prefix
            handling); with ``False``, missing and unexpected keys are skipped (shapes must still
            agree).
        map_location: where tensors are placed (default CPU, whatever device saved them).
        weights_only: ``None`` tries ``weights_only=True`` and falls back with a warning,
            ``True`` refuses pickled objects, ``False`` reads the full pickle.
        replace_head: do not load the checkpoint's classifier (the weight and bias of the
            final linear layer): the model keeps its own, as initialised. For fine-tuning
            weights trained on other classes (ImageNet's 1000 -> Tiny-ImageNet's 200).

    Returns:
        the model (the same object when a module is given), in whatever train/eval mode it was.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a checkpoint (or a tar archive of them), the class count
            differs (``checkpoint has K classes, the model has C``), or the keys / shapes belong
            to another architecture (missing / unexpected keys listed, with a guess of the
            architecture the keys look like).
    """
    p = _check_path(path)
    sd = read_state_dict(p, map_location=map_location, weights_only=weights_only)

    if isinstance(model_or_name, str):
        name = model_or_name
        what = f"{name!r}"
        if num_classes is None:
            num_classes = _infer_num_classes(name, sd)
        model = build_model(name, num_classes=num_classes)
    elif isinstance(model_or_name, nn.Module):
        model = model_or_name
        what = type(model).__name__
        have = getattr(model, "num_classes", None)
        if num_classes is not None and have is not None and have != num_classes:
            raise ValueError(
                f"num_classes={num_classes} was given but the model has {have} classes; "
                f"build the model with num_classes={num_classes}"
            )
    else:
        raise TypeError(
            f"model_or_name must be an nn.Module or a model name, got "
            f"{type(model_or_name).__name__}"
        )

    target = _load_target(model)
    expected = target.state_dict()
    sd, how = _adapt(sd, set(expected))
    if how:
        log.info("%s: %s", p, how.rstrip("; "))
    if _is_timm(model):
        sd = _timm_filter(target, sd)

    cls_key = _classifier_key(target)
    if replace_head:
        if cls_key is None:
            raise ValueError(f"replace_head: {what} has no final linear classifier to replace")
        head = cls_key.rsplit(".", 1)[0] + "."
        # The model's own head stands in for the checkpoint's (same keys, so strict still holds).
        sd = {k: v for k, v in sd.items() if not k.startswith(head)}
        sd.update({k: v for k, v in expected.items() if k.startswith(head)})
    elif cls_key is not None and cls_key in sd and sd[cls_key].ndim == 2:
        k, c = sd[cls_key].shape[0], expected[cls_key].shape[0]
        if k != c and sd[cls_key].shape[1] == expected[cls_key].shape[1]:
            raise ValueError(
                f"class-count mismatch: checkpoint {p} has {k} classes, the model has {c}; "
                f"build the model with num_classes={k}"
            )

    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_listing(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
        raise ValueError(
            f"checkpoint {p} does not fit {what}: {'; '.join(parts)}."
            f"{_arch_note(sd)} Build the matching model, or pass strict=False to load the "
            f"overlapping keys"
        )
    wrong = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(
            f"checkpoint {p} does not fit {what}: {len(wrong)} tensors differ "
            f"in shape ({_listing(wrong)}).{_arch_note(sd)}"
        )
    target.load_state_dict(sd, strict=strict)
    if not strict and (missing or unexpected):
        log.info(
            "%s: loaded with strict=False; %d missing, %d unexpected keys",
            p,
            len(missing),
            len(unexpected),
        )
    return model


def _infer_num_classes(name: str, sd: dict[str, torch.Tensor]) -> int | None:
    """The class count stored in the checkpoint's classifier, or ``None`` when not found."""
    with torch.device("meta"):
        model = build_model(name)
    target = _load_target(model)
    cls_key = _classifier_key(target)
    sd, _ = _adapt(sd, set(target.state_dict()))
    if cls_key is not None and cls_key in sd and sd[cls_key].ndim == 2:
        return int(sd[cls_key].shape[0])
    return None
