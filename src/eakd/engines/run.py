"""One run contract for every engine: where a run's files live, how they are written, resumed,
logged, and how training fails.

Writers (the classification, detection and LLM engines, sweeps, demos) and readers (analysis,
``eakd eval``) go through :class:`RunDir`; nothing else spells a run's file names. A run
directory holds::

    config.yaml           the bound config (what ``--resume`` compares against)
    results.json          final results, with the resolved EA settings under "ea"
    train_log.csv         one row per epoch / logging step (+ tensorboard/ events)
    diagnostics.jsonl     per-epoch EA statistics and the loss per teacher-entropy bin
    entropies/            test-set entropies (teacher.pt, student_epochNNNN.pt)
    checkpoints/last.pt   everything needed to continue exactly (LLM: checkpoints/last/)
    checkpoints/best.pt   the best model so far ({"model": state_dict}, loadable anywhere)

Every file is written atomically: a crash leaves the old file or the new one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_open
from ..config import ConfigError

__all__ = [
    "PRECISIONS",
    "CheckpointError",
    "NonFiniteLoss",
    "RunDir",
    "RunExists",
    "RunLogger",
    "RunPath",
    "atomic_write_bytes",
    "atomic_write_text",
    "autocast",
    "autocast_dtype",
    "check_resume",
    "config_diff",
    "load_state",
    "save_state",
    "write_json",
]

#: The one precision option of every engine (``train.precision``): autocast dtype or none.
PRECISIONS = ("fp32", "bf16", "fp16")


# -- atomic files -------------------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a crash leaves the old file or the new one."""
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or not one eakd wrote."""


def save_state(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to memory, then an atomic write."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; a missing or unreadable file
    raises :class:`CheckpointError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, a pickle of other objects
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{what} {p} cannot be read ({type(exc).__name__}: {reason[:200]}); the file is "
            "truncated or not a torch checkpoint"
        ) from exc


# -- failures -----------------------------------------------------------------------------------
class NonFiniteLoss(FloatingPointError):
    """Training produced a NaN/inf loss. Names where, and the last good checkpoint."""

    def __init__(
        self,
        value: float,
        step: int,
        epoch: int | None = None,
        last_good: str | os.PathLike[str] | None = None,
        last_good_at: str | None = None,
        hint: str = "lower the learning rate, use precision=fp32 or bf16, or check the data",
    ) -> None:
        self.value, self.step, self.epoch = value, step, epoch
        self.last_good = None if last_good is None else str(last_good)
        where = f"epoch {epoch}, step {step}" if epoch is not None else f"step {step}"
        at = f" ({last_good_at})" if last_good_at else ""
        kept = (
            f"the last good checkpoint is {self.last_good}{at}"
            if self.last_good is not None
            else "no checkpoint was written yet"
        )
        super().__init__(
            f"non-finite loss ({value}) at {where}; {kept} and nothing was overwritten. {hint}"
        )

    @classmethod
    def check(
        cls,
        value: float,
        step: int,
        epoch: int | None = None,
        last_good: str | os.PathLike[str] | None = None,
        last_good_at: str | None = None,
    ) -> float:
        """``value`` when finite, else raise; ``last_good_at`` says where the last good
        checkpoint stands (e.g. ``"epoch 3"``)."""
        if not math.isfinite(value):
            good = last_good if last_good is not None and Path(last_good).exists() else None
            raise cls(value, step, epoch, good, last_good_at)
        return value


class RunExists(FileExistsError):
    """The output directory already holds a run and ``--resume`` was not given."""


# -- precision ----------------------------------------------------------------------------------
def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``train.precision`` -> the autocast dtype (``None`` for fp32). fp16 needs CUDA."""
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            "train.precision=fp16 needs a CUDA device (its loss scaling is CUDA-only); use "
            "precision=bf16 (or fp32) on this device"
        )
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or a no-op context for fp32."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# -- resume -------------------------------------------------------------------------------------
def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += config_diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def check_resume(
    saved: dict[str, Any], current: dict[str, Any], allowed: tuple[str, ...], where: Path | str
) -> None:
    """The one resume rule: the config may differ from the stopped run's only in ``allowed``
    keys (a key or a section prefix such as ``"train.progress"`` or ``"data.workers"``)."""

    def ok(key: str) -> bool:
        return any(key == a or key.startswith(a + ".") for a in allowed)

    changed = [k for k in config_diff(saved, current) if not ok(k)]
    if changed:
        raise ConfigError(
            f"cannot resume {where}: the config differs from the stopped run's in "
            f"{', '.join(changed)}; resume with the original config (only "
            f"{', '.join(sorted(allowed))} may change) or start a new run elsewhere"
        )


# -- the run directory --------------------------------------------------------------------------
class RunPath:
    """A file or folder of a run: on an instance, ``RunDir(root).results`` is
    ``root / "results.json"``; on the class, ``RunDir.results.name`` is the relative name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run: RunDir | None, owner: type) -> Any:
        return self if run is None else run.root / self.name


class RunDir:
    """Every path of a run. ``RunDir(path)`` names the directory; nothing is created until a
    writer asks (:meth:`prepare`)."""

    config = RunPath("config.yaml")
    results = RunPath("results.json")
    train_log = RunPath("train_log.csv")
    eval_log = RunPath("eval_log.csv")  # engines that evaluate apart from their train log
    eval = RunPath("eval.json")  # the results of the last ``eval`` command on this run
    diagnostics = RunPath("diagnostics.jsonl")
    entropies = RunPath("entropies")
    checkpoints = RunPath("checkpoints")
    tensorboard = RunPath("tensorboard")
    last = RunPath("checkpoints/last.pt")  # the resumable state
    best = RunPath("checkpoints/best.pt")

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    def checkpoint(self, name: str) -> Path:
        """``checkpoints/<name>.pt`` (``last``, ``best``, ``epoch0040``, ...)."""
        return self.checkpoints / f"{name}.pt"

    def teacher_entropies(self) -> Path:
        return self.entropies / "teacher.pt"

    def student_entropies(self, epoch: int) -> Path:
        return self.entropies / f"student_epoch{epoch:04d}.pt"

    def student_entropy_files(self) -> list[Path]:
        """Saved student entropies, oldest epoch first."""
        return sorted(self.entropies.glob("student_epoch*.pt"))

    # state
    def holds_run(self, last: Path | None = None) -> bool:
        """Whether a run was started here (its resumable state exists)."""
        return (last or self.last).exists()

    def prepare(self, resume: bool, last: Path | None = None) -> None:
        """Check the directory against ``resume`` (before any work): a new run refuses a
        directory that holds one; a resume needs the state to continue from."""
        last = last or self.last
        if resume and not last.exists():
            raise CheckpointError(
                f"cannot resume: no checkpoint at {last}; start the run without --resume"
            )
        if not resume and last.exists():
            raise RunExists(
                f"{self.root} already holds a run ({last.relative_to(self.root)}); pass "
                "--resume to continue it, or choose another name/output_dir"
            )

    def create(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    # reading and writing
    def write_config(self, data: dict[str, Any]) -> None:
        from ..config import yaml_dumps

        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config, yaml_dumps(data))

    def read_config(self) -> dict[str, Any]:
        from ..config import yaml_loads

        if not self.config.is_file():
            raise FileNotFoundError(f"{self.root} is not a run directory: no {self.config.name}")
        return yaml_loads(self.config.read_text()) or {}

    def write_results(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.results, data)

    def read_results(self) -> dict[str, Any]:
        if not self.results.is_file():
            raise FileNotFoundError(
                f"{self.root} has no {self.results.name}: the run has not finished (or is "
                "not a run)"
            )
        return json.loads(self.results.read_text())

    def reset_diagnostics(self) -> None:
        """A new run starts its diagnostics from scratch (only this run's file is removed)."""
        if self.diagnostics.exists():
            self.diagnostics.unlink()

    def append_diagnostics(self, row: dict[str, Any]) -> None:
        with self.diagnostics.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    def read_diagnostics(self) -> list[dict[str, Any]]:
        if not self.diagnostics.is_file():
            return []
        return [json.loads(line) for line in self.diagnostics.read_text().splitlines() if line]

    def iter_runs(self) -> Iterator[RunDir]:
        """This directory if it is a run, else the runs below it (a sweep), in sorted order.
        Symbolic links are followed (a demo links its runs), each real folder once."""
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames.sort()
            if RunDir.config.name in filenames:
                dirnames[:] = []  # a run's own folders hold no runs
                yield RunDir(dirpath)


# -- logging ------------------------------------------------------------------------------------
class RunLogger:
    """CSV (always) and TensorBoard (when asked and installed) logs of one run.

    Each CSV row is written and flushed at once, so a stopped run keeps every finished row. On
    resume, rows past ``resume_at`` (by ``step_key``) belong to the stopped run and are dropped.
    ``path`` names another CSV of the run (e.g. :attr:`RunDir.eval_log`); TensorBoard scalars
    of every logger of a run go to the same events folder.
    """

    def __init__(
        self,
        run: RunDir,
        resume_at: int | None = None,
        tensorboard: bool = False,
        step_key: str = "epoch",
        say: Any = None,
        path: Path | None = None,
    ) -> None:
        self.path = run.train_log if path is None else path
        self.step_key = step_key
        self.fields: list[str] | None = None
        if resume_at is not None and self.path.exists():
            with self.path.open() as fh:
                rows = list(csv.DictReader(fh))
            kept = [r for r in rows if int(float(r.get(step_key) or 0)) <= resume_at]
            self.fields = list(rows[0].keys()) if rows else None
            buf = io.StringIO()
            if self.fields:
                writer = csv.DictWriter(buf, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(kept)
            atomic_write_text(self.path, buf.getvalue())
        elif self.path.exists():
            self.path.unlink()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if say is not None:
                    say("note: tensorboard is not installed; logging to train_log.csv only")
            else:
                purge = None if resume_at is None else resume_at + 1
                self.writer = SummaryWriter(str(run.tensorboard), purge_step=purge)

    def log(self, row: dict[str, Any]) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
            fh.flush()
        if self.writer is not None:
            step = int(row.get(self.step_key, 0))
            for k, v in row.items():
                if k != self.step_key and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
