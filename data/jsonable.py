"""The one JSON cleaner: every JSON file the project writes goes through :func:`to_jsonable`.

metrics.jsonl (training/callbacks/jsonl.py, training/series_stage.py), an evaluation's metrics.json
(evaluation/report.py), a comparison's comparison.json (evaluation/compare.py) and the benchmark
results (bench/common.py). It stands on the ground floor so that data/, training/, evaluation/ and
bench/ can all import it; it imports nothing of the project.
"""

from __future__ import annotations

import math
from typing import Any


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values.

    nan and ±inf -> None (JSON has no nan); numpy and torch scalars and arrays -> Python numbers
    and lists; tuples -> lists; dict keys -> str; an object with ``to_dict()`` (a bootstrap
    ``Estimate``, ``DataStats``) -> that dict, cleaned. Anything else is a programming error: a
    TypeError that names its type (nothing is turned into a string behind the caller's back).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, torch tensors
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int)):  # bool is an int
        return obj
    raise TypeError(f"to_jsonable: expected dicts, lists, numbers, strings, booleans, None, numpy or torch "
                    f"values, or an object with to_dict(); found {type(obj).__name__}")
