"""Plain-dataclass configs from dicts / YAML: unknown keys and wrong types are errors naming the key."""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import textwrap
import types
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
    """Build dataclass ``cls`` from ``d``; nested dataclasses recurse; lists become tuples.

    Every value is checked against its field's annotation before the dataclass sees it: the type, a
    finite number for every float (NaN and Inf are refused: a NaN learning rate or time limit trains
    silent garbage), and the length of fixed-size tuples (``goal_w: tuple[float, float, float]``).
    Errors are one line naming the key, e.g. ``hover config.goal_w: expected 3 values, got 2``.
    """
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
        else:
            kwargs[name] = _checked(hint, value, path)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from e


def check_value(hint, value, path: str):
    """``value`` checked against the annotation ``hint`` (type, finite floats, tuple lengths) and
    converted (lists -> tuples); ValueError naming ``path`` otherwise."""
    return _checked(hint, value, path)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _dataclass_in(hint) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


_NON_FINITE_WORDS = {"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def _checked(hint, value, path: str):
    """``value`` converted (lists -> tuples) after checking it against the annotation ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ValueError(f"{path}: a value is required, got null")
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _checked(options[0], value, path)
        return _tuples(value)  # an unusual union: the dataclass's own checks decide
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list [..], got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_checked(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if args and len(value) != len(args):
            raise ValueError(f"{path}: expected {len(args)} values, got {len(value)} ({list(value)!r})")
        return tuple(_checked(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))) if args \
            else _tuples(value)
    if dataclasses.is_dataclass(hint):
        raise ValueError(f"{path}: expected a mapping of {hint.__name__} keys, got {value!r}")
    if isinstance(value, list):
        return _tuples(value)
    _check_scalar(hint, value, path)
    return value


def _check_scalar(hint, value, path: str) -> None:
    base = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}.get(hint)
    if base is None:
        return
    if not isinstance(value, base) or (hint is not bool and isinstance(value, bool)):
        hint_text = ""
        if hint in (int, float) and isinstance(value, str):
            word = value.strip().lower()
            if word in _NON_FINITE_WORDS:
                hint_text = (" (a string: YAML spells NaN and Inf as .nan and .inf, and neither is accepted: "
                             "give a finite number)")
            else:
                try:
                    float(value)
                    hint_text = " (a string: YAML reads exponents only with a dot and a sign, e.g. 1.0e+3)"
                except ValueError:
                    pass
        raise ValueError(f"{path}: expected {hint.__name__}, got {value!r}{hint_text}")
    if hint is float and not math.isfinite(value):
        raise ValueError(f"{path}: {value!r} is not a finite number; give a finite value")


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (read from its source), whitespace folded: the
    one-line doc with its unit that every config field carries. {} where the source is unavailable."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and \
                    isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) and \
                    isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def load_yaml_config(cls: type[T], path: str | Path, overrides: dict[str, Any] | None = None) -> T:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text (YAML) file ({e.reason} at byte {e.start})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    data = {**data, **(overrides or {})}
    return config_from_dict(cls, data, where=str(path))
