"""The layering of ``src/eakd`` (DESIGN.md): dependencies point down only, no import cycles.

Layers, bottom to top::

    utilities  eakd.registry, eakd._atomic, eakd.config   (usable from every layer)
    core       eakd.core
    losses     eakd.losses
    adaptive   eakd.adaptive, eakd.functional, eakd (the package's re-exports)
    library    eakd.objectives, eakd.models, eakd.data
    engines    eakd.engines, eakd.integrations
    analysis   eakd.analysis
    demos      eakd.demos
    cli        eakd.cli

A module may import its own layer and the layers below it; siblings of one layer may import
each other, but no two files may import each other through any chain (a cycle). One engine
does not import another engine's modules: engines share only ``eakd.engines.run`` and
``eakd.engines.utils``. Every import counts: module level and inside functions, ``import x``
and ``from x import y``, absolute and relative, and ``importlib.import_module`` with a literal
name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "eakd"

LAYERS = (
    "utilities",
    "core",
    "losses",
    "adaptive",
    "library",
    "engines",
    "analysis",
    "demos",
    "cli",
)

#: Package (or module) -> layer; a module belongs to its longest listed prefix.
PACKAGES = {
    "eakd.registry": "utilities",
    "eakd._atomic": "utilities",
    "eakd.config": "utilities",
    "eakd.core": "core",
    "eakd.losses": "losses",
    "eakd": "adaptive",
    "eakd.adaptive": "adaptive",
    "eakd.functional": "adaptive",
    "eakd.objectives": "library",
    "eakd.models": "library",
    "eakd.data": "library",
    "eakd.engines": "engines",
    "eakd.integrations": "engines",
    "eakd.analysis": "analysis",
    "eakd.demos": "demos",
    "eakd.cli": "cli",
}

#: Modules of ``eakd.engines`` that every engine may import.
SHARED_ENGINE_MODULES = ("eakd.engines", "eakd.engines.run", "eakd.engines.utils")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported eakd module (a submodule when ``from pkg import submodule``)
    where: str  # file:line


def layer(module: str) -> str | None:
    """The layer of ``module``: ``eakd`` itself is exact; others match their longest prefix."""
    if module == "eakd":
        return PACKAGES["eakd"]
    parts = module.split(".")
    for i in range(len(parts), 1, -1):
        name = ".".join(parts[:i])
        if name in PACKAGES:
            return PACKAGES[name]
    return None


def modules(src: Path = SRC) -> dict[str, Path]:
    """Module name -> file for every ``.py`` under ``src`` (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = (src.name, *path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(module: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """Every import of an ``eakd`` module in ``path``, at any depth of the syntax tree."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    # shown from the folder that holds the top package: src/eakd/...
    file = path.relative_to(path.parents[module.count(".") + (path.name == "__init__.py") + 1])

    def absolute(name: str | None, level: int) -> str:
        if not level:
            return name or ""
        base = package.split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join([*base, name] if name else base)

    def found(target: str, line: int) -> Import | None:
        if target != "eakd" and not target.startswith("eakd."):
            return None
        return Import(module, target, f"{file}:{line}")

    out: list[Import | None] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [found(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node.module, node.level)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append(found(sub if sub in known else base, node.lineno))
        elif isinstance(node, ast.Call) and _is_import_module(node.func):
            args = node.args
            if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                name = args[0].value
                level = len(name) - len(name.lstrip("."))
                out.append(found(absolute(name[level:] or None, level), node.lineno))
    return [i for i in out if i is not None and i.target != module]


def _is_import_module(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id == "import_module"


def all_imports(src: Path = SRC) -> list[Import]:
    known = modules(src)
    return [i for name, path in known.items() for i in imports(name, path, known)]


def engine(module: str) -> str | None:
    """The engine a module belongs to (``eakd.engines.<engine>...``), None for shared ones."""
    parts = module.split(".")
    if len(parts) > 2 and parts[:2] == ["eakd", "engines"] and module not in SHARED_ENGINE_MODULES:
        return parts[2]
    return None


def cycles(edges: list[Import]) -> list[list[Import]]:
    """One cycle per strongly connected component of the import graph (Tarjan)."""
    graph: dict[str, dict[str, Import]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)

    found = []
    for component in components:
        start = min(component)
        # Shortest path back to ``start`` inside the component (breadth first).
        paths = {start: []}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w, e in sorted(graph.get(v, {}).items()):
                if w == start:
                    found.append([*paths[v], e])
                    queue = []
                    break
                if w in component and w not in paths:
                    paths[w] = [*paths[v], e]
                    queue.append(w)
    return found


# --- the rules, on src/eakd ------------------------------------------------------------


def test_every_module_has_a_layer():
    missing = sorted(m for m in modules() if layer(m) is None)
    assert not missing, f"modules with no layer (add their package to PACKAGES): {missing}"


def test_imports_point_down():
    bad = []
    for i in all_imports():
        src, dst = layer(i.source), layer(i.target)
        if dst is None:
            bad.append(f"{i.where}: {i.source} imports {i.target}, which has no layer")
        elif LAYERS.index(dst) > LAYERS.index(src):
            bad.append(f"{i.where}: {i.source} ({src}) imports {i.target} ({dst}), a higher layer")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_engines_share_only_the_run_and_utils_modules():
    bad = []
    for i in all_imports():
        src, dst = engine(i.source), engine(i.target)
        if dst is not None and src != dst and layer(i.source) == "engines":
            owner = f"the {src} engine" if src else "a shared engine module"
            bad.append(f"{i.where}: {i.source} ({owner}) imports {i.target} ({dst} engine)")
    assert not bad, (
        "engines import only their own modules and "
        f"{', '.join(SHARED_ENGINE_MODULES)}:\n" + "\n".join(bad)
    )


def test_no_import_cycles():
    found = cycles(all_imports())
    lines = [" -> ".join([c[0].source, *(f"{e.target} ({e.where})" for e in c)]) for c in found]
    assert not found, "import cycles:\n" + "\n".join(lines)


# --- the walker itself, on a small package ---------------------------------------------


def test_the_walker_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "eakd"
    (pkg / "core").mkdir(parents=True)
    (pkg / "models").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("from . import entropy\n")
    (pkg / "core" / "entropy.py").write_text(
        "import os\n"
        "def f():\n"
        "    from ..models import base\n"
        "    import eakd.models.base as b\n"
        "    importlib.import_module('eakd.cli')\n"
        "    from .. import models\n"
    )
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "base.py").write_text("from ..core.entropy import f\n")
    found = {(i.source, i.target, i.where) for i in all_imports(pkg)}
    assert found == {
        ("eakd.core", "eakd.core.entropy", f"{tmp_path.name}/eakd/core/__init__.py:1"),
        ("eakd.core.entropy", "eakd.models.base", f"{tmp_path.name}/eakd/core/entropy.py:3"),
        ("eakd.core.entropy", "eakd.models.base", f"{tmp_path.name}/eakd/core/entropy.py:4"),
        ("eakd.core.entropy", "eakd.cli", f"{tmp_path.name}/eakd/core/entropy.py:5"),
        ("eakd.core.entropy", "eakd.models", f"{tmp_path.name}/eakd/core/entropy.py:6"),
        ("eakd.models.base", "eakd.core.entropy", f"{tmp_path.name}/eakd/models/base.py:1"),
    }
    (cycle,) = cycles(all_imports(pkg))
    assert [(e.source, e.target) for e in cycle] == [
        ("eakd.core.entropy", "eakd.models.base"),
        ("eakd.models.base", "eakd.core.entropy"),
    ]
    assert layer("eakd.models.base") == "library" and layer("eakd") == "adaptive"
    assert layer("eakd.engines.llm.train") == "engines" and layer("eakdx") is None
    assert engine("eakd.engines.llm.train") == "llm" and engine("eakd.engines.run") is None
