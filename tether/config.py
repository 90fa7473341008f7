"""Plain-dataclass configs from dicts / YAML: unknown keys and wrong types are errors naming the key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def config_hash(cfg: Any) -> str:
    return hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def config_from_dict(cls: type[T], d: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``d``; nested dataclasses recurse; lists become tuples."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(fields)}")
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        sub = _dataclass_in(hint)
        path = f"{where}.{name}"
        if sub is not None and isinstance(value, dict):
            kwargs[name] = config_from_dict(sub, value, path)
        elif isinstance(value, list):
            kwargs[name] = _tuples(value)
        else:
            _check_scalar(hint, value, path)
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from e


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _dataclass_in(hint) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _check_scalar(hint, value, path: str) -> None:
    base = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}.get(hint)
    if base is not None and (not isinstance(value, base) or (hint is not bool and isinstance(value, bool))):
        raise ValueError(f"{path}: expected {hint.__name__}, got {value!r}")


def load_yaml_config(cls: type[T], path: str | Path, overrides: dict[str, Any] | None = None) -> T:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    data.update(overrides or {})
    return config_from_dict(cls, data, where=str(path))
