"""LLM distillation engine on Hugging Face ``transformers`` and Accelerate (``pip install
'eakd[llm]'``): Dolly-format data, the distillation objective (full-logit or chunked), one
training loop with its run directory and resume, and Rouge-L evaluation over seeds."""

from .config import DataConfig, EvalConfig, LLMConfig, LossConfig, ModelConfig, TrainConfig
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
    check_same_vocabulary,
    layer_subset_student,
    load_causal_lm,
    load_tokenizer,
)
from .task import DistillationObjective, ObjectiveConfig, count_items
from .train import (
    RESUMABLE_CHANGES,
    LLMRunDir,
    build_models,
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
    "LossConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "TrainConfig",
    "build_models",
    "build_prompt",
    "check_same_vocabulary",
    "collate_generation",
    "collate_train",
    "count_items",
    "encode_example",
    "evaluate",
    "evaluate_rouge",
    "format_table",
    "generate_responses",
    "layer_subset_student",
    "load_causal_lm",
    "load_data",
    "load_instructions",
    "load_tokenizer",
    "rouge_l",
    "split_holdout",
    "train",
]
