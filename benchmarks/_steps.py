"""The training-step timer the step-overhead benchmarks share."""

from __future__ import annotations

import time


def time_steps(task, optimizer, batches, steps: int, warmup: int = 1) -> list[float]:
    """Seconds of ``steps`` optimisation steps (forward, backward, update) of ``task`` over
    ``batches`` in turn, after ``warmup`` untimed steps that warm the caches."""
    times = []
    for i in range(steps + warmup):
        x, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = task((x, y))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times
