"""Classification distillation: config schema, task, training loop, evaluation and sweeps."""

from .config import (
    DataConfig,
    ExperimentConfig,
    LogConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    resolve_ea,
)
from .evaluate import accuracy_counts, evaluate
from .sweep import expand_grid, format_table, run_sweep, summarize
from .task import ClassificationTask
from .train import learning_rate, train

__all__ = [
    "ClassificationTask",
    "DataConfig",
    "ExperimentConfig",
    "LogConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "accuracy_counts",
    "evaluate",
    "expand_grid",
    "format_table",
    "learning_rate",
    "resolve_ea",
    "run_sweep",
    "summarize",
    "train",
]
