"""bench/epl_marks.py end to end on a tiny wave-map run and the synthetic EPL fixture with two readers' marks
(tests/data/fixtures/make_epl_fixture.py: reader B's P1 is 0.05, 0.05 and 0.15 ms later than A's at 80, 60
and 40 dB and absent at 20 dB)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bench.epl_marks import agreement, main
from tests.data.conftest import FIXTURES
from tests.runs import tiny_config, train_run

EPL = FIXTURES / "ABR-fixture-1"
MARKS_A = FIXTURES / "ABR-fixture-1-16.0kHz-analyzed.txt"
MARKS_B = FIXTURES / "ABR-fixture-1-16.0kHz-B-analyzed.txt"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("epl_marks")
    cfg = tiny_config(tmp, "model.peak_head=map")
    train_run(cfg, tmp / "run")
    return tmp / "run"


def test_agreement_counts_levels_both_mark_and_the_rest():
    a = np.array([1.79, 1.84, 2.00, np.nan, 2.5])
    b = np.array([1.89, 1.95, 2.00, 2.1, np.nan])  # 0.10 (within 0.1 ms, written to 0.01 ms), 0.11, 0
    got = agreement(a, b)
    assert got["n"] == 3 and got["n_within_0.1ms"] == 2 and got["n_within_0.2ms"] == 3
    assert got["mean_abs_diff_ms"] == pytest.approx(0.07)
    assert got["n_only_first"] == 1 and got["n_only_second"] == 1
    assert agreement(a[3:4], b[4:5])["within_0.1ms"] is None  # nothing both mark: no share, not 0


def test_bench_compares_the_network_and_two_readers(run, tmp_path, capsys):
    from data.dataset import ABRDataset
    from data.epl import read_epl
    from training.checkpoint import load_run
    from training.series import extract

    out, doc, fig = tmp_path / "r.json", tmp_path / "results.md", tmp_path / "img" / "epl.png"
    assert main(["--run", str(run), "--epl", str(EPL), "--marks", str(MARKS_A), str(MARKS_B), "--also-scale", "0.5",
                 "--out", str(out), "--doc", str(doc), "--figure", str(fig)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    ab = result["pairs"]["A vs B"]  # from the fixture's construction
    assert (ab["n"], ab["n_within_0.1ms"], ab["n_within_0.2ms"]) == (3, 2, 3)
    assert ab["mean_abs_diff_ms"] == pytest.approx((0.05 + 0.05 + 0.15) / 3)
    assert (ab["n_only_first"], ab["n_only_second"]) == (1, 0)  # 20 dB: A marks P1, B writes a negative latency
    # the network's rows are its wave I answers on the series read as evaluation.predict reads it
    # (--also-scale: the samples halved), read as evaluation.predict reads it
    loaded = load_run(run)
    rows = result["per_level"]
    assert [r["level"] for r in rows] == [80.0, 60.0, 40.0, 20.0]
    for label, scale in (("network", 1.0), ("network x0.5", 0.5)):
        ev = extract(loaded.model, ABRDataset(read_epl(EPL, None, 0.0, scale=scale)[0], loaded.stats))
        top = np.argsort(-ev.static[:, 1], kind="stable")
        np.testing.assert_allclose([r["networks"][label]["latency_ms"] for r in rows], ev.waves["latency"][top, 0],
                                   rtol=1e-6)
        np.testing.assert_allclose([r["networks"][label]["prob"] for r in rows], ev.waves["prob"][top, 0], rtol=1e-6)
    assert rows[0]["people"]["A"] == pytest.approx(1.6) and rows[0]["people"]["B"] == pytest.approx(1.65)
    assert {"network vs A", "network x0.5 vs B", "A vs B", "network x0.5 (any p) vs A"} <= set(result["pairs"])
    anyp = result["pairs"]["network (any p) vs A"]
    assert anyp["n"] == 4 and anyp["n_only_first"] == 0  # every level A marks, whatever the probability
    # the static values the file lacks are stated with their source
    assert result["static"]["age_years"]["value"] == 0.0 and "median" in result["static"]["age_years"]["from"]
    assert result["static"]["rate_per_s"] == {"value": 21.0, "from": "the file's header"}
    assert result["notes"] == []  # two different files
    text = doc.read_text(encoding="utf-8")
    assert "<!-- epl_marks: begin -->" in text and "![wave I against P1 marks](img/epl.png)" in text
    assert "| A vs B | 3 | 67% (2/3) | 100% (3/3) | 0.08 | A: 1, B: 0 |" in text
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_identical_marks_files_are_said_to_be_one_analysis(run, tmp_path):
    copy = tmp_path / "copy-analyzed.txt"
    shutil.copy(MARKS_A, copy)
    out = tmp_path / "r.json"
    assert main(["--run", str(run), "--epl", str(EPL), "--marks", str(MARKS_A), str(copy), "--names", "Ann", "Bo",
                 "--age", "2", "--out", str(out), "--no-doc", "--figure", str(tmp_path / "f.png")]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["pairs"]["Ann vs Bo"]["mean_abs_diff_ms"] == 0.0
    assert any("Ann and Bo are byte-identical" in n for n in result["notes"])
    assert result["static"]["age_years"] == {"value": 2.0, "from": "--age"}


def test_a_bad_marks_file_is_one_error_line(run, tmp_path, capsys):
    bad = tmp_path / "bad-analyzed.txt"
    bad.write_text(MARKS_B.read_text(encoding="ISO-8859-1").replace("1.89000000", "1.8.9"), encoding="ISO-8859-1")
    code = main(["--run", str(run), "--epl", str(EPL), "--marks", str(MARKS_A), str(bad), "--no-doc",
                 "--out", str(tmp_path / "r.json"), "--figure", str(tmp_path / "f.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "Traceback" not in err[0]
    assert f"{bad}: line 7: expected numbers" in err[0]
    assert not (tmp_path / "r.json").exists()


def test_names_must_match_the_marks_files(tmp_path, capsys):
    code = main(["--run", str(tmp_path), "--epl", str(EPL), "--marks", str(MARKS_A), str(MARKS_B), "--names", "A"])
    assert code != 0 and "--names: expected one name per --marks file (2), found 1" in capsys.readouterr().err
