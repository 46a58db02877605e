"""bench/tstr.py: the source split keeps series whole, the paired ratio, and the whole bench on a tiny
label-conditioned run (its JSON, table and doc section; one error line for cohorts that coincide)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.tstr import SELECTION_SHARE, SIDES, main, paired_ratio, split_series
from data.synthetic import generate as synthetic_cohort
from tests.bench.test_virtual_patients import label_run  # noqa: F401  (the module's tiny label-conditioned run)


def test_the_source_split_keeps_series_whole_and_apart():
    cohort = synthetic_cohort(40, 3)
    train, select = split_series(cohort, seed=0)
    assert len(train) + len(select) == len(cohort)
    a, b = set(train.series_id.tolist()), set(select.series_id.tolist())
    assert not a & b  # no series on both sides
    assert len(b) == round(SELECTION_SHARE * len(a | b))
    for part in (train, select):  # every recording of a kept series kept
        for s in set(part.series_id.tolist()):
            assert (part.series_id == s).sum() == (cohort.series_id == s).sum()


def test_the_paired_ratio_is_one_for_equal_answers_and_below_one_for_worse():
    rng = np.random.default_rng(0)
    truth = (rng.choice([10.0, 30.0, 60.0], 200), rng.integers(0, 3, 200))
    good = (truth[1].copy(), truth[0].copy())
    worse = (np.where(rng.random(200) < 0.4, (truth[1] + 1) % 3, truth[1]), truth[0] + np.where(
        rng.random(200) < 0.3, 40.0, 0.0))
    same = paired_ratio(truth, good, good, n_boot=50)
    assert all(e.value == pytest.approx(1.0) and e.low == pytest.approx(1.0) for e in same.values())
    lower = paired_ratio(truth, worse, good, n_boot=50)
    assert lower["type_macro_f1"].high < 1.0 and lower["threshold_within_10db"].high < 1.0


def test_the_bench_on_a_tiny_label_run(label_run, tmp_path, capsys):  # noqa: F811
    out, doc = tmp_path / "tstr.json", tmp_path / "results.md"
    assert main(["--run", str(label_run), "--train-patients", "12", "--patients", "10", "--fit-seeds", "0,1",
                 "--steps", "2", "--n-boot", "10", "--out", str(out), "--doc", str(doc)]) == 0
    r = json.loads(out.read_text())
    assert r["source"]["patients"] == 12 and r["test"]["patients"] == 10 and set(r["seeds"]) == {"0", "1"}
    for got in r["seeds"].values():
        for side in SIDES:
            for metric in ("type_macro_f1", "threshold_within_10db"):
                e = got[side][metric]
                assert 0.0 <= e["value"] <= 1.0 and e["ci"][0] <= e["value"] + 1e-9
        assert set(got["ratio"]) == {"type_macro_f1", "threshold_within_10db"}
    text = doc.read_text()
    assert "## Train on generated, test on real" in text and "| TSTR / TRTR, seed 1 | (paired) |" in text
    assert "| trivial |" in capsys.readouterr().out


def test_a_source_cohort_equal_to_the_test_cohort_is_one_error_line(label_run, tmp_path, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as exc:
        main(["--run", str(label_run), "--train-seed", "5", "--seed", "5", "--no-doc", "--out",
              str(tmp_path / "t.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--train-seed 5: expected a source cohort apart from the test cohort" in err
