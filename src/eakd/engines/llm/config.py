"""The schema of an LLM distillation experiment (bound strictly from YAML by ``eakd.config``).

Defaults follow the DistiLLM recipe the EA-KD paper uses for GPT-2 XL -> GPT-2 on Dolly:
AdamW 5e-4, cosine decay without warm-up, weight decay 0.01, gradient clipping 1.0, 20
epochs, prompt 256 / sequence 512 tokens, ``kd_ratio`` 1.0, Rouge-L over seeds 10-50 with
top-k 0 / top-p 1.0 / temperature 1.0 sampling. The ``ea:`` section is
:class:`eakd.core.EASettings`, the same as in every engine; the LLM recipes set ``T' = 1`` and
sequence-level weights there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ...config import from_dict
from ...core import EASettings
from ..run import PRECISIONS
from .evaluate import GenerationConfig
from .task import ObjectiveConfig

__all__ = [
    "DataConfig",
    "EvalConfig",
    "LLMConfig",
    "LoraConfig",
    "LossConfig",
    "ModelConfig",
    "OnPolicyConfig",
    "TrainConfig",
    "bind_config",
]

Dtype = Literal["float32", "bfloat16", "float16"]


@dataclass
class LoraConfig:
    """A LoRA student through ``peft`` (``model.lora:``; ``null``: full fine-tuning).

    Only the adapter trains (``W + (alpha / r) B A`` on the ``target_modules``; ``all-linear``
    is every linear layer but the output head, or give module names such as ``[q_proj,
    v_proj]`` / ``[c_attn]``). Checkpoints hold the adapter in PEFT's layout
    (``adapter_config.json``, ``adapter_model.safetensors``); ``save_merged`` also writes the
    merged model of the run's best (else final) adapter to ``merged/``. ``quantize: 4bit`` is
    QLoRA (Dettmers et al. 2023): the student's base weights loaded in 4-bit NF4 by
    ``bitsandbytes`` on a CUDA device, the adapter computing in ``model.dtype``.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    bias: Literal["none", "all", "lora_only"] = "none"
    quantize: Literal["none", "4bit"] = "none"
    save_merged: bool = False

    def __post_init__(self) -> None:
        if self.r < 1 or not self.alpha > 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"model.lora needs r >= 1, alpha > 0 and dropout in [0, 1), got r={self.r}, "
                f"alpha={self.alpha}, dropout={self.dropout}"
            )
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("model.lora.target_modules is empty; name modules or use all-linear")


@dataclass
class ModelConfig:
    """Local model folders (``save_pretrained`` layout) or GGUF files; nothing is downloaded.

    ``student_layers`` builds the student from a subset of the teacher's decoder layers
    instead of loading ``student``. ``teacher_dtype`` is the frozen teacher's precision
    (``bfloat16`` / ``float16`` halve its memory; float16 is slow on CPUs). ``lora`` makes the
    student a LoRA (or QLoRA) adapter, see :class:`LoraConfig`.

    ``vocab``: ``strict`` (the two output heads must have the same rows) or ``trim``: both
    models' logits are cut to the tokenizer's vocabulary ``len(tokenizer)``, for checkpoints
    of one family whose heads are padded to different sizes (Qwen2.5: 151936 vs 152064 rows);
    ``H_ub`` is then ``log len(tokenizer)``.
    """

    teacher: str | None = None
    teacher_gguf_file: str | None = None
    student: str | None = None
    student_gguf_file: str | None = None
    student_layers: list[int] | None = None
    tokenizer: str | None = None
    dtype: Dtype = "float32"
    teacher_dtype: Dtype = "float32"
    vocab: Literal["strict", "trim"] = "strict"
    lora: LoraConfig | None = None


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

    __renamed__: ClassVar[dict[str, str]] = {
        "ea": "use ea.enabled (the top-level ea: section)",
        "granularity": "use ea.granularity (item or sequence; 'token' is now 'item')",
        "entropy_temperature": "use ea.temperature (T')",
        "max_entropy": "use ea.max_entropy",
        "kind": "use ea.kind",
    }


@dataclass
class OnPolicyConfig:
    """Student-generated responses mixed with the dataset's (GKD, Agarwal et al. 2024).

    With probability ``lmbda`` a micro-batch's responses are replaced by ones the student
    samples from its prompts (``max_new_tokens``, ``temperature``, ``top_k`` (0: off),
    ``top_p``); the teacher then scores those sequences and the labels mask the prompts as
    usual. ``lmbda: 0`` (the default) is the paper's off-policy recipe, ``1`` fully on-policy.
    The draws and the samples depend only on ``train.seed``, the step and the micro-batch, so
    a resumed run continues exactly. For on-policy training at scale (vLLM generation), use
    TRL's trainer through :mod:`eakd.integrations.trl`.
    """

    lmbda: float = 0.0
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.lmbda <= 1.0:
            raise ValueError(f"train.on_policy.lmbda must be in [0, 1], got {self.lmbda}")
        if self.max_new_tokens < 1 or not self.temperature > 0 or self.top_k < 0:
            raise ValueError(
                "train.on_policy needs max_new_tokens >= 1, temperature > 0 and top_k >= 0, "
                f"got {self.max_new_tokens}, {self.temperature}, {self.top_k}"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"train.on_policy.top_p must be in (0, 1], got {self.top_p}")


@dataclass
class TrainConfig:
    """Optimisation and the loop. ``device``: ``auto`` (what Accelerate picks; the processes
    and their GPUs come from ``accelerate launch`` / ``torchrun``), ``cpu`` or ``cuda``.
    ``grad_clip`` clips the global gradient norm (``null`` or 0: no clipping). Every
    ``log_every_steps`` steps a row goes to ``train_log.csv`` (and TensorBoard) and, with
    ``progress``, a line to stdout. A run saves its resumable state every ``save_every_steps``
    steps, else after every epoch. A finite loss above ``loss_ceiling`` warns once that the run
    is probably diverging (0: never). ``trackers`` lists experiment trackers by the names
    Accelerate's ``log_with`` takes (``wandb``, ``mlflow``, ``comet_ml``, ...)."""

    epochs: int = 20
    max_steps: int | None = None
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    grad_clip: float | None = 1.0
    seed: int = 10
    precision: Literal[PRECISIONS] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None
    deterministic: bool = False
    progress: bool = True
    tensorboard: bool = True
    save_every_steps: int | None = None
    loss_ceiling: float = 1e4
    trackers: list[str] = field(default_factory=list)
    log_every_steps: int = 10
    select_best: bool = True
    valid_seeds: list[int] = field(default_factory=lambda: [10])
    valid_max_examples: int | None = 500
    on_policy: OnPolicyConfig = field(default_factory=OnPolicyConfig)

    __renamed__: ClassVar[dict[str, str]] = {
        "output_dir": "use the top-level output_dir and name (the run is <output_dir>/<name>)",
        "mixed_precision": "use train.precision (fp32/bf16/fp16; 'no' is fp32)",
        "max_grad_norm": "use train.grad_clip",
        "cpu": "use train.device: cpu",
        "keep_checkpoints": "remove it: a run keeps one resumable state, checkpoints/last/",
    }

    def __post_init__(self) -> None:
        if not self.loss_ceiling >= 0:
            raise ValueError(f"train.loss_ceiling must be >= 0 (0: off), got {self.loss_ceiling}")


@dataclass
class EvalConfig(GenerationConfig):
    """``datasets`` maps a name to a Dolly-format JSONL file (e.g. dolly, self_inst, vicuna,
    sinst, uinst); ``checkpoint`` defaults to the run's ``best`` (else ``final``) model.
    ``max_examples`` caps every dataset (the first examples of each file);
    ``dataset_max_examples`` caps single ones (MiniLLM/DistiLLM score UnNI on its first 10k)."""

    checkpoint: str | None = None
    datasets: dict[str, str] = field(default_factory=dict)
    max_examples: int | None = None
    dataset_max_examples: dict[str, int] = field(default_factory=dict)
    output: str | None = None


@dataclass
class LLMConfig:
    """The run directory is ``<output_dir>/<name>``."""

    name: str = "llm"
    output_dir: str = "runs/llm"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ea: EASettings = field(default_factory=EASettings)
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
    if cfg.train.on_policy.lmbda > 0 and cfg.loss.kd_ratio == 0:
        raise ValueError(
            "train.on_policy.lmbda > 0 needs a teacher to score the student's samples "
            "(loss.kd_ratio > 0); the CE on its own samples teaches the student nothing"
        )
    lora = cfg.model.lora
    if lora is not None and lora.quantize != "none":
        if cfg.model.student_layers is not None:
            raise ValueError(
                "model.lora.quantize=4bit loads model.student in 4 bits; it cannot quantise a "
                "student cut from the teacher (model.student_layers): save that student first "
                "and name its folder in model.student"
            )
        if lora.save_merged:
            raise ValueError(
                "model.lora.save_merged with quantize=4bit would round the adapter into a "
                "4-bit base; merge the saved adapter into a bfloat16 copy of the base instead "
                "(set save_merged: false)"
            )
    return cfg
