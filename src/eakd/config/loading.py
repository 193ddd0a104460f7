"""YAML loading and dotted ``key=value`` overrides.

Config files, overrides and a run's ``config.yaml`` are read and written through
:func:`yaml_loads` / :func:`yaml_dumps`: PyYAML's safe loader and dumper with the YAML 1.2 float
rule. YAML 1.1, which PyYAML implements, wants a dot and a signed exponent in a float, so
``5e-4``, ``1e-4`` and ``1.0e6`` would be strings; here they are floats, as YAML 1.2 reads them.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

from .binding import ConfigError

__all__ = [
    "apply_overrides",
    "load_config",
    "load_yaml",
    "parse_override",
    "yaml_dumps",
    "yaml_loads",
]

_FLOAT_TAG = "tag:yaml.org,2002:float"

#: Plain scalars read as floats: the YAML 1.2 core schema's floats (``1.5``, ``.5``, ``1.``,
#: ``5e-4``, ``-2.5E+3``, ``.inf``, ``.nan``) plus what YAML 1.1 also read as floats (digit
#: separators ``1_000.5``, base-60 ``1:30.5``), so every float of an older config stays one.
#: A float needs a dot or an exponent: ``10`` stays an int.
FLOAT_PATTERN = re.compile(
    r"""^(?:
        [-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
      | [-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
      | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
      | [-+]?\.(?:inf|Inf|INF)
      | \.(?:nan|NaN|NAN)
    )$""",
    re.VERBOSE,
)


def _yaml():
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml ships with every engine extra
        raise ImportError("reading configs needs PyYAML: pip install 'eakd[vision]'") from exc
    return yaml


def _with_float_rule(base: type) -> type:
    """A subclass of PyYAML's ``SafeLoader``/``SafeDumper`` whose float resolver is
    :data:`FLOAT_PATTERN`. The dumper needs it too: it quotes a string such as ``"5e-4"`` only
    if that string would read back as something else."""
    cls = type(base.__name__.replace("Safe", "Eakd"), (base,), {})
    # a copy without the YAML 1.1 float resolver (add_implicit_resolver only appends)
    cls.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    cls.add_implicit_resolver(_FLOAT_TAG, FLOAT_PATTERN, list("-+0123456789."))
    return cls


@functools.cache
def _loader() -> type:
    return _with_float_rule(_yaml().SafeLoader)


@functools.cache
def _dumper() -> type:
    return _with_float_rule(_yaml().SafeDumper)


def yaml_loads(text: str) -> Any:
    """Parse YAML text safely, with the YAML 1.2 float rule (``5e-4`` is a float).

    Raises ``yaml.YAMLError`` on invalid YAML."""
    return _yaml().load(text, Loader=_loader())


def yaml_dumps(data: Any) -> str:
    """YAML text for plain data, keys in insertion order, that :func:`yaml_loads` reads back
    as ``data`` (strings that look like numbers are quoted)."""
    return _yaml().dump(data, Dumper=_dumper(), sort_keys=False)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a parse error names the file (and line)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    yaml = _yaml()
    try:
        data = yaml_loads(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.1"`` -> ``(["train", "lr"], 0.1)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml_loads(raw) if raw.strip() else ""
    except ImportError:
        raise  # no PyYAML: say which extra to install, do not read every value as a string
    except Exception:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``data`` with each dotted override set (intermediate mappings created).
    Keys are checked later, when the data is bound to its schema."""
    out = copy.deepcopy(data)
    for text in overrides or []:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {text!r}: {where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a YAML config and apply ``key.path=value`` overrides."""
    return apply_overrides(load_yaml(path), overrides)
