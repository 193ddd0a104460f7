"""load_checkpoint: every accepted file layout round-trips; every failure names its cause."""

from __future__ import annotations

import logging
import sys
import tarfile
import warnings

import numpy as np
import pytest
import torch

from eakd.models import build_model, guess_architecture, load_checkpoint, read_state_dict


def fresh(name: str, num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, num_classes=num_classes)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


@pytest.fixture
def source():
    model = fresh("resnet8", seed=1)
    # Non-default BN statistics, so buffers are checked too.
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 32, 32))
    return model


def prefixed(sd, prefix):
    return {prefix + k: v for k, v in sd.items()}


LAYOUTS = {
    "raw": lambda sd: sd,
    # CRD / RepDistiller teacher files (the accuracy is a tensor there).
    "model": lambda sd: {"epoch": 240, "model": sd, "accuracy": torch.tensor(72.3)},
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "model_state_dict": lambda sd: {"model_state_dict": sd},
    "dataparallel": lambda sd: {"model": prefixed(sd, "module.")},
    "compiled": lambda sd: prefixed(sd, "_orig_mod."),
    "student": lambda sd: {**prefixed(sd, "student."), "teacher.fc.weight": torch.zeros(3, 3)},
    # mdistiller `latest` / `best`: DataParallel(distiller) with teacher and method modules.
    "trainer": lambda sd: {
        "epoch": 10,
        "best_acc": 71.0,
        "model": {
            **prefixed(sd, "module.student."),
            **prefixed(fresh("resnet14").state_dict(), "module.teacher."),
            "module.abfs.0.conv1.0.weight": torch.zeros(4, 4, 1, 1),
        },
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.05, "params": [0, 1]}]},
    },
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_round_trip(tmp_path, source, layout):
    path = tmp_path / "ckpt.pth"
    torch.save(LAYOUTS[layout](source.state_dict()), path)
    target = fresh("resnet8", seed=2)
    out = load_checkpoint(target, path)
    assert out is target
    assert_same_weights(target, source)


def test_build_by_name_reads_the_class_count(tmp_path, source):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": source.state_dict()}, path)
    model = load_checkpoint("resnet8", path)
    assert model.num_classes == 10
    assert_same_weights(model, source)
    model = load_checkpoint("resnet8", path, num_classes=10)
    assert_same_weights(model, source)
    model = build_model("resnet8", num_classes=10, checkpoint=path)
    assert_same_weights(model, source)


def test_map_location_is_passed_to_torch_load(tmp_path, source, monkeypatch):
    path = tmp_path / "ckpt.pth"
    torch.save(source.state_dict(), path)
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append((kwargs["map_location"], kwargs["weights_only"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(fresh("resnet8"), path)
    load_checkpoint(fresh("resnet8"), path, map_location=torch.device("cpu"))
    assert seen == [("cpu", True), (torch.device("cpu"), True)]


def test_legacy_serialisation_loads(tmp_path, source):
    path = tmp_path / "old.pth"
    torch.save({"model": source.state_dict()}, path, _use_new_zipfile_serialization=False)
    target = load_checkpoint(fresh("resnet8", seed=3), path)
    assert_same_weights(target, source)


def test_pickled_objects_fall_back_with_a_warning(tmp_path, source):
    path = tmp_path / "np.pth"
    torch.save({"model": source.state_dict(), "best_acc": np.float64(71.2)}, path)
    with pytest.warns(UserWarning, match=r"weights_only=False.*only do this for files you trust"):
        target = load_checkpoint(fresh("resnet8", seed=3), path)
    assert_same_weights(target, source)
    with pytest.raises(ValueError, match=r"cannot be read with weights_only=True.*trust"):
        load_checkpoint(fresh("resnet8"), path, weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(fresh("resnet8"), path, weights_only=False)


def test_pickled_module_loads(tmp_path, source):
    path = tmp_path / "whole.pth"
    torch.save(source, path)
    with pytest.warns(UserWarning, match="weights_only=False"):
        target = load_checkpoint(fresh("resnet8", seed=3), path)
    assert_same_weights(target, source)


def test_strict_false_loads_the_overlap(tmp_path, source):
    path = tmp_path / "backbone.pth"
    sd = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    torch.save(sd, path)
    target = fresh("resnet8", seed=3)
    fc_before = target.fc.weight.clone()
    load_checkpoint(target, path, strict=False)
    torch.testing.assert_close(target.fc.weight, fc_before, rtol=0, atol=0)
    torch.testing.assert_close(target.conv1.weight, source.conv1.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"2 missing keys \(fc.weight, fc.bias\)"):
        load_checkpoint(fresh("resnet8"), path)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope" / "ckpt_epoch_240.pth"
    with pytest.raises(FileNotFoundError, match=f"not found: {missing}"):
        load_checkpoint(fresh("resnet8"), missing)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_checkpoint(fresh("resnet8"), tmp_path)


def test_tar_archive_of_checkpoints(tmp_path, source):
    inner = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": source.state_dict()}, inner)
    archive = tmp_path / "cifar_teachers.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(inner, arcname="cifar_teachers/resnet8_vanilla/ckpt_epoch_240.pth")
    for weights_only in (None, False):
        with pytest.raises(ValueError, match=r"tar archive.*tar -xf cifar_teachers.tar.*resnet8"):
            load_checkpoint(fresh("resnet8"), archive, weights_only=weights_only)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"certainly not a pickle")
    with pytest.raises(ValueError, match=r"could not read .*junk.pth as a PyTorch checkpoint"):
        load_checkpoint(fresh("resnet8"), junk)
    other = tmp_path / "other.pth"
    torch.save({"epoch": 3, "lr": torch.tensor(0.1), "notes": "x"}, other)
    with pytest.raises(ValueError, match="without a state dict: top-level keys 'epoch', 'lr'"):
        load_checkpoint(fresh("resnet8"), other)


def test_other_architecture_is_named(tmp_path, source):
    path = tmp_path / "resnet8.pth"
    torch.save({"model": source.state_dict()}, path)
    with pytest.raises(ValueError) as err:
        load_checkpoint(fresh("wrn_16_1"), path)
    msg = str(err.value)
    assert "does not fit WideResNet" in msg
    wrn, r8 = set(fresh("wrn_16_1").state_dict()), set(source.state_dict())
    assert f"{len(wrn - r8)} missing keys (block1.layer.0.bn1.weight, " in msg
    assert f"{len(r8 - wrn)} unexpected keys (layer1.0.conv1.weight, " in msg
    assert f", ... ({len(r8 - wrn) - 5} more)" in msg  # long lists are cut
    assert "look like 'resnet8'" in msg
    # Same keys, other widths: the shapes are listed and the architecture named.
    wide = tmp_path / "wrn_16_2.pth"
    torch.save(fresh("wrn_16_2").state_dict(), wide)
    with pytest.raises(ValueError, match=r"tensors differ in shape .*look like 'wrn_16_2'"):
        load_checkpoint(fresh("wrn_16_4"), wide)


def test_missing_and_unexpected_counts(tmp_path):
    path = tmp_path / "r14.pth"
    torch.save(fresh("resnet14").state_dict(), path)
    with pytest.raises(ValueError) as err:
        load_checkpoint(fresh("resnet8"), path)
    n_extra = len(fresh("resnet14").state_dict()) - len(fresh("resnet8").state_dict())
    assert f"{n_extra} unexpected keys (layer1.1.conv1.weight" in str(err.value)
    assert "missing keys" not in str(err.value)
    assert "look like 'resnet14'" in str(err.value)


def test_class_count_mismatch(tmp_path, source):
    path = tmp_path / "c10.pth"
    torch.save({"model": source.state_dict()}, path)
    with pytest.raises(ValueError, match=r"has 10 classes, the model has 100; .*num_classes=10"):
        load_checkpoint(fresh("resnet8", num_classes=100), path)
    with pytest.raises(ValueError, match="has 10 classes, the model has 100"):
        load_checkpoint("resnet8", path, num_classes=100)
    with pytest.raises(ValueError, match="does not fit 'wrn_16_2'"):
        load_checkpoint("wrn_16_2", path)
    with pytest.raises(ValueError, match="num_classes=5 was given but the model has 10"):
        load_checkpoint(fresh("resnet8"), path, num_classes=5)


def test_bad_model_argument(tmp_path, source):
    path = tmp_path / "c.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(TypeError, match=r"nn.Module or a model name"):
        load_checkpoint(3, path)


def test_read_state_dict_and_guess(tmp_path, source, caplog):
    path = tmp_path / "t.pth"
    extra = {"module.teacher.fc.bias": torch.zeros(10)}
    torch.save({"model": {**prefixed(source.state_dict(), "module.student."), **extra}}, path)
    sd = read_state_dict(path)
    assert next(iter(sd)).startswith("module.student.")
    assert guess_architecture(sd) == ["resnet8"]
    with caplog.at_level(logging.INFO, logger="eakd.models.checkpoint"):
        load_checkpoint(fresh("resnet8"), path)
    assert "stripped 'module.'" in caplog.text and "kept the 'student.' part" in caplog.text


def test_torchvision_weight_file_layout(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "resnet18-tv.pth"
    torch.save(ref.state_dict(), path)
    model = load_checkpoint("imagenet_resnet18", path)
    assert model.num_classes == 10
    assert_same_weights(model, ref)
    assert guess_architecture(ref.state_dict()) == ["imagenet_resnet18"]
    # The CIFAR ResNet18 has another layout: the error says which one the file has.
    with pytest.raises(ValueError, match="look like 'imagenet_resnet18'"):
        load_checkpoint("ResNet18", path)


class _Foreign(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


def test_pickled_module_from_missing_code(tmp_path, monkeypatch):
    path = tmp_path / "foreign.pth"
    torch.save(_Foreign(), path)
    # Loading elsewhere: the pickled class cannot be found any more.
    monkeypatch.delattr(sys.modules[__name__], "_Foreign")
    with pytest.raises(ValueError, match=r"not importable here .*re-save its state_dict"):
        load_checkpoint(fresh("resnet8"), path)


def test_guess_skips_models_that_need_arguments(tmp_path, source, monkeypatch):
    from eakd.models import MODELS

    def needs_args(depth: int) -> torch.nn.Module:
        return torch.nn.Linear(depth, 2)

    monkeypatch.setitem(MODELS._items, "test_needs_args", needs_args)
    assert guess_architecture(source.state_dict()) == ["resnet8"]
