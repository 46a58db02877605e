"""bench/common.py: one way to time calls and to write a result."""

from __future__ import annotations

import itertools
import json
import math

from bench.common import timed, write_result


def test_timed_runs_warmup_untimed_then_times_each_call_between_syncs():
    events: list[str] = []
    ticks = itertools.count()
    times = timed(lambda: events.append("call"), 3, warmup=2, clock=lambda: float(next(ticks)) ** 2,
                  sync=lambda: events.append("sync"))
    assert events == ["call"] * 2 + ["sync", "call", "sync"] * 3
    assert times == [1.0, 5.0, 9.0]  # clock 0 -> 1, 4 -> 9, 16 -> 25


def test_write_result_is_strict_json(tmp_path, capsys):
    path = write_result(tmp_path / "deep" / "r.json", {"ms": [1.5, math.nan], "n": 3})
    assert json.loads(path.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) == {
        "ms": [1.5, None], "n": 3}
    assert capsys.readouterr().out == f"wrote {path}\n"
