"""bench/ddp_validation.py end to end on the tiny cohort: 1 and 2 gloo ranks, the same values, a table."""

from __future__ import annotations

import json

import pytest

from bench.ddp_validation import main


@pytest.mark.slow
def test_ddp_validation_bench_times_1_and_2_ranks_with_equal_values(tmp_path):
    out, doc = tmp_path / "ddp.json", tmp_path / "results.md"
    assert main(["--patients", "12", "--batch", "8", "--repeats", "1", "--out", str(out), "--doc", str(doc)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert [r["ranks"] for r in result["runs"]] == [1, 2]
    assert all(r["max_abs_diff"] <= 1e-6 and r["median_s"] > 0 for r in result["runs"])
    assert "<!-- ddp-validation: begin -->" in doc.read_text(encoding="utf-8")
