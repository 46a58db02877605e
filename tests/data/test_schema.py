"""data/schema.py: what ``--help-config`` prints for each kind of schema type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from data.schema import describe, spec, type_name
from training.config import Config


@dataclass
class _Section:
    mode: Literal["a", "b"] = spec("a", help="the mode")
    scale: float | None = spec(None)
    tags: list[str] = spec([])
    weights: dict[str, float] = spec({"x": 1.0})


def test_literal_types_list_their_allowed_values():
    assert describe(_Section, "s") == [
        "s.mode: 'a' | 'b' = 'a'  the mode",
        "s.scale: float | None = None",
        "s.tags: list[str] = []",
        "s.weights: dict[str, float] = {'x': 1.0}",
    ]


def test_every_key_of_the_real_config_shows_a_plain_type():
    lines = describe(Config)
    assert "diffusion.schedule: 'cosine' | 'linear' = 'cosine'" in lines
    assert not [line for line in lines if "Literal" in line or "typing" in line]
    assert type_name(int) == "int"
