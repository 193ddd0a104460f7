"""A battery of bad inputs, driven through ``eakd`` as a user would type them.

Each case asserts the exit status, one line ``eakd: error: ...`` on stderr that names the
problem and the fix, no traceback, and that nothing in the working folder changed: every file
that existed before (a finished run of the user's, a file eakd never wrote) has the same bytes
after, and no new run folder appears. The library cases assert the same of a Python call: one
exception with a one-line message naming the fix.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from eakd.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines" / "classification"))
from tiny_models import tiny_config

pytest.importorskip("mnist1d")


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (folders as ``/``-ended keys)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel + ("/" if p.is_dir() else "")] = (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        )
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-epoch MNIST-1D baseline (``runs/base``, the tiny config's cosine
    schedule) and its config file."""
    root = tmp_path_factory.mktemp("battery")
    cfg = tiny_config(root, root / "cache", "base", method={"name": "vanilla"})
    cfg.pop("teacher")
    cfg["train"]["epochs"] = 2
    path = root / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--quiet"]) == 0
    return root


@dataclass
class Case:
    """``argv`` with ``{cfg}``, ``{dir}``, ``{run}``, ``{ckpt}`` placeholders; ``setup(dir)``
    prepares files first; ``status`` and the substrings the message must contain."""

    id: str
    argv: list[str]
    expect: list[str]
    status: int = 2
    setup: Callable[[Path], None] | None = None
    extra_yaml: dict = field(default_factory=dict)


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def _truncate_last(keep_prev: bool) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        last = d / "runs/base/checkpoints/last.pt"
        last.write_bytes(last.read_bytes()[:300])
        prev = d / "runs/base/checkpoints/last.prev.pt"
        if not keep_prev and prev.exists():
            prev.write_bytes(b"")
        (d / "runs/base/results.json").unlink()  # a stopped run, not a finished one

    return setup


def _best(d: Path) -> bytes:
    return (d / "runs/base/checkpoints/best.pt").read_bytes()


def _loss(name: str):
    from eakd import build_loss

    return build_loss(name)


def _user_folder(d: Path) -> None:
    _write(d / "runs/mine/notes.txt", "my notes")
    _write(d / "runs/mine/other_run/weights.bin", b"\x00" * 64)


RUN = ["train", "{cfg}", "--quiet"]  # the finished run
TRAIN = [*RUN, "name=new"]  # a new run beside it
KD = [*TRAIN, "method.name=kd", "teacher.name=tiny_models:Tiny1d"]

CASES = [
    # -- config files and overrides ---------------------------------------------------------
    Case("unknown-key", [*TRAIN, "nonsense=1"], ["unknown key 'nonsense'", "valid keys"]),
    Case("near-key", [*TRAIN, "optim.lrr=0.1"], ["unknown key 'lrr'", "did you mean 'lr'"]),
    Case("not-a-number", [*TRAIN, "optim.lr=abc"], ["optim.lr", "must be a number", "'abc'"]),
    Case("not-an-int", [*TRAIN, "train.epochs=2.5"], ["train.epochs", "integer"]),
    Case("not-a-bool", [*TRAIN, "ea.enabled=maybe"], ["ea.enabled", "true or false"]),
    Case("override-without-value", [*TRAIN, "optim.lr="], ["optim.lr", "number"]),
    Case("override-unknown-section", [*TRAIN, "foo.bar=1"], ["unknown key 'foo'"]),
    Case("precision", [*TRAIN, "train.precision=fp64"], ["train.precision", "fp32", "bf16"]),
    Case("fp16-on-cpu", [*TRAIN, "train.precision=fp16"], ["fp16 needs a CUDA", "bf16"]),
    Case("ea-method-name", [*TRAIN, "method.name=ea_kd"], ["method.name=kd ea.enabled=true"]),
    Case("unknown-method", [*TRAIN, "method.name=kdd"], ["method.name must be one of"]),
    Case("renamed-key", [*TRAIN, "train.amp=bf16"], ["train.amp was renamed", "precision"]),
    Case("ea-kind", [*TRAIN, "ea.kind=bogus"], ["ea.kind", "bogus"]),
    Case("ea-temperature", [*TRAIN, "ea.temperature=0"], ["temperature", "> 0"]),
    Case("loss-ceiling", [*TRAIN, "train.loss_ceiling=-1"], ["train.loss_ceiling must be >= 0"]),
    Case("save-epochs", [*TRAIN, "log.save_epochs=[5]"], ["log.save_epochs", "train.epochs=2"]),
    Case("unknown-dataset", [*TRAIN, "data.name=nonexistent"], ["nonexistent", "mnist1d"]),
    Case(
        "missing-dataset",
        [*TRAIN, "data.name=cifar100", "data.root={dir}/nowhere", "data.options={}"],
        ["cifar-100-python", "never downloads"],
    ),
    Case("unknown-model", [*TRAIN, "student.name=resnet9000"], ["resnet9000", "resnet8x4"]),
    Case(
        "num-classes-kwarg",
        [*TRAIN, "student.kwargs.num_classes=5"],
        ["student.kwargs.num_classes=5", "10 classes", "remove student.kwargs.num_classes"],
    ),
    Case("missing-config", ["train", "{dir}/missing.yaml"], ["config file not found"]),
    Case(
        "yaml-syntax",
        ["train", "{dir}/broken.yaml"],
        ["broken.yaml", "line"],
        setup=lambda d: _write(d / "broken.yaml", "optim: {lr: 0.1\nname: [x\n"),
    ),
    Case(
        "yaml-not-a-mapping",
        ["train", "{dir}/list.yaml"],
        ["list.yaml", "mapping"],
        setup=lambda d: _write(d / "list.yaml", "- 1\n- 2\n"),
    ),
    # -- teacher checkpoints ------------------------------------------------------------------
    Case(
        "teacher-missing",
        [*KD, "teacher.checkpoint={dir}/t.pt"],
        ["not found", "t.pt"],
    ),
    Case(
        "teacher-truncated",
        [*KD, "teacher.checkpoint={ckpt}"],
        ["truncated or not a checkpoint"],
        setup=lambda d: _write(d / "ckpt.pt", _best(d)[:5000]),
    ),
    Case(
        "teacher-random-bytes",
        [*KD, "teacher.checkpoint={ckpt}"],
        ["could not read", "ckpt.pt"],
        setup=lambda d: _write(d / "ckpt.pt", bytes(range(256)) * 12),
    ),
    Case(
        "teacher-folder",
        [*KD, "teacher.checkpoint={dir}"],
        ["is a directory"],
    ),
    # -- run folders, resume --------------------------------------------------------------------
    Case("existing-finished-run", RUN, ["already holds a finished run", "--overwrite"]),
    Case("resume-and-overwrite", [*RUN, "--resume", "--overwrite"], ["exclude each other"]),
    Case("resume-nothing", [*TRAIN, "name=absent", "--resume"], ["cannot resume", "no checkpoint"]),
    Case("resume-changed", [*RUN, "--resume", "optim.lr=0.1"], ["config differs", "optim.lr"]),
    Case(
        "resume-longer-cosine",
        [*RUN, "--resume", "train.epochs=3"],
        ["cosine schedule", "start a new run"],
    ),
    Case(
        "resume-shorter",
        [*RUN, "--resume", "train.epochs=1"],
        ["already trained 2 epochs", "keep train.epochs=2"],
    ),
    Case(
        "overwrite-foreign-folder",
        [*RUN, "output_dir={dir}/runs", "name=mine", "--overwrite"],
        ["eakd did not write", "choose another name"],
        setup=_user_folder,
    ),
    Case(
        "new-run-in-foreign-folder",
        [*RUN, "output_dir={dir}/runs", "name=mine"],
        ["eakd did not write"],
        setup=_user_folder,
    ),
    Case(
        "corrupt-last-no-previous",
        [*RUN, "--resume"],
        ["cannot be read", "nothing to resume from", "--overwrite"],
        setup=_truncate_last(keep_prev=False),
    ),
    # -- eval -------------------------------------------------------------------------------
    Case("eval-missing", ["eval", "{dir}/none.pt"], ["not found", "none.pt"]),
    Case(
        "eval-random",
        ["eval", "{ckpt}"],
        ["ckpt.pt", "truncated or not a torch checkpoint"],
        setup=lambda d: _write(d / "ckpt.pt", bytes(range(256)) * 20),
    ),
    Case(
        "eval-truncated",
        ["eval", "{ckpt}"],
        ["ckpt.pt", "truncated or not a torch checkpoint"],
        setup=lambda d: _write(d / "ckpt.pt", _best(d)[:900]),
    ),
    Case(
        "eval-empty",
        ["eval", "{ckpt}"],
        ["ckpt.pt", "truncated or not a torch checkpoint"],
        setup=lambda d: _write(d / "ckpt.pt", b""),
    ),
    Case("eval-folder", ["eval", "{dir}"], ["is a directory"]),
    # -- sweeps, demos ----------------------------------------------------------------------------
    Case(
        "grid-bad-value",
        ["sweep", "{cfg}", "--seeds", "2", "--grid", "optim.lr=0.1,abc", "name=sw"],
        ["optim.lr", "'abc'"],
    ),
    Case(
        "grid-bad-method",
        ["sweep", "{cfg}", "--grid", "method=kd,ea_kdd", "name=sw"],
        ["ea_kdd", "unknown method 'kdd'"],
    ),
    Case("grid-no-values", ["sweep", "{cfg}", "--grid", "optim.lr"], ["key=value1,value2"]),
    Case("sweep-no-seeds", ["sweep", "{cfg}", "--seeds", "0"], ["--seeds must be >= 1"]),
    Case("demo-no-seeds", ["demo", "--seeds", "0"], ["--seeds must be >= 1"]),
    Case("demo-core-output", ["demo", "--task", "core", "--output", "x"], ["not use --output"]),
    Case("demo-llm-seeds", ["demo", "--task", "llm", "--seeds", "3"], ["does not use --seeds"]),
    # -- the other engines ---------------------------------------------------------------------
    Case("detect-unknown-key", ["detect", "train", "{dir}/d.yaml"], ["unknown key 'nonsense'"],
         setup=lambda d: _write(d / "d.yaml", "nonsense: 1\n")),
    Case("llm-unknown-key", ["llm", "train", "{dir}/l.yaml"], ["unknown key 'nonsense'"],
         setup=lambda d: _write(d / "l.yaml", "nonsense: 1\n")),
    Case("analyze-not-a-run", ["analyze", "{dir}/empty"], ["empty"],
         setup=lambda d: (d / "empty").mkdir()),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, finished, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(finished, work, ignore=shutil.ignore_patterns("cache"))
    (work / "cache").symlink_to(finished / "cache")
    cfg = yaml.safe_load((work / "base.yaml").read_text())
    cfg["output_dir"] = str(work / "runs")
    cfg["data"]["root"] = str(finished / "cache")
    (work / "base.yaml").write_text(yaml.safe_dump(cfg))  # the run, moved: it still resumes
    if case.setup is not None:
        case.setup(work)
    monkeypatch.chdir(work)
    before = snapshot(work)
    subs = {"{cfg}": str(work / "base.yaml"), "{dir}": str(work), "{ckpt}": str(work / "ckpt.pt")}
    argv = []
    for a in case.argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        argv.append(a)
    status = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert status == case.status, (status, err, captured.out[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("eakd: error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err and "Traceback" not in captured.out
    message = errors[0]
    for want in case.expect:
        assert want in message, (want, message)
    assert snapshot(work) == before, "files changed"


def _logits(*shape):
    return torch.randn(*shape)


LIBRARY = [
    (
        "reduction",
        lambda: __import__("eakd").EntropyAdaptive(__import__("eakd").build_loss("kd"))(
            _logits(4, 5), _logits(4, 5), reduction="bogus"
        ),
        ValueError,
        "reduction",
    ),
    ("unknown-loss", lambda: _loss("nope"), (KeyError, ValueError), "nope"),
    (
        "class-mismatch",
        lambda: _loss("kd")(_logits(4, 5), _logits(4, 6)),
        ValueError,
        "shape",
    ),
    (
        "nan-student",
        lambda: _loss("kd")(
            torch.full((4, 5), float("nan")), _logits(4, 5)
        ),
        ValueError,
        "student_logits has NaN",
    ),
    (
        "integer-logits",
        lambda: _loss("kd")(torch.ones(4, 5, dtype=torch.long), _logits(4, 5)),
        TypeError,
        "floating-point",
    ),
    (
        "target-range",
        lambda: _loss("dkd")(_logits(4, 5), _logits(4, 5), torch.tensor([0, 1, 2, 9])),
        ValueError,
        "9",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fn", "exc", "want"), [c[1:] for c in LIBRARY], ids=[c[0] for c in LIBRARY]
)
def test_bad_library_call(fn, exc, want):
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    assert want in message and "\n" not in message.strip("'\""), message


def test_the_battery_is_large_enough():
    assert len(CASES) + len(LIBRARY) >= 40


#: Packages of the optional extras, made unimportable to stand for ``pip install eakd`` alone.
EXTRA_PACKAGES = [
    "numpy", "yaml", "torchvision", "tqdm", "mnist1d", "PIL", "transformers", "accelerate",
    "matplotlib", "sklearn", "pycocotools", "tensorboard", "peft", "trl", "timm",
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["demo"], "vision"),
        (["demo", "--task", "detection"], "vision"),
        (["train", "{root}/configs/cifar100/kd/resnet32x4_resnet8x4.yaml"], "vision"),
        (["detect", "train", "{root}/configs/detection_demo/kd.yaml"], "detection"),
        (["llm", "train", "{root}/configs/llm/dolly/kd/gpt2-xl_gpt2.yaml"], "vision"),
        (["analyze", "."], "analysis"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_core_only_install(argv, extra, tmp_path):
    """Without any extra, every command is one line naming the extra to install."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    argv = [a.replace("{root}", str(root)) for a in argv]
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({EXTRA_PACKAGES!r})); "
        f"from eakd.cli import main; sys.exit(main({argv!r}))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("eakd: error: "), proc.stderr
    assert f"pip install 'eakd[{extra}]'" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
