"""Transformer teachers of a 64-px student through the classification engine (Table 5's set-up):
tiny random timm ViT / DeiT / Swin and torchvision ViT teachers built for 96-px inputs, loaded
from local files, see every Tiny-ImageNet batch resized by ``teacher.input``; the shipped
configs of configs/tiny_imagenet_transformers. Offline: nothing is downloaded."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from eakd.config import ConfigError, from_dict, load_config
from eakd.data import dataset_info
from eakd.engines.classification import ExperimentConfig, resolve_ea, train
from eakd.engines.classification.config import ModelConfig
from eakd.engines.classification.train import build_model_from
from eakd.models import ExternalModel, InputAdapter, build_model

pytest.importorskip("torchvision")  # the Tiny-ImageNet transforms
image_mod = pytest.importorskip("PIL.Image")

REPO = Path(__file__).resolve().parents[3]
FOLDER = REPO / "configs" / "tiny_imagenet_transformers"
TINY = dataset_info("tiny_imagenet")
SIZE = 96  # the tiny teachers' input size; the data is 64 px
VIT_STATS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
IN_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

#: kind -> (model name, constructor keywords, normalisation, the class whose forward is spied on)
TEACHERS = {
    "timm_vit": (
        "timm:vit_tiny_patch16_224",
        {"img_size": SIZE, "patch_size": 16, "embed_dim": 16, "depth": 1, "num_heads": 2},
        VIT_STATS,
        ("timm.models.vision_transformer", "VisionTransformer"),
    ),
    "timm_deit": (
        "timm:deit_tiny_patch16_224",
        {"img_size": SIZE, "patch_size": 16, "embed_dim": 16, "depth": 1, "num_heads": 2},
        IN_STATS,
        ("timm.models.vision_transformer", "VisionTransformer"),
    ),
    "timm_swin": (
        "timm:swin_tiny_patch4_window7_224",
        {
            "img_size": SIZE,
            "window_size": 6,
            "embed_dim": 16,
            "depths": [1, 1],
            "num_heads": [1, 2],
        },
        IN_STATS,
        ("timm.models.swin_transformer", "SwinTransformer"),
    ),
    "torchvision_vit": (
        "torchvision.models:VisionTransformer",
        {
            "image_size": SIZE,
            "patch_size": 16,
            "num_layers": 1,
            "num_heads": 2,
            "hidden_dim": 16,
            "mlp_dim": 32,
        },
        IN_STATS,
        ("torchvision.models", "VisionTransformer"),
    ),
}
REFUSAL = {  # what each refuses a 64-px batch with
    "timm_vit": rf"Input height \(64\) doesn't match model \({SIZE}\)",
    "timm_deit": rf"Input height \(64\) doesn't match model \({SIZE}\)",
    "timm_swin": rf"Input height \(64\) doesn't match model \({SIZE}\)",
    "torchvision_vit": rf"Expected {SIZE} but got 64",
}


def needs(kind: str) -> None:
    if kind.startswith("timm"):
        pytest.importorskip("timm")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """tiny-imagenet-200 with 3 of its classes: 4 random 64x64 train JPEGs each, 6 val images."""
    root = tmp_path_factory.mktemp("tin")
    base = root / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    wnids = ["n01", "n02", "n03"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")

    def image(path: Path) -> None:
        image_mod.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)

    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        for k in range(4):
            image(base / "train" / w / "images" / f"{w}_{k}.JPEG")
    lines = []
    for k in range(6):
        image(base / "val" / "images" / f"val_{k}.JPEG")
        lines.append(f"val_{k}.JPEG\t{wnids[k % 3]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def run_config(tmp_path: Path, data: Path, name: str = "run", **sections) -> dict:
    """One epoch of EA-KD (T' = 2, the official preset) into a resnet8x4 student on the fake
    Tiny-ImageNet: 3 steps of 4 images, then the test split."""
    cfg = {
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "student": {"name": "resnet8x4"},
        "data": {
            "name": "tiny_imagenet",
            "root": str(data),
            "batch_size": 4,
            "test_batch_size": 6,
            "num_workers": 0,
        },
        "method": {"name": "kd", "ce_weight": 0.1, "kd_weight": 0.9, "loss": {"temperature": 4.0}},
        "ea": {"enabled": True, "temperature": 2.0, "preset": "official"},
        "optim": {"lr": 0.05, "milestones": []},
        "train": {"epochs": 1, "progress": False, "threads": 1},
        "log": {"tensorboard": False},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def save_teacher(kind: str, path: Path, num_classes: int = TINY.num_classes) -> dict:
    """A random teacher of ``kind`` saved in its package's own key layout; returns its state."""
    name, kwargs, _, _ = TEACHERS[kind]
    torch.manual_seed(1)
    model = build_model(name, num_classes=num_classes, **kwargs)
    inner = model.model if isinstance(model, ExternalModel) else model
    state = {k: v.clone() for k, v in inner.state_dict().items()}
    torch.save(state, path)
    return state


def teacher_section(kind: str, checkpoint: Path, with_input: bool = True) -> dict:
    name, kwargs, stats, _ = TEACHERS[kind]
    section = {"name": name, "kwargs": kwargs, "checkpoint": str(checkpoint)}
    if with_input:
        section["input"] = {"size": SIZE, **stats, "interpolation": "bicubic"}
    return section


def spy_on(monkeypatch, kind: str) -> list[dict]:
    """Record, at every call of the teacher network itself, its input shape, mode, whether any
    parameter is trainable and the sum of its parameters."""
    module, cls_name = TEACHERS[kind][3]
    cls = getattr(pytest.importorskip(module), cls_name)
    calls: list[dict] = []
    original = cls.forward

    def forward(self, x, *args, **kwargs):
        calls.append(
            {
                "shape": tuple(x.shape),
                "training": self.training,
                "trainable": any(p.requires_grad for p in self.parameters()),
                "checksum": float(sum(p.double().sum() for p in self.parameters())),
            }
        )
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", forward)
    return calls


@pytest.mark.parametrize("kind", list(TEACHERS))
def test_transformer_teacher_distils_into_a_64px_student_with_ea(
    tmp_path, tiny_data, monkeypatch, kind
):
    needs(kind)
    state = save_teacher(kind, tmp_path / "teacher.pth")
    calls = spy_on(monkeypatch, kind)
    cfg = run_config(tmp_path, tiny_data, teacher=teacher_section(kind, tmp_path / "teacher.pth"))
    res = train(cfg, quiet=True)

    (row,) = res["history"]
    assert math.isfinite(row["train_loss"]) and row["train_kd"] > 0
    # the teacher never saw a 64-px batch: 6 test images once, then 3 training batches of 4
    assert [c["shape"] for c in calls] == [(6, 3, SIZE, SIZE)] + [(4, 3, SIZE, SIZE)] * 3
    # ... and stayed frozen: eval mode, no trainable parameter, the file's weights throughout
    checksum = float(sum(v.double().sum() for v in state.values() if v.is_floating_point()))
    assert not any(c["training"] or c["trainable"] for c in calls)
    assert all(c["checksum"] == pytest.approx(checksum, rel=1e-9, abs=1e-9) for c in calls)
    # EA at T' = 2 with the released code's H_ub = 100 weighed the batch unevenly
    run = tmp_path / "runs" / "run"
    ea = json.loads((run / "results.json").read_text())["ea"]
    assert (ea["enabled"], ea["temperature"], ea["max_entropy"]) == (True, 2.0, 100.0)
    (diag,) = [json.loads(line) for line in (run / "diagnostics.jsonl").read_text().splitlines()]
    assert 0 < diag["weight_min"] < diag["weight_max"]
    saved = yaml.safe_load((run / "config.yaml").read_text())["teacher"]["input"]
    assert saved["size"] == SIZE and saved["mean"] == TEACHERS[kind][2]["mean"]


@pytest.mark.parametrize("kind", ["timm_vit", "torchvision_vit"])
def test_without_teacher_input_the_teacher_refuses_the_64px_batch(tmp_path, tiny_data, kind):
    needs(kind)
    save_teacher(kind, tmp_path / "teacher.pth")
    section = teacher_section(kind, tmp_path / "teacher.pth", with_input=False)
    with pytest.raises(AssertionError, match=REFUSAL[kind]):
        train(run_config(tmp_path, tiny_data, teacher=section), quiet=True)


def test_the_adapter_needs_the_datasets_normalisation():
    cfg = from_dict(ModelConfig, {"name": "resnet8", "input": {"size": 32, **VIT_STATS}})
    with pytest.raises(ValueError, match=r"teacher\.input needs the dataset's normalisation"):
        build_model_from(cfg, 10, "teacher")
    model = build_model_from(cfg, 10, "teacher", TINY)
    assert isinstance(model, InputAdapter) and model.size == (32, 32)
    torch.testing.assert_close(model.data_mean.flatten(), torch.tensor(TINY.mean))
    torch.testing.assert_close(model.data_std.flatten(), torch.tensor(TINY.std))
    with pytest.raises(ConfigError, match="replace_head replaces the classifier of a checkpoint"):
        from_dict(ModelConfig, {"name": "resnet8", "replace_head": True}, "teacher")


def test_fine_tuned_teacher_from_imagenet_style_weights_then_distilled(tmp_path, tiny_data, capsys):
    """The teacher configs' path: weights trained on other classes (here 10, saved as timm's
    model.safetensors) -> head replaced -> fine-tuned through the adapter (vanilla) -> its
    last.pt is the teacher.checkpoint of a KD run, which scores it exactly as the fine-tuning
    run's last evaluation did."""
    pytest.importorskip("timm")
    safetensors = pytest.importorskip("safetensors.torch")
    name, kwargs, stats, _ = TEACHERS["timm_vit"]
    torch.manual_seed(2)
    pre = build_model(name, num_classes=10, **kwargs).model.state_dict()
    weights = tmp_path / "model.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in pre.items()}, str(weights))
    spec = {"size": SIZE, **stats, "interpolation": "bicubic"}
    student = {"name": name, "kwargs": kwargs, "checkpoint": str(weights), "input": spec}

    # the 10-class head does not fit 200 classes: refused unless replaced
    with pytest.raises(ValueError, match="has 10 classes, the model has 200"):
        build_model_from(from_dict(ModelConfig, student), TINY.num_classes, "student", TINY)
    torch.manual_seed(3)
    fresh = build_model(name, num_classes=TINY.num_classes, **kwargs).model.state_dict()
    torch.manual_seed(3)
    cfg = from_dict(ModelConfig, {**student, "replace_head": True})
    loaded = build_model_from(cfg, TINY.num_classes, "student", TINY).model.model.state_dict()
    for k, v in loaded.items():
        ref = fresh[k] if k.startswith("head.") else pre[k]
        torch.testing.assert_close(v, ref, rtol=0, atol=0)

    finetune = run_config(
        tmp_path,
        tiny_data,
        name="finetune",
        student={**student, "replace_head": True},
        method={"name": "vanilla"},
        ea={"enabled": False},
    )
    ft = train(finetune, quiet=True)
    last = tmp_path / "runs" / "finetune" / "checkpoints" / "last.pt"
    section = {"name": name, "kwargs": kwargs, "checkpoint": str(last), "input": spec}
    res = train(run_config(tmp_path, tiny_data, name="kd", teacher=section), quiet=True)
    assert res["teacher_top1"] == pytest.approx(ft["last_top1"])
    assert math.isfinite(res["history"][0]["train_loss"])

    # the readers rebuild the adapted models too: eakd eval and the analysis
    from eakd.analysis.forward import build_student, find_teacher
    from eakd.analysis.runs import Run
    from eakd.cli import main

    assert main(["eval", str(last)]) == 0
    assert f"top-1 {ft['last_top1']:.2f}%" in capsys.readouterr().out
    student_again = build_student(Run.load(tmp_path / "runs" / "finetune"), "last")
    teacher_again = find_teacher([Run.load(tmp_path / "runs" / "kd")]).build(
        TINY.num_classes, "tiny_imagenet"
    )
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(student_again(x), teacher_again(x))


def test_timm_weight_files_go_through_timms_own_conversion(tmp_path):
    """Swin files that carry the buffers timm does not save (relative position indices, as the
    official releases do) load, as timm's own pretrained loading converts them."""
    pytest.importorskip("timm")
    state = save_teacher("timm_swin", tmp_path / "plain.pth")
    index = next(k for k in state if k.endswith("relative_position_bias_table"))
    extra = {**state, index.replace("bias_table", "index"): torch.zeros(36, 36).long()}
    torch.save({"model": extra}, tmp_path / "release.pth")
    name, kwargs, _, _ = TEACHERS["timm_swin"]
    file = tmp_path / "release.pth"
    model = build_model(name, num_classes=TINY.num_classes, checkpoint=file, **kwargs)
    for k, v in state.items():
        torch.testing.assert_close(model.model.state_dict()[k], v, rtol=0, atol=0)


# -- the shipped configs -------------------------------------------------------------------------
#: config stem -> (timm name, paper numbers: teacher, KD, EA-KD) from Table 5
PAPER = {
    "vit_b16": ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "71.12", "54.70", "57.53"),
    "deit_b": ("deit_base_patch16_224.fb_in1k", "85.55", "56.30", "58.36"),
    "swin_b": ("swin_base_patch4_window7_224.ms_in22k_ft_in1k", "86.30", "56.15", "59.58"),
}
PAPER_NUMBER = re.compile(r"^# paper \(Table 5\): .* (\d+\.\d\d)%")


def configs() -> list[Path]:
    return sorted(FOLDER.rglob("*.yaml"))


def test_the_folder_holds_kd_ea_kd_and_teacher_configs_for_each_teacher():
    names = {str(p.relative_to(FOLDER)) for p in configs()}
    expected = {f"{m}/{k}_resnet8x4.yaml" for m in ("kd", "ea_kd") for k in PAPER}
    assert names == expected | {f"teacher/{k}.yaml" for k in PAPER}


@pytest.mark.parametrize("path", configs(), ids=lambda p: str(p.relative_to(FOLDER)))
def test_shipped_config_header_paper_number_and_settings(path):
    method, stem = path.parent.name, path.stem.removesuffix("_resnet8x4")
    timm_name, teacher_acc, kd, ea_kd = PAPER[stem]
    lines = path.read_text().splitlines()
    assert lines[0] == f"# eakd train {path.relative_to(REPO)}"
    number = PAPER_NUMBER.match(lines[1])
    assert number is not None
    assert number[1] == {"kd": kd, "ea_kd": ea_kd, "teacher": teacher_acc}[method]
    cfg = from_dict(ExperimentConfig, load_config(path))
    assert cfg.data.name == "tiny_imagenet"
    ea = resolve_ea(cfg, TINY.num_classes)
    if method == "teacher":  # fine-tuning the ImageNet weights, head replaced
        model = cfg.student
        assert cfg.method.name == "vanilla" and cfg.teacher is None
        assert model.replace_head and model.checkpoint.endswith(f"{timm_name}/model.safetensors")
        # the KD configs read the file this run writes
        for m in ("kd", "ea_kd"):
            other = load_config(FOLDER / m / f"{stem}_resnet8x4.yaml")
            assert other["teacher"]["checkpoint"] == f"runs/{cfg.name}/checkpoints/last.pt"
    else:
        model = cfg.teacher
        assert cfg.student.name == "resnet8x4" and cfg.method.name == "kd"
        assert (ea.enabled, ea.temperature) == (method == "ea_kd", 2.0)
        if ea.enabled:  # the released KD code's H_ub on 200 classes
            assert ea.max_entropy == 100.0 and lines[2].startswith("# preset: official")
        # KD and EA-KD differ only in EA and the run name
        pair = load_config(FOLDER / ("kd" if method == "ea_kd" else "ea_kd") / path.name)
        mine = load_config(path)
        for d in (pair, mine):
            del d["name"], d["ea"]["enabled"]
        assert pair == mine
    assert model.name == f"timm:{timm_name}"
    assert model.input is not None and model.input.size == 224


@pytest.mark.parametrize("stem", list(PAPER))
def test_shipped_teacher_input_is_timms_pretrained_config_and_accepts_64px(stem):
    """The input sections say what timm's pretrained config of those weights says; the full-size
    teacher (built on the meta device: no memory, no weights) takes a 64-px batch through it."""
    timm = pytest.importorskip("timm")
    timm_name = PAPER[stem][0]
    pretrained = timm.models.get_pretrained_cfg(timm_name)
    cfg = from_dict(ExperimentConfig, load_config(FOLDER / "ea_kd" / f"{stem}_resnet8x4.yaml"))
    spec = cfg.teacher.input
    assert (spec.size, spec.size) == tuple(pretrained.input_size[1:])
    assert spec.mean == tuple(pretrained.mean) and spec.std == tuple(pretrained.std)
    assert spec.interpolation == pretrained.interpolation
    with torch.device("meta"):
        teacher = build_model(cfg.teacher.name, num_classes=TINY.num_classes)
        x = torch.empty(2, 3, 64, 64)
        with pytest.raises(AssertionError, match=r"Input height \(64\) doesn't match model"):
            teacher(x)
        logits, _ = InputAdapter.from_spec(teacher, spec, TINY.mean, TINY.std)(x)
    assert logits.shape == (2, TINY.num_classes)
