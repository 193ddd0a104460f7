"""The schema of an LLM distillation experiment (bound strictly from YAML by ``eakd.config``).

Defaults follow the DistiLLM recipe the EA-KD paper uses for GPT-2 XL -> GPT-2 on Dolly
(METHODS.md 11.1 and 12): AdamW 5e-4, cosine decay without warm-up, weight decay 0.01,
gradient clipping 1.0, 20 epochs, prompt 256 / sequence 512 tokens, ``kd_ratio`` 1.0, Rouge-L
over seeds 10-50 with top-k 0 / top-p 1.0 / temperature 1.0 sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ...config import from_dict
from .evaluate import GenerationConfig
from .task import ObjectiveConfig

__all__ = [
    "DataConfig",
    "EvalConfig",
    "LLMConfig",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "bind_config",
]

Dtype = Literal["float32", "bfloat16", "float16"]


@dataclass
class ModelConfig:
    """Local model folders (``save_pretrained`` layout) or GGUF files; nothing is downloaded.

    ``student_layers`` builds the student from a subset of the teacher's decoder layers
    instead of loading ``student``.
    """

    teacher: str | None = None
    teacher_gguf_file: str | None = None
    student: str | None = None
    student_gguf_file: str | None = None
    student_layers: list[int] | None = None
    tokenizer: str | None = None
    dtype: Dtype = "float32"
    teacher_dtype: Dtype = "float32"


@dataclass
class DataConfig:
    """Dolly-format JSONL files. Without ``valid``, ``valid_size`` examples of ``train`` are
    held out (DistiLLM holds out 1000)."""

    train: str | None = None
    valid: str | None = None
    valid_size: int = 0
    split_seed: int = 1
    max_length: int = 512
    max_prompt_length: int = 256
    limit: int | None = None


@dataclass
class LossConfig(ObjectiveConfig):
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd"] = (
        "forward_kl"
    )
    granularity: Literal["token", "sequence"] = "sequence"
    kind: Literal[
        "ea", "base", "interact", "student", "inverse_teacher", "inverse_student", "none"
    ] = "ea"


@dataclass
class TrainConfig:
    output_dir: str = "runs/llm"
    epochs: int = 20
    max_steps: int | None = None
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = 1.0
    seed: int = 10
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    cpu: bool = False
    save_every_steps: int | None = None
    keep_checkpoints: int = 2
    log_every_steps: int = 10
    select_best: bool = True
    valid_seeds: list[int] = field(default_factory=lambda: [10])
    valid_max_examples: int | None = 500


@dataclass
class EvalConfig(GenerationConfig):
    """``datasets`` maps a name to a Dolly-format JSONL file (e.g. dolly, self_inst, vicuna,
    sinst, uinst); ``checkpoint`` defaults to ``<output_dir>/best`` (else ``final``).
    ``max_examples`` caps every dataset (the first examples of each file);
    ``dataset_max_examples`` caps single ones (MiniLLM/DistiLLM score UnNI on its first 10k)."""

    checkpoint: str | None = None
    datasets: dict[str, str] = field(default_factory=dict)
    max_examples: int | None = None
    dataset_max_examples: dict[str, int] = field(default_factory=dict)
    output: str | None = None


@dataclass
class LLMConfig:
    name: str = "llm"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def bind_config(data: dict[str, Any] | LLMConfig) -> LLMConfig:
    """Bind a loaded YAML mapping to :class:`LLMConfig` (unknown keys / wrong types raise)."""
    if isinstance(data, LLMConfig):
        return data
    cfg = from_dict(LLMConfig, data)
    stray = sorted(set(cfg.eval.dataset_max_examples) - set(cfg.eval.datasets))
    if stray:
        raise ValueError(
            f"eval.dataset_max_examples names {stray}, which are not in eval.datasets "
            f"({sorted(cfg.eval.datasets)})"
        )
    if cfg.loss.chunk_size is not None and cfg.loss.chunk_size < 1:
        raise ValueError(f"loss.chunk_size must be a positive integer or null, got {cfg.loss}")
    if cfg.train.gradient_accumulation_steps < 1 or cfg.train.batch_size < 1:
        raise ValueError("train.batch_size and train.gradient_accumulation_steps must be >= 1")
    return cfg
