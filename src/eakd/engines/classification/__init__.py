"""Classification distillation: config schema, task, training loop, evaluation and sweeps."""

from .config import (
    DataConfig,
    EAConfig,
    ExperimentConfig,
    LogConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from .evaluate import accuracy_counts, evaluate
from .sweep import expand_grid, format_table, run_sweep, summarize
from .task import ClassificationTask, ea_settings
from .train import TrainingDiverged, learning_rate, train

__all__ = [
    "ClassificationTask",
    "DataConfig",
    "EAConfig",
    "ExperimentConfig",
    "LogConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainingDiverged",
    "accuracy_counts",
    "ea_settings",
    "evaluate",
    "expand_grid",
    "format_table",
    "learning_rate",
    "run_sweep",
    "summarize",
    "train",
]
