"""Shared engine plumbing: seeding, RNG state, devices, distributed runs (the run directory, its
files and logs are :mod:`eakd.engines.run`)."""

from __future__ import annotations

import gc
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

__all__ = [
    "DistContext",
    "get_rng_state",
    "resolve_device",
    "seed_everything",
    "set_rng_state",
    "setup_distributed",
    "teardown_distributed",
]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy (if present) and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the global RNG user code draws from
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def get_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
        # tensors and plain numbers only, so checkpoints load with torch.load(weights_only=True)
        state["numpy"] = (kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached)
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA (this rank's GPU), then MPS, then CPU. Never assumes a GPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use device=cpu")
    return device


@dataclass
class DistContext:
    """Rank information; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: Iterable[float], device: torch.device) -> list[float]:
        values = list(values)
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()


def setup_distributed(device_name: str = "auto") -> DistContext:
    """Join the process group that ``torchrun`` describes (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not torch_dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def teardown_distributed(wait: bool = True) -> None:
    """Leave the process group, if one is open. With ``wait`` every rank first waits for the
    others (use it after a successful run; after an error a barrier could hang). Exiting with
    the group still open can abort a rank while gloo's threads are torn down ("terminate
    called without an active exception")."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        # free DDP reducers kept alive by reference cycles while the interpreter is whole:
        # their pending gloo work must not be destroyed during finalisation
        gc.collect()
        try:
            if wait:
                torch_dist.barrier()
        finally:
            torch_dist.destroy_process_group()
