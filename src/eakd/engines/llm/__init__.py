"""LLM distillation engine on Hugging Face ``transformers`` and Accelerate (``pip install
'eakd[llm]'``): Dolly-format data, the distillation objective (full-logit or chunked), one
training loop with its run directory and resume, and Rouge-L evaluation over seeds."""

from .config import (
    DataConfig,
    EvalConfig,
    LLMConfig,
    LoraConfig,
    LossConfig,
    ModelConfig,
    OnPolicyConfig,
    TrainConfig,
)
from .data import (
    Example,
    build_prompt,
    collate_generation,
    collate_train,
    encode_example,
    load_instructions,
    split_holdout,
)
from .evaluate import GenerationConfig, evaluate_rouge, generate_responses, rouge_l
from .models import (
    CausalLMHidden,
    apply_lora,
    check_same_vocabulary,
    freeze_teacher,
    layer_subset_student,
    load_adapter,
    load_causal_lm,
    load_tokenizer,
)
from .on_policy import sample_responses
from .task import DistillationObjective, ObjectiveConfig, build_divergence, count_items
from .train import (
    RESUMABLE_CHANGES,
    LLMRunDir,
    build_models,
    check_before_loading,
    distillation_vocab,
    evaluate,
    format_table,
    load_data,
    train,
)

__all__ = [
    "RESUMABLE_CHANGES",
    "CausalLMHidden",
    "DataConfig",
    "DistillationObjective",
    "EvalConfig",
    "Example",
    "GenerationConfig",
    "LLMConfig",
    "LLMRunDir",
    "LoraConfig",
    "LossConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OnPolicyConfig",
    "TrainConfig",
    "apply_lora",
    "build_divergence",
    "build_models",
    "build_prompt",
    "check_before_loading",
    "check_same_vocabulary",
    "collate_generation",
    "collate_train",
    "count_items",
    "distillation_vocab",
    "encode_example",
    "evaluate",
    "evaluate_rouge",
    "format_table",
    "freeze_teacher",
    "generate_responses",
    "layer_subset_student",
    "load_adapter",
    "load_causal_lm",
    "load_data",
    "load_instructions",
    "load_tokenizer",
    "rouge_l",
    "sample_responses",
    "split_holdout",
    "train",
]
