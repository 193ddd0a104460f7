"""The shipped ReviewKD / FCFD configs: schema, loss keywords, recipe facts, and two built."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eakd.config import from_dict
from eakd.engines.classification import ClassificationTask, ExperimentConfig, resolve_ea
from eakd.losses import LOSSES
from eakd.models import build_model, list_models
from eakd.registry import bind_kwargs

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
FOLDERS = ["reviewkd", "ea_reviewkd", "fcfd", "ea_fcfd"]
# one OpenMP thread, like the feature-loss tests (tests/losses/feature/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def feature_configs() -> list[Path]:
    files = [p for f in FOLDERS for p in (CONFIGS / "cifar100" / f).glob("*.yaml")]
    files += [p for f in ("reviewkd", "ea_reviewkd") for p in (CONFIGS / "imagenet" / f).glob("*")]
    return sorted(files + list((CONFIGS / "cifar100" / "ablation").glob("ea_fcfd_kind_*.yaml")))


def load(path: Path) -> ExperimentConfig:
    text = path.read_text()
    assert text.startswith(f"# eakd train {path.relative_to(CONFIGS.parent)}") or text.startswith(
        f"# torchrun --nproc_per_node 8 -m eakd.cli train {path.relative_to(CONFIGS.parent)}"
    ), path
    return from_dict(ExperimentConfig, yaml.safe_load(text), where=path.name)


def test_every_feature_config_validates():
    files = feature_configs()
    assert len(files) == 4 * 7 + 2 * 1 + 3  # 7 CIFAR pairs x 4, ImageNet x 2, Table 9 x 3
    models = set(list_models())
    for path in files:
        cfg = load(path)
        assert {cfg.student.name, cfg.teacher.name} <= models, path
        assert cfg.ea.enabled == ("ea_" in str(path)), path
        bind_kwargs(LOSSES.get(cfg.method.name), cfg.method.loss, cfg.method.name)
        if cfg.method.name == "fcfd":
            assert cfg.optim.nesterov and cfg.method.kd_weight == 1.0, path
            assert cfg.method.warmup_epochs == 0 and cfg.method.loss["warmup_epochs"] == 20, path
        else:
            assert cfg.method.warmup_epochs == (1 if "imagenet" in str(path) else 20), path


BUILT = ["cifar100/ea_fcfd/wrn_40_2_wrn_40_1.yaml", "imagenet/ea_reviewkd/resnet34_resnet18.yaml"]


@pytest.mark.parametrize("name", BUILT)
def test_configs_build_their_objective(name):
    cfg = load(CONFIGS / name)
    classes = 1000 if name.startswith("imagenet") else 100
    student = build_model(cfg.student.name, num_classes=classes)
    teacher = build_model(cfg.teacher.name, num_classes=classes)
    task = ClassificationTask(student, teacher, cfg.method, resolve_ea(cfg, classes), classes)
    extra = {id(p) for p in task.trainable_parameters()} - {id(p) for p in student.parameters()}
    assert extra == {id(p) for p in task.distill.parameters()} and extra
    if cfg.method.name == "fcfd":
        assert task.distill.mix_weight == 0.2 and task.objective.weighting is not None
    else:
        assert task.distill.loss.student_preact
