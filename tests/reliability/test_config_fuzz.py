"""Property-based tests over the config loader: every invalid value, at every key, in a YAML
file or an override, gives one ``ConfigError`` line naming the dotted key; the CLI shows that
line without a traceback (``--debug`` shows it)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
import time
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.schema import MAX_CONFIG_BYTES, ConfigError
from tests.reliability.procs import ROOT, cli_env
from training.config import Config, load_config


def leaves(cls: type = Config, path: str = "") -> list[tuple[str, Any, dict]]:
    """(dotted key, type, range metadata) of every config key."""
    out = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(leaves(hints[f.name], dotted))
        else:
            out.append((dotted, hints[f.name], dict(f.metadata)))
    return out


LEAVES = leaves()
SECTIONS = sorted({k.rsplit(".", 1)[0] for k, _, _ in LEAVES if "." in k})
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
NOT_NUMBER = TEXT.filter(lambda s: _not_float(s))
CONTAINERS = st.one_of(st.lists(st.integers(), min_size=1, max_size=3),
                       st.dictionaries(st.just("k"), st.integers(), min_size=1))


def _not_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return True
    return False


def out_of_range(meta: dict, integer: bool) -> st.SearchStrategy:
    """Values just past each bound the key declares (none when it declares none)."""
    values = []
    for op, bound in (("ge", meta.get("ge")), ("gt", meta.get("gt")), ("le", meta.get("le")), ("lt", meta.get("lt"))):
        if bound is None:
            continue
        step = 1 if integer else max(abs(bound) * 1e-3, 1e-6)
        below = op in ("ge", "gt")
        edge = bound if op in ("gt", "lt") else (bound - step if below else bound + step)
        values.append(st.sampled_from([edge, edge - 10 * step if below else edge + 10 * step]))
    return st.one_of(*values) if values else st.nothing()


def invalid(tp: Any, meta: dict) -> st.SearchStrategy:
    """Values the schema must refuse for a key of type ``tp``."""
    origin = get_origin(tp)
    if origin is Literal:
        return st.one_of(TEXT.filter(lambda s: s not in get_args(tp)), st.integers(), CONTAINERS)
    if origin is list:
        (item,) = get_args(tp)
        return st.one_of(st.integers(), TEXT, st.lists(invalid(item, {}), min_size=1, max_size=3))
    if origin is dict:
        _, value = get_args(tp)
        return st.one_of(st.integers(), TEXT, st.lists(st.integers(), min_size=1),
                         st.dictionaries(st.sampled_from(["signal", "class", "peak"]), invalid(value, {}), min_size=1))
    if tp is bool:
        return st.one_of(st.integers(), TEXT.filter(lambda s: s.lower() not in ("true", "false")), CONTAINERS)
    if tp is int:
        fractional = st.floats(allow_nan=True).filter(lambda x: not float(x).is_integer())
        return st.one_of(NOT_NUMBER, st.booleans(), fractional, CONTAINERS, out_of_range(meta, integer=True))
    if tp is float:
        return st.one_of(NOT_NUMBER, st.booleans(), CONTAINERS, st.sampled_from([math.inf, -math.inf, math.nan]),
                         out_of_range(meta, integer=False))
    if tp is str:
        return st.one_of(st.integers(), st.booleans(), CONTAINERS)
    raise AssertionError(f"no invalid-value strategy for {tp}")


def nest(dotted: str, value: Any) -> dict:
    tree: Any = value
    for key in reversed(dotted.split(".")):
        tree = {key: tree}
    return tree


def check_message(exc: ConfigError, dotted: str) -> None:
    msg = str(exc)
    assert "\n" not in msg, msg
    assert dotted in msg, f"{dotted!r} not named in: {msg}"


@st.composite
def bad_key_value(draw) -> tuple[str, Any]:
    dotted, tp, meta = draw(st.sampled_from(LEAVES))
    return dotted, draw(invalid(tp, meta))


SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(bad_key_value())
def test_invalid_value_in_a_yaml_file_names_the_key_and_the_file(tmp_path, case):
    dotted, value = case
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(nest(dotted, value), allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    check_message(info.value, dotted)
    assert str(path) in str(info.value)


@SETTINGS
@given(bad_key_value())
def test_invalid_value_as_an_override_names_the_key(case):
    dotted, value = case
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{dotted}={json.dumps(value, ensure_ascii=False)}"])
    check_message(info.value, dotted)


@SETTINGS
@given(st.sampled_from(SECTIONS + [""]), st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True))
def test_unknown_key_is_named_with_the_allowed_ones(section, key):
    dotted = f"{section}.{key}" if section else key
    if any(k == dotted or k.startswith(dotted + ".") for k, _, _ in LEAVES):
        return  # a real key
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{dotted}=1"])
    check_message(info.value, dotted)
    assert "unknown key" in str(info.value) and "allowed: " in str(info.value)


@SETTINGS
@given(st.sampled_from([k for k, _, _ in LEAVES]), TEXT)
def test_any_override_text_gives_a_config_or_one_config_error_line(dotted, text):
    try:
        load_config(None, [f"{dotted}={text}"])
    except ConfigError as exc:  # anything else (TypeError, yaml errors, ...) would be a traceback
        assert "\n" not in str(exc)


def test_cli_shows_one_line_and_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  early_stopping:\n    patience: soon\n", encoding="utf-8")
    args = [sys.executable, str(ROOT / "train.py"), "--config", str(path)]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == (f"error: config key 'training.early_stopping.patience': expected an integer, "
                                f"found 'soon' (str) [{path}]")
    import train  # --debug: the exception propagates (the interpreter prints its traceback); same entry point

    with pytest.raises(ConfigError, match=r"^config key 'training\.early_stopping\.patience': expected an integer"):
        train.main(["--config", str(path), "--debug"])


# --------------------------------------------------------------------------------------------
# resource bombs in YAML (issue 17): refused in well under a second, with the named limit


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    """YAML whose last anchor expands to width**(levels + 1) values (10^10 here) in ~1 KB."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nlogging:\n  wandb:\n    tags: *a{levels}\n"


BOMBS = {  # name: (YAML text, message after "config file '<path>': ")
    "alias bomb": (billion_laughs(), r"key 'a3' holds more than MAX_CONFIG_NODES = 10,000 values after expanding "
                                     r"aliases \(an alias bomb\?\); expected a config$"),
    "alias bomb under a real key": ("training:\n  x: &a [" + ", ".join(["1"] * 50) + "]\n  y: &b ["
                                    + ", ".join(["*a"] * 50) + "]\n  z: [" + ", ".join(["*b"] * 50) + "]\n",
                                    r"key 'training\.z' holds more than MAX_CONFIG_NODES = 10,000 values"),
    "recursive alias": ("logging:\n  wandb:\n    tags: &t [a, *t]\n",
                        r"key 'logging\.wandb\.tags\[1\]' refers to itself \(a recursive alias\)$"),
    "deep nesting": ("seed: " + "[" * 40 + "]" * 40 + "\n",
                     r"key 'seed(\[0\]){32}' is nested more than MAX_CONFIG_DEPTH"),
    "very deep nesting": ("seed: " + "[" * 3000 + "]" * 3000 + "\n",
                          r"nested too deeply \(more than MAX_CONFIG_DEPTH = 32 levels\)$"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_yaml_bombs_in_a_file_are_refused_early(tmp_path, name):
    """The alias bomb used to run for minutes, then end in an empty `error: ` line."""
    text, message = BOMBS[name]
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^config file '{re.escape(str(path))}': {message}"):
        load_config(path)
    assert time.perf_counter() - start < 5.0


def test_yaml_bombs_as_an_override_are_refused_early():
    start = time.perf_counter()
    a, b = ", ".join(["1"] * 50), ", ".join(["*a"] * 50)
    anchors = f"[&a [{a}], &b [{b}], [" + ", ".join(["*b"] * 50) + "]]"
    with pytest.raises(ConfigError, match=r"^override 'logging\.wandb\.tags': key 'logging\.wandb\.tags\[2\]' "
                                          r"holds more than MAX_CONFIG_NODES = 10,000 values"):
        load_config(None, [f"logging.wandb.tags={anchors}"])
    with pytest.raises(ConfigError, match=r"^override 'training': key 'training\.epochs' appears twice on line 1"):
        load_config(None, ["training={epochs: 1, epochs: 2}"])
    assert time.perf_counter() - start < 5.0


def test_a_config_file_over_the_size_limit_is_not_parsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * MAX_CONFIG_BYTES + "\nseed: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^config file '{re.escape(str(path))}': 1,048,\d{{3}} bytes; expected at "
                                          r"most MAX_CONFIG_BYTES = 1,048,576 \(data/schema\.py\)$"):
        load_config(path)


def test_error_messages_show_a_bounded_value():
    """A huge value (e.g. built from aliases below the node limit) is shown shortened: one short line."""
    with pytest.raises(ConfigError) as info:
        load_config(None, ["training.epochs=[" + ", ".join(["123456789"] * 5000) + "]"])
    assert len(str(info.value)) < 300 and "\n" not in str(info.value)
