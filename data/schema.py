"""Typed config objects loaded from YAML: the machinery every config section is built with.

Why it lives in ``data/``: it must sit on the ground floor, below every package that declares a
config section (``data/config.py``, ``models/config.py``, ``training/config.py``,
``training/balancers/config.py``), so that no lower package imports a higher one. ``data`` is that
floor (``models`` imports ``data.stats``; ``training`` imports both), and the top-level layout is
fixed (DESIGN.md), so there is no neutral package to put it in. It holds no data-specific code.

Every config section is a frozen-free ``@dataclass`` whose fields carry their type and, where it
matters, their allowed range through :func:`spec`. :func:`from_dict` turns a plain dict (from
``yaml.safe_load``) into the dataclass tree and refuses, with one line naming the dotted key:

- unknown keys, with a suggestion (``traning`` -> ``training``);
- wrong types (``training.epochs: 'abc'`` is not an integer);
- values outside their range or outside a ``Literal[...]`` choice.

Overrides from the command line (``training.epochs=3``) are parsed with ``yaml.safe_load`` and
validated by the same code, so a CLI value and a YAML value are held to the same rules. A mapping
given as an override (``training={epochs: 3, lr: 1e-3}``) merges into the section like a file
that ``extends`` another: it sets the keys it names and keeps the others; ``null`` over a whole
section is refused (it would silently reset it to the defaults).

YAML text (files and overrides) is read by :func:`load_yaml`: ``yaml.safe_load`` plus limits
checked on the composed node graph before any Python object is built: a key written twice in one
mapping is an error (YAML keeps the last silently), an alias bomb or a recursive alias is refused
(:data:`MAX_CONFIG_NODES` values after expanding aliases, :data:`MAX_CONFIG_DEPTH` levels), and a
file over :data:`MAX_CONFIG_BYTES` is not parsed. An empty file is refused: it would train on the
defaults without a word.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import reprlib
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

# Limits of a config (a file or one override): configs/config.yaml is about 12 KB and 400 values.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 10_000  # values after expanding aliases: an alias bomb expands to billions
MAX_CONFIG_DEPTH = 32  # the schema nests 4 levels
MAX_CONFIG_STRING = 4096  # characters of one text value (a path or a name): PATH_MAX on Linux


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


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _show(value: Any) -> str:
    """A bounded repr: a value built from aliases may be huge, and the message is one line."""
    return f"{_REPR.repr(value)} ({type(value).__name__})"


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
        if isinstance(value, str) and len(value) > MAX_CONFIG_STRING:
            raise ConfigError(f"config key '{path}': expected at most MAX_CONFIG_STRING = {MAX_CONFIG_STRING:,} "
                              f"characters, found {len(value):,}")
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


def flatten_tree(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"lr": 0.002}}`` -> ``{"training.lr": 0.002}`` for every leaf (an empty dict is a leaf):
    the dotted keys that overrides, resume changes, HParams and run comparisons use."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten_tree(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_yaml(text: str, where: str, path: str = "") -> Any:
    """``yaml.safe_load(text)`` after checking the node graph (see module docstring); errors are
    :class:`ConfigError` lines starting with ``where`` and naming keys below ``path`` (YAML syntax
    errors stay ``yaml.YAMLError``)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, where, path)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply (more than MAX_CONFIG_DEPTH = {MAX_CONFIG_DEPTH} "
                          "levels)") from None
    finally:
        loader.dispose()


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_nodes(root: yaml.Node, where: str, root_path: str = "") -> None:
    """Refuse duplicate keys, recursive aliases, more than MAX_CONFIG_NODES values after expanding
    aliases and more than MAX_CONFIG_DEPTH levels. Each node is visited once (sizes are memoized),
    so a bomb is measured in linear time."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node, path: str, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise ConfigError(f"{where}: key '{path or '<root>'}' refers to itself (a recursive alias)")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{where}: key '{path}' is nested more than MAX_CONFIG_DEPTH = {MAX_CONFIG_DEPTH} levels")
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            lines: dict[str, int] = {}
            for key, value in node.value:
                child = path
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                    child = _join(path, key.value)
                    line = key.start_mark.line + 1
                    if key.value in lines:
                        at = f"on line {line}" if lines[key.value] == line else f"(lines {lines[key.value]} and {line})"
                        raise ConfigError(f"{where}: key '{child}' appears twice {at}; "
                                          "YAML would keep the last silently: remove one")
                    lines[key.value] = line
                total += size(key, child, depth + 1) + size(value, child, depth + 1)
                _check_total(total, where, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                total += size(value, f"{path}[{i}]", depth + 1)
                _check_total(total, where, path)
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root, root_path, 0)


def _check_total(total: int, where: str, path: str) -> None:
    if total > MAX_CONFIG_NODES:
        raise ConfigError(f"{where}: key '{path or '<root>'}' holds more than MAX_CONFIG_NODES = {MAX_CONFIG_NODES:,} "
                          "values after expanding aliases (an alias bomb?); expected a config")


def close_path(path: str | Path) -> str:
    """" (did you mean 'configs/quickstart.yaml'?)" for a mistyped file name whose folder exists, else ""."""
    p = Path(path)
    try:
        names = [c.name for c in p.parent.iterdir()] if p.parent.is_dir() else []
    except OSError:
        return ""
    close = difflib.get_close_matches(p.name, names, n=1, cutoff=0.6)
    return f" (did you mean '{p.parent / close[0]}'?)" if close else ""


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with :func:`load_yaml`; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}': not found{close_path(p)}")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file '{p}': {p.stat().st_size:,} bytes; expected at most "
                          f"MAX_CONFIG_BYTES = {MAX_CONFIG_BYTES:,} (data/schema.py)")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"), f"config file '{p}'")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file '{p}': {problem}{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{p}': not UTF-8 text") from None
    if data is None:
        raise ConfigError(f"config file '{p}': empty; expected a mapping of sections (e.g. 'training: {{epochs: 3}}'); "
                          "to train on the defaults, give no --config")
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
        value = load_yaml(raw, f"override '{key}'", key) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict, keys: list[str], value: Any) -> None:
    """Set ``data[k0][k1]...`` creating missing mappings; a mapping merges into a mapping already
    there (see module docstring); the schema validates the result."""
    node = data
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{'.'.join(keys)}': '{'.'.join(keys[: i + 1])}' is not a section")
        node = child
    node[keys[-1]] = merge_value(node.get(keys[-1]), value, f"override '{'.'.join(keys)}'", ".".join(keys))


def deep_merge(base: dict, top: dict, where: str, path: str = "") -> dict:
    """``base`` with ``top``'s keys set over it, mappings merged key by key (``extends`` and mapping
    overrides); ``null`` over a mapping is refused (it would reset a whole section to defaults)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merge_value(out.get(key), value, where, _join(path, str(key)))
    return out


def merge_value(old: Any, new: Any, where: str, path: str) -> Any:
    if isinstance(new, dict) and isinstance(old, dict):
        return deep_merge(old, new, where, path)
    if new is None and isinstance(old, dict):
        raise ConfigError(f"{where}: key '{path}' is empty (null), which would reset the whole section to its "
                          "defaults; remove it, or set the keys you mean inside it")
    return new


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
        lines.append(f"{dotted}: {type_name(tp)} = {default!r}  {f.metadata.get('help', '')}".rstrip())
    return lines


def type_name(tp: Any) -> str:
    """A schema type as ``--help-config`` shows it; a ``Literal`` lists its allowed values
    (``'cosine' | 'linear'``), a union its members (``float | None``)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]" if args else origin.__name__
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


__all__ = [
    "ConfigError",
    "apply_override",
    "deep_merge",
    "describe",
    "from_dict",
    "load_yaml",
    "parse_override",
    "read_yaml",
    "spec",
    "to_dict",
]
