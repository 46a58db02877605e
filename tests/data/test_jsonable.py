"""data.jsonable.to_jsonable: the one JSON cleaner behind metrics.jsonl, metrics.json and the bench results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data.jsonable import to_jsonable
from data.stats import DataStats
from training.clinical import Estimate


def test_non_finite_floats_become_null_at_any_depth():
    obj = {"a": math.nan, "b": [math.inf, (-math.inf, 1.5)], "c": np.float32("nan"), "d": torch.tensor(math.inf)}
    assert to_jsonable(obj) == {"a": None, "b": [None, [None, 1.5]], "c": None, "d": None}


def test_numpy_and_torch_values_become_python_numbers_and_lists():
    out = to_jsonable({"i": np.int64(3), "f": np.float64(0.1), "b": np.bool_(True), "s": np.str_("x"),
                       "arr": np.array([[1, 2], [3, 4]]), "one": np.array([2.5]), "t0": torch.tensor(2),
                       "t": torch.tensor([0.5, math.nan])})
    assert out == {"i": 3, "f": 0.1, "b": True, "s": "x", "arr": [[1, 2], [3, 4]], "one": [2.5], "t0": 2,
                   "t": [0.5, None]}
    assert [type(out[k]) for k in ("i", "f", "b", "t0")] == [int, float, bool, int]


def test_keys_become_strings_and_tuples_lists():
    assert to_jsonable({1: (2, 3), ("a", "b"): None}) == {"1": [2, 3], "('a', 'b')": None}


def test_objects_with_to_dict_are_written_as_that_dict():
    assert to_jsonable([Estimate(0.5, 0.25, math.nan)]) == [{"value": 0.5, "ci": [0.25, None]}]
    assert to_jsonable(DataStats.identity()) == DataStats.identity().to_dict()


def test_the_written_line_is_strict_json():
    line = json.dumps(to_jsonable({"x": [np.float32(1.25), math.nan]}), allow_nan=False)
    assert line == '{"x": [1.25, null]}'


@pytest.mark.parametrize("obj", [Path("run"), object(), {1, 2}, b"bytes"])
def test_anything_else_is_refused_with_its_type(obj):
    with pytest.raises(TypeError, match=rf"to_jsonable: expected .*; found {type(obj).__name__}$"):
        to_jsonable({"deep": [obj]})
