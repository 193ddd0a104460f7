"""Run tests/gpu/test_cuda.py without pytest (a GPU machine with torch but nothing installed).

    PYTHONPATH=src python tests/gpu/standalone.py [-k SUBSTRING]

Each ``test_*`` function runs once per combination of its ``parametrize`` marks (read from the
function, as pytest stores them), after ``torch.manual_seed(0)`` as tests/conftest.py does.
Where pytest is absent, a stand-in module gives the test file the ``pytest.mark`` it uses.
Prints one line per case and a summary; exits 1 when a case fails, 2 without CUDA.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import sys
import time
import traceback
import types
from pathlib import Path


class _Mark:
    """What ``pytest.mark.<name>(*args, **kwargs)`` leaves on a function."""

    def __init__(self, name, args, kwargs):
        self.name, self.args, self.kwargs = name, args, kwargs


class _MarkGenerator:
    def __getattr__(self, name):
        def mark(*args, **kwargs):
            def decorate(func):
                func.__dict__.setdefault("pytestmark", []).append(_Mark(name, args, kwargs))
                return func

            return decorate

        return mark


def _install_stand_in() -> None:
    if importlib.util.find_spec("pytest") is None:
        stand_in = types.ModuleType("pytest")
        stand_in.mark = _MarkGenerator()
        sys.modules["pytest"] = stand_in


def _cases(func):
    """``(id, kwargs)`` for every combination of the function's parametrize marks."""
    axes = []
    for mark in getattr(func, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], list(mark.args[1])
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        ids = mark.kwargs.get("ids") or [None] * len(values)
        axis = []
        for value, ident in zip(values, ids, strict=True):
            row = value if len(names) > 1 else (value,)
            label = ident if ident is not None else "-".join(str(v) for v in row)
            axis.append((label, dict(zip(names, row, strict=True))))
        axes.append(axis)
    for combo in itertools.product(*axes):
        label = "-".join(lab for lab, _ in combo)
        kwargs = {k: v for _, kw in combo for k, v in kw.items()}
        yield (f"[{label}]" if combo else ""), kwargs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="run only cases whose name contains this")
    args = parser.parse_args()
    _install_stand_in()
    import torch

    if not torch.cuda.is_available():
        print("standalone: CUDA is not available; these tests need a CUDA device")
        return 2
    path = Path(__file__).with_name("test_cuda.py")
    spec = importlib.util.spec_from_file_location("test_cuda", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    passed, failed = 0, []
    for name in sorted(n for n in vars(module) if n.startswith("test_")):
        func = getattr(module, name)
        for suffix, kwargs in _cases(func):
            case = name + suffix
            if args.k not in case:
                continue
            torch.manual_seed(0)
            start = time.perf_counter()
            try:
                func(**kwargs)
            except Exception:
                failed.append(case)
                print(f"FAIL {case}\n{traceback.format_exc(limit=-3)}", flush=True)
            else:
                passed += 1
                print(f"ok   {case} ({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"{passed} passed, {len(failed)} failed" + (": " + ", ".join(failed) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
