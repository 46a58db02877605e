"""bench/predict.py: the clinic's day it times is unlabelled; end to end on a tiny run (slow: subprocesses)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.predict import main, write_cohort
from data.records import LABEL_COLUMNS
from data.table import read_table


def test_the_cohort_is_n_unlabelled_recordings(tmp_path):
    path = tmp_path / "day.csv"
    n, n_series = write_cohort(path, 120, seed=3)
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert n == 120 and not set(LABEL_COLUMNS) & set(header) and "series_id" in header
    records, report = read_table(path, labelled=False)
    assert report.n_kept == 120 and (records.label == -1).all()
    assert len(np.unique(records.series_id)) == n_series >= 4


@pytest.mark.slow
def test_bench_times_the_whole_command(tmp_path, capsys):
    from tests.runs import tiny_config, train_run

    cfg = tiny_config(tmp_path, "training.epochs=1", "model.base_channels=4", "data.synthetic.patients=6")
    train_run(cfg, tmp_path / "run")
    out = tmp_path / "predict.json"
    assert main(["--run", str(tmp_path / "run"), "--recordings", "60", "--repeats", "1", "--torch-threads", "1",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    modes = result["modes"]
    assert set(modes) == {"tables and figures, torch threads 1", "tables only, torch threads 1"}
    for m in modes.values():
        assert m["recordings_per_s"] > 0 and m["median_cpu_s"] > 0 and "network" in m["runs"][0]["phases_s"]
    assert "figures" in modes["tables and figures, torch threads 1"]["runs"][0]["phases_s"]
    assert "| tables only, torch threads 1 |" in capsys.readouterr().out
