"""Typed config objects loaded from YAML.

Every config section is a frozen-free ``@dataclass`` whose fields carry their type and, where it
matters, their allowed range through :func:`spec`. :func:`from_dict` turns a plain dict (from
``yaml.safe_load``) into the dataclass tree and refuses, with one line naming the dotted key:

- unknown keys, with a suggestion (``traning`` -> ``training``);
- wrong types (``training.epochs: 'abc'`` is not an integer);
- values outside their range or outside a ``Literal[...]`` choice.

Overrides from the command line (``training.epochs=3``) are parsed with ``yaml.safe_load`` and
validated by the same code, so a CLI value and a YAML value are held to the same rules.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that cannot be used; the message is one line naming the key."""


def spec(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    help: str = "",
) -> Any:
    """A dataclass field with a range and a help text (``help`` is shown by ``--help-config``)."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "help": help}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        def factory(d=default):
            return (_copy(d))
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    """A default that no two configs share, nested sections included (``dataclasses.replace``
    would copy only the top level: ``Config().logging.wandb`` was one object for every config)."""
    return copy.deepcopy(value)


# --------------------------------------------------------------------------------------------
# dict -> dataclass


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, validating every key (see module docstring)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{path or '<root>'}': expected a mapping, found {_show(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key_message(_join(path, str(key)), str(key), list(fields)))
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], _join(path, name), field.metadata)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ cross-field checks
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config section '{path or '<root>'}': {exc}") from exc
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key_message(dotted: str, key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"config key '{dotted}': unknown key{hint}; allowed: {', '.join(sorted(allowed))}"


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _coerce(tp: Any, value: Any, path: str, meta: Any = None) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(a, value, path, meta)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"config key '{path}': {_show(value)} fits none of {tp}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"config key '{path}': expected one of {list(choices)}, found {_show(value)}{hint}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{path}': expected a list, found {_show(value)}")
        (item_tp, *_rest) = get_args(tp) or (Any,)
        items = [_coerce(item_tp, v, f"{path}[{i}]", meta) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{path}': expected a mapping, found {_show(value)}")
        _key_tp, val_tp = get_args(tp)
        return {str(k): _coerce(val_tp, v, _join(path, str(k)), meta) for k, v in value.items()}
    if tp is Any:
        return value
    return _check_range(_scalar(tp, value, path), path, meta)


def _scalar(tp: Any, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{path}': expected true or false, found {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{path}': expected an integer, found {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{path}': expected a number, found {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{path}': expected a string, found {_show(value)}")
    raise TypeError(f"schema type {tp!r} at '{path}' is not supported")  # a bug in the schema


def _check_range(value: Any, path: str, meta: Any) -> Any:
    if not meta or not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"config key '{path}': expected a finite number, found {_show(value)}")
    for op, bound, ok in (
        (">=", meta.get("ge"), lambda v, b: v >= b),
        (">", meta.get("gt"), lambda v, b: v > b),
        ("<=", meta.get("le"), lambda v, b: v <= b),
        ("<", meta.get("lt"), lambda v, b: v < b),
    ):
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"config key '{path}': expected a value {op} {bound}, found {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# dataclass -> dict, files and overrides


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config tree (what ``config.yaml`` in a run holds)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}': not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file '{p}': {problem}{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{p}': not UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}': expected a mapping at the top level, found {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'a.b.c=value'`` -> (['a', 'b', 'c'], value parsed as a YAML scalar or list)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict, keys: list[str], value: Any) -> None:
    """Set ``data[k0][k1]...`` creating missing mappings; the schema validates the result."""
    node = data
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{'.'.join(keys)}': '{'.'.join(keys[: i + 1])}' is not a section")
        node = child
    node[keys[-1]] = value


def describe(cls: type, path: str = "") -> list[str]:
    """One line per key: dotted path, type, default and help text (for ``--help-config``)."""
    lines = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = _join(path, f.name)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.extend(describe(tp, dotted))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "<required>"
        )
        tp_name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
        lines.append(f"{dotted}: {tp_name} = {default!r}  {f.metadata.get('help', '')}".rstrip())
    return lines


__all__ = [
    "ConfigError",
    "apply_override",
    "describe",
    "from_dict",
    "parse_override",
    "read_yaml",
    "spec",
    "to_dict",
]
