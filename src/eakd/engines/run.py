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
import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_open
from ..config import ConfigError
from ..core.validation import NonFiniteInput

__all__ = [
    "PRECISIONS",
    "CheckpointError",
    "LossGuard",
    "NonFiniteLoss",
    "RunDir",
    "RunExists",
    "RunInterrupted",
    "RunLogger",
    "RunPath",
    "atomic_copy",
    "atomic_write_bytes",
    "atomic_write_text",
    "autocast",
    "autocast_dtype",
    "check_resume",
    "config_diff",
    "load_resumable",
    "load_state",
    "previous_checkpoint",
    "save_checkpoint",
    "save_state",
    "start_trackers",
    "write_json",
]

#: The temporary files of an atomic write (``.last.pt.1a2b3c4d.tmp``), left by a killed write.
_TEMP = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")

#: The one precision option of every engine (``train.precision``): autocast dtype or none.
PRECISIONS = ("fp32", "bf16", "fp16")


# -- atomic files -------------------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a crash leaves the old file or the new one."""
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dst`` atomically (``dst`` is replaced as a whole or not at all)."""
    with open(src, "rb") as fh, atomic_open(dst) as out:
        shutil.copyfileobj(fh, out)


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
    if p.is_dir():
        raise CheckpointError(f"{what} path {p} is a directory, not a file")
    if not p.is_file():
        raise CheckpointError(f"{what} not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, a pickle of other objects
        text = str(exc).strip()
        reason = text.splitlines()[0].split(". ")[0] if text else "empty or cut short"
        raise CheckpointError(
            f"{what} {p} cannot be read ({type(exc).__name__}: {reason[:200]}); the file is "
            "truncated or not a torch checkpoint"
        ) from exc


def previous_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Where the previous good copy of a resumable checkpoint is kept: ``checkpoints/last.pt``
    -> ``checkpoints/last.prev.pt`` (a folder: ``last`` -> ``last.prev``)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.prev{p.suffix}")


def save_checkpoint(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write a resumable checkpoint: serialised in memory, written to a temporary file,
    verified (read back and compared byte for byte), then moved over ``path``; the file it
    replaces stays as :func:`previous_checkpoint`. A crash at any moment leaves a readable
    checkpoint, and a later corruption of ``path`` can fall back to the previous one."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).digest()

    def verify(tmp: Path) -> None:
        if hashlib.sha256(tmp.read_bytes()).digest() != digest:
            raise OSError(
                f"writing {path} failed: the file read back differs from what was written"
            )

    with atomic_open(path, keep_previous=previous_checkpoint(path), verify=verify) as fh:
        fh.write(data)


def load_resumable(
    path: str | os.PathLike[str],
    warn: Any = None,
    read: Callable[[Path, str], Any] = load_state,
) -> tuple[Any, Path]:
    """Load the resumable checkpoint ``path``; when it is missing or unreadable, fall back to
    its previous good copy (:func:`previous_checkpoint`) with a one-line warning (``warn``,
    default: stderr). Returns ``(state, the file or folder read)``; raises
    :class:`CheckpointError` naming both and the way out when neither can be read. ``read(path,
    what)`` loads one (default :func:`load_state`; the LLM engine reads its folder) and raises
    :class:`CheckpointError` for a damaged one."""
    p = Path(path)
    prev = previous_checkpoint(p)
    try:
        return read(p, "checkpoint"), p
    except CheckpointError as exc:
        if not prev.exists():
            raise CheckpointError(
                f"{exc}; there is no previous checkpoint ({prev.name}) to fall back to: start "
                "the run again with --overwrite (it replaces this run), or under another name"
            ) from exc
        first = exc
    try:
        state = read(prev, "previous checkpoint")
    except CheckpointError as exc:
        raise CheckpointError(
            f"{first}; {exc}: nothing to resume from; start the run again with --overwrite "
            "(it replaces this run), or under another name"
        ) from exc
    at = next((f" ({k} {state[k]})" for k in ("epoch", "step") if k in state), "")
    message = f"warning: {p} cannot be read; resuming from the previous checkpoint {prev.name}{at}"
    (warn or (lambda m: print(m, file=sys.stderr)))(message)
    return state, prev


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
            f"non-finite loss ({value}) at {where}; {kept} and nothing was overwritten: {hint}"
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


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training, with where it stopped and what was kept. The CLI
    prints the message and how to resume (``resumable``)."""

    resumable = True

    def __init__(self, where: str, last: str | os.PathLike[str] | None, at: str = "") -> None:
        kept = (
            f"the last checkpoint is {last}{f' ({at})' if at else ''}"
            if last is not None and Path(last).exists()
            else "no checkpoint was written yet"
        )
        super().__init__(f"interrupted at {where}; {kept}")


class LossGuard:
    """The checks of every training step: a NaN/inf loss (or NaN logits met by a loss) stops
    the run naming the step and the last good checkpoint (:class:`NonFiniteLoss`); a finite
    loss above ``ceiling`` warns once (a diverging run); :meth:`interrupted` names where a
    Ctrl-C stopped the run (:class:`RunInterrupted`).

    Args:
        ceiling: the warning threshold (``train.loss_ceiling``); ``0``/``None`` never warns.
        last: the resumable checkpoint (``RunDir.last``).
        enabled: whether this process reports (the main process under DDP).
    """

    def __init__(self, ceiling: float | None, last: Path, enabled: bool = True) -> None:
        self.ceiling = ceiling
        self.last = last
        self.enabled = enabled
        self.warned = False

    def check(self, value: float, step: int, epoch: int | None = None, at: str = "") -> float:
        """``value`` when finite, else :class:`NonFiniteLoss`; warns once above the ceiling."""
        value = NonFiniteLoss.check(value, step, epoch, self.last, at or None)
        if self.ceiling and abs(value) > self.ceiling and not self.warned:
            self.warned = True
            if self.enabled:
                where = f"epoch {epoch}, step {step}" if epoch is not None else f"step {step}"
                print(
                    f"warning: loss {value:.3g} at {where} is above train.loss_ceiling="
                    f"{self.ceiling:g}: the run is probably diverging (lower optim.lr); set "
                    "train.loss_ceiling=0 to silence this",
                    file=sys.stderr,
                )
        return value

    @contextmanager
    def step(self, step: int, epoch: int | None = None, at: str = "") -> Iterator[None]:
        """Around a step's forward pass: NaN/inf logits met by a loss become a
        :class:`NonFiniteLoss` at this step (a diverged model), not a bad-input error."""
        try:
            yield
        except NonFiniteInput as exc:
            last = self.last if self.last.exists() else None
            raise NonFiniteLoss(float("nan"), step, epoch, last, at or None, _cause(exc)) from exc

    def interrupted(self, where: str, at: str = "") -> RunInterrupted:
        """The :class:`RunInterrupted` for a Ctrl-C at ``where`` (``"epoch 3, step 12"``)."""
        return RunInterrupted(where, self.last, at)


def _cause(exc: BaseException) -> str:
    text = (
        str(exc).split(". Logits must be finite")[0].removeprefix("non-finite distillation loss: ")
    )
    return f"{text}: the model diverged; lower the learning rate or use precision=fp32/bf16"


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

    marker = RunPath(".eakd-run")  # written when a run starts: the folder is eakd's
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
    def is_eakd_run(self) -> bool:
        """Whether eakd made this folder: its marker (written when a run starts), or the files
        of a run made before markers existed (``config.yaml`` with checkpoints or results)."""
        if self.marker.is_file():
            return True
        return self.config.is_file() and (self.checkpoints.is_dir() or self.results.is_file())

    @property
    def finished(self) -> bool:
        """Whether the run finished (its ``results.json`` exists)."""
        return self.results.is_file()

    def holds_run(self, last: Path | None = None) -> bool:
        """Whether a run was started here (its resumable state, or the previous copy, exists)."""
        last = last or self.last
        return last.exists() or previous_checkpoint(last).exists()

    def prepare(
        self, resume: bool, last: Path | None = None, overwrite: bool = False, main: bool = True
    ) -> None:
        """Check the directory against ``resume``/``overwrite`` before any work.

        A resume needs the state to continue from. A new run needs an empty or absent folder;
        ``overwrite`` replaces a run eakd wrote (its own files only, :meth:`clear`), never a
        folder holding files of anyone else. A run of ours that stopped before its first
        checkpoint holds nothing to keep and is started over. Only the ``main`` process
        removes files.
        """
        last = last or self.last
        if resume and overwrite:
            raise ValueError(
                "--resume and --overwrite exclude each other: --resume continues the run, "
                "--overwrite replaces it"
            )
        if resume:
            if not self.holds_run(last):
                raise CheckpointError(
                    f"cannot resume: no checkpoint at {last}; start the run without --resume"
                )
            return
        entries = sorted(e.name for e in self.root.iterdir()) if self.root.is_dir() else []
        if not entries:
            return
        if not self.is_eakd_run():
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise RunExists(
                f"{self.root} exists and holds files eakd did not write ({shown}); eakd never "
                "deletes them: choose another name or output_dir"
            )
        if not overwrite and (self.finished or self.holds_run(last)):
            what = (
                "a finished run (results.json)"
                if self.finished
                else f"a run ({last.relative_to(self.root)})"
            )
            cont = "" if self.finished else "pass --resume to continue it, "
            raise RunExists(
                f"{self.root} already holds {what}; {cont}pass --overwrite to replace it, "
                "or choose another name/output_dir"
            )
        if main:
            self.clear()

    def start(self) -> None:
        """Mark the folder as an eakd run (before anything else is written to it)."""
        from .. import __version__

        self.root.mkdir(parents=True, exist_ok=True)
        if not self.marker.is_file():
            write_json(self.marker, {"eakd": __version__, "run": self.root.name})
        for folder in (self.root, self.checkpoints):  # a killed write's temporary files
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                if _TEMP.fullmatch(tmp.name) and tmp.is_file():
                    tmp.unlink()

    def own_entries(self) -> list[Path]:
        """The top-level files and folders of this run that eakd writes (every :class:`RunPath`
        of the class), present or not."""
        names: dict[str, None] = {}
        for klass in reversed(type(self).__mro__):
            for value in vars(klass).values():
                if isinstance(value, RunPath):
                    names[Path(value.name).parts[0]] = None
        return [self.root / n for n in names]

    def clear(self) -> list[Path]:
        """Remove this run's own files and folders (:meth:`own_entries`); anything else in the
        folder stays. Returns what was removed."""
        removed = []
        for path in self.own_entries():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(path)
        return removed

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

    def truncate_diagnostics(self, upto: int, key: str = "epoch") -> None:
        """A resumed run keeps the diagnostics rows up to ``upto`` (its checkpoint); later rows
        were written by the stopped run after it and are written again."""
        rows = self.read_diagnostics()
        kept = [r for r in rows if int(r.get(key, 0)) <= upto]
        if len(kept) != len(rows):
            atomic_write_text(self.diagnostics, "".join(json.dumps(r) + "\n" for r in kept))

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
            if RunDir.config.name in filenames or RunDir.marker.name in filenames:
                dirnames[:] = []  # a run's own folders hold no runs
                yield RunDir(dirpath)

    def remove_runs(self, also: tuple[str, ...] = ()) -> list[Path]:
        """``--fresh``: clear every eakd run at or below this folder (:meth:`clear`: their own
        files only) and remove the folders that are left empty; ``also`` names further files
        of this folder that eakd wrote (a sweep's tables). Folders that are not eakd runs and
        files eakd did not write are never touched. Returns the runs cleared."""
        for name in also:
            path = self.root / name
            if path.is_file():
                path.unlink()
        cleared = []
        for run in list(self.iter_runs()):
            real = Path(os.path.realpath(run.root))
            if not run.is_eakd_run() or not real.is_relative_to(os.path.realpath(self.root)):
                continue
            run.clear()
            cleared.append(run.root)
            folder = run.root
            while not folder.is_symlink() and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                if folder == self.root:
                    break
                folder = folder.parent
        return cleared


# -- logging ------------------------------------------------------------------------------------
class RunLogger:
    """CSV (always) and TensorBoard (when asked and installed) logs of one run.

    Each CSV row is written and flushed at once, so a stopped run keeps every finished row. On
    resume, rows past ``resume_at`` (by ``step_key``) belong to the stopped run and are dropped.
    ``path`` names another CSV of the run (e.g. :attr:`RunDir.eval_log`); TensorBoard scalars
    of every logger of a run go to the same events folder. ``trackers`` names experiment
    trackers (:func:`start_trackers`; ``config`` is logged as their hyper-parameters) that get
    every numeric column of every row at its step, or passes another logger's started
    ``.trackers`` to share them.
    """

    def __init__(
        self,
        run: RunDir,
        resume_at: int | None = None,
        tensorboard: bool = False,
        step_key: str = "epoch",
        say: Any = None,
        path: Path | None = None,
        trackers: Sequence[str] = (),
        config: dict[str, Any] | None = None,
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
        # names start trackers this logger owns; started trackers (another logger's
        # ``.trackers``) are shared and closed by their owner
        self.owns_trackers = all(isinstance(t, str) for t in trackers)
        self.trackers = start_trackers(trackers, run, config) if self.owns_trackers else trackers

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
        step = int(row.get(self.step_key, 0))
        scalars = {
            k: v
            for k, v in row.items()
            if k != self.step_key and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
        for tracker in self.trackers:
            tracker.log(scalars, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.owns_trackers:
            for tracker in self.trackers:
                tracker.finish()
        self.trackers = []


def start_trackers(
    names: Sequence[str], run: RunDir, config: dict[str, Any] | None = None
) -> list[Any]:
    """Experiment trackers by the names Accelerate's ``log_with`` takes (``wandb``, ``mlflow``,
    ``comet_ml``, ``aim``, ``clearml``, ``dvclive``, ``trackio``, ... and any class registered
    with ``accelerate.tracking.register_tracker_class``), started as
    ``Accelerator.init_trackers`` starts them: project = the run's name, logging directory =
    ``<run>/trackers``, then the run's config as their hyper-parameters. Their own settings
    (entity, tracking URI, offline mode) come from their environment variables. TensorBoard is
    the engines' ``tensorboard`` switch, not a tracker here."""
    if not names:
        return []
    try:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS
    except ImportError as exc:
        raise ImportError(
            "experiment trackers go through Accelerate: pip install accelerate (in 'eakd[llm]')"
        ) from exc
    import importlib.util

    trackers = []
    for name in names:
        if name == "tensorboard":
            raise ConfigError(
                "tensorboard is not a tracker here: use the engine's tensorboard switch "
                "(log.tensorboard / train.tensorboard: true)"
            )
        cls = LOGGER_TYPE_TO_CLASS.get(name)
        if cls is None:
            known = ", ".join(sorted(n for n in LOGGER_TYPE_TO_CLASS if n != "tensorboard"))
            raise ConfigError(f"unknown tracker {name!r}; Accelerate knows {known}")
        builtin = cls.__module__ == "accelerate.tracking"
        if builtin and importlib.util.find_spec(name) is None:
            raise ImportError(f"the {name} tracker is not installed: pip install {name}")
        args = (run.root.name, str(run.root / "trackers"))
        tracker = cls(*args[: 2 if cls.requires_logging_directory else 1])
        tracker.start()
        if config is not None:
            tracker.store_init_configuration(config)
        trackers.append(tracker)
    return trackers
