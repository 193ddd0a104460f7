"""The memory probe the LLM loss benchmarks share."""

from __future__ import annotations


def available_mb() -> float:
    """``MemAvailable`` from /proc/meminfo (inf where unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("inf")
