"""Strict configuration: YAML files and ``key=value`` overrides bound to dataclasses.

A config is plain data (YAML) bound to a dataclass schema at load time. An unknown key or a
value of the wrong type fails before any work starts, naming the key, the expected type and the
valid keys. Overrides use dotted paths: ``train.lr=0.1 loss.name=dkd``. Numbers follow the YAML
1.2 float rule: ``train.lr=5e-4`` is a float.
"""

from .binding import ConfigError, from_dict, to_dict
from .loading import (
    apply_overrides,
    load_config,
    load_yaml,
    parse_override,
    yaml_dumps,
    yaml_loads,
)

__all__ = [
    "ConfigError",
    "apply_overrides",
    "from_dict",
    "load_config",
    "load_yaml",
    "parse_override",
    "to_dict",
    "yaml_dumps",
    "yaml_loads",
]
