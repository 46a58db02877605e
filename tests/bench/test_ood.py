"""bench/ood.py end to end on the shared tiny run with its input check: every changed set scored against
the test split, progress on stderr and the table on stdout."""

from __future__ import annotations

import json

from bench.ood import TRANSFORMS, main
from tests.progress import finished_phases


def test_ood_bench_scores_every_changed_set_with_progress_on_stderr(series_run, tmp_path, capsys):
    out = tmp_path / "ood.json"
    assert main(["--run", str(series_run), "--max-series", "3", "--n-boot", "20", "--device", "cpu",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(TRANSFORMS) <= set(result["sets"])  # and "epl" where the abr package is importable
    for s in result["sets"].values():
        assert 0.0 <= s["unlike"]["value"] <= 1.0 and 0.0 <= s["auroc_series"] <= 1.0
    assert 0 < result["test"]["n_series"] <= 3
    printed = capsys.readouterr()
    assert "| test split (false alarms) |" in printed.out and f"wrote {out}" in printed.out
    # issue 29: a line when each step starts and one with its seconds, on stderr; stdout the table alone
    steps = finished_phases(printed.err, "bench/ood.py")
    for name in ("test (in distribution)", *TRANSFORMS):
        assert any(step.startswith(f"{name}: the input check on ") for step in steps), name
    assert "rates and AUROCs, 20 bootstrap resamples" in steps
    assert "bench/ood.py:" not in printed.out
