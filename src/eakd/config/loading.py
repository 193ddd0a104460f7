"""YAML loading and dotted ``key=value`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .binding import ConfigError

__all__ = ["apply_overrides", "load_config", "load_yaml", "parse_override"]


def _yaml():
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml ships with every engine extra
        raise ImportError("reading configs needs PyYAML: pip install 'eakd[vision]'") from exc
    return yaml


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a parse error names the file (and line)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    yaml = _yaml()
    try:
        data = yaml.safe_load(p.read_text())
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
        value = _yaml().safe_load(raw) if raw.strip() else ""
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
