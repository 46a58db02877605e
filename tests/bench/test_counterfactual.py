"""bench/counterfactual.py: the counterfactual recordings change only what they say, the checks read
them correctly (networks that read only the stated level or only the waveform), and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from bench.counterfactual import (
    LOUD_DB,
    QUIETER_DB,
    counterfactuals,
    main,
    noise_like,
    restated_levels,
    shuffled_levels,
    with_levels,
)
from data.stats import fit_stats
from data.synthetic import generate
from tests.progress import finished_phases


@pytest.fixture(scope="module")
def records():
    return generate(12, 4)


def test_restated_levels_move_only_the_stated_intensity(records):
    level = records.static[:, 1]
    loud, quieter = restated_levels(records, present=False), restated_levels(records, present=True)
    absent = ~records.peak_mask
    assert np.all(loud[absent] == LOUD_DB) and np.array_equal(loud[~absent], level[~absent])  # one check each
    assert np.array_equal(quieter[~absent], np.maximum(level[~absent] - QUIETER_DB, 0.0))
    assert np.array_equal(quieter[absent], level[absent])
    moved = with_levels(records, loud)
    assert np.array_equal(moved.signal, records.signal) and np.array_equal(moved.static[:, [0, 2, 3]],
                                                                           records.static[:, [0, 2, 3]])
    assert np.array_equal(records.static[:, 1], level)  # the cohort itself is untouched


def test_shuffled_levels_are_each_series_own_levels(records):
    new = shuffled_levels(np.random.default_rng(0), records)
    assert not np.array_equal(new, records.static[:, 1])
    for s in np.unique(records.series_id):
        rows = records.series_id == s
        assert sorted(new[rows]) == sorted(records.static[rows, 1])


@pytest.mark.parametrize("kind", ["white", "pink"])
def test_noise_has_each_recordings_variance_and_its_spectrum(records, kind):
    x = noise_like(np.random.default_rng(1), records.signal, kind)
    assert np.allclose(x.std(1), records.signal.std(1), rtol=1e-4)
    power = (np.abs(np.fft.rfft(x, axis=1)) ** 2).mean(0)
    low, high = power[1:10].mean(), power[50:100].mean()  # 100-500 Hz against 5-10 kHz
    assert (low / high > 20) if kind == "pink" else (0.5 < low / high < 2)


class StubNet(nn.Module):
    """Honours the network contract; wave V from the stated level alone (p >= 0.5 from 50 dB) or from
    the waveform alone (its largest sample above 0.2 µV in physical units: the stats are identity)."""

    def __init__(self, reads: str) -> None:
        super().__init__()
        self.reads = reads

    def forward(self, x, t, static, drop_cond=None, return_features=False):
        B = x.shape[0]
        logit = static[:, 1] - 50.0 if self.reads == "level" else 50.0 * (x.flatten(1).amax(1) - 0.2)
        out = {"signal": x, "class_logits": torch.zeros(B, 5), "peak_logit": logit, "peak_latency": torch.zeros(B),
               "peak_amplitude": torch.zeros(B), "threshold": torch.zeros(B)}
        if return_features:
            out["features"] = (torch.zeros(B, 4, 2), torch.zeros(B, 2, 3))
        return out


def _stats(records):
    stats = fit_stats(records, "global")
    stats.signal_mean, stats.signal_std = 0.0, 1.0  # the stub reads µV
    return stats


def test_a_network_that_reads_the_stated_level_moves_with_it(records):
    r = counterfactuals(StubNet("level"), None, records, _stats(records), seed=0, n_boot=20)
    level = records.static[:, 1]
    absent, present = r["absent_at_90db"], r["present_30db_lower"]
    assert absent["counterfactual"].value == 1.0  # every absent recording re-stated at 90 dB is "detected"
    assert np.isclose(absent["as_stated"].value, (level[~records.peak_mask] >= 50).mean())
    assert np.isclose(absent["difference"].value, 1.0 - absent["as_stated"].value)
    lower = np.maximum(level[records.peak_mask] - QUIETER_DB, 0.0)
    assert np.isclose(present["counterfactual"].value, (lower >= 50).mean())
    assert present["recordings"] == records.peak_mask.sum() and absent["recordings"] == (~records.peak_mask).sum()
    for kind in ("white", "pink"):  # noise at a loud stated level is "detected": the level decides
        assert np.isclose(r["noise"][kind]["detected"].value, (level >= 50).mean())
        assert r["noise"][kind]["detected_by_level"]["100"].value == 1.0
        assert r["noise"][kind]["detected_by_level"]["0"].value == 0.0


def test_a_network_that_reads_the_waveform_does_not_move(records):
    r = counterfactuals(StubNet("waveform"), None, records, _stats(records), seed=0, n_boot=20)
    for key in ("absent_at_90db", "present_30db_lower"):
        assert r[key]["difference"].value == 0.0 and r[key]["as_stated"].value == r[key]["counterfactual"].value
        # gated by the series' response: a subset of the recording's own detections, as stated and re-stated
        # (the rule's threshold reads the levels' order, so a series' answer may flip: no equality here)
        for side in ("as_stated", "counterfactual"):
            assert r["gated"][key][side].value <= r[key][side].value + 1e-12
    s = r["levels_shuffled"]
    assert set(s["threshold"]) == {"rule", "head_mean"} and s["threshold"]["head_mean"]["changed"].value == 0.0
    assert s["type"]["evidence_sum"]["changed"].value == 0.0  # the class evidence ignores the level here


def test_cli_on_a_tiny_run_with_a_series_model(series_run, tmp_path, capsys):
    run = series_run  # with familiarity.json: the noise series also meet the input check
    out, doc = tmp_path / "cf.json", tmp_path / "results.md"
    assert main(["--run", str(run), "--patients", "8", "--n-boot", "20", "--out", str(out), "--doc", str(doc)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["series_model"] is True and result["cohort"]["patients"] == 8
    checks = result["checks"]
    assert set(checks) == {"noise", "absent_at_90db", "present_30db_lower", "levels_shuffled", "real_detected", "gated"}
    for r in checks["noise"].values():  # the gate only removes detections
        assert r["detected_gated"]["value"] <= r["detected"]["value"] + 1e-12
    assert set(checks["noise"]["white"]["no_response"]) == {"rule", "head_mean", "series_model"}
    for r in checks["noise"].values():  # flagged or "no response": never fewer series than "no response" alone
        assert 0.0 <= r["flagged"]["value"] <= 1.0 and 0.0 <= r["real_flagged"]["value"] <= 1.0
        for k, v in r["no_response_or_flagged"].items():
            assert max(r["no_response"][k]["value"], r["flagged"]["value"]) <= v["value"] + 1e-12
    for r in (checks["absent_at_90db"], checks["present_30db_lower"]):
        for k in ("as_stated", "counterfactual", "difference"):
            lo, hi = r[k]["ci"]
            assert lo <= r[k]["value"] <= hi
        assert np.isclose(r["difference"]["value"], r["counterfactual"]["value"] - r["as_stated"]["value"])
    assert "<!-- counterfactual: begin -->" in doc.read_text(encoding="utf-8")
    printed = capsys.readouterr()
    assert "Each check on the gated reading" in printed.out
    assert "re-stated at 90 dB" in printed.out and "'no response' or flagged (series_model)" in printed.out
    # issue 29: progress on stderr, a line when each pass of the network starts and one with its seconds
    steps = finished_phases(printed.err, "bench/counterfactual.py")
    assert "generating the held-out cohort (8 patients, seed 24680, narrow domain)" in steps
    for check in ("the recordings as stated", "white noise", "pink noise", "absent re-stated", "present re-stated",
                  "levels shuffled"):
        assert any(step.startswith(check) for step in steps), check
    assert "bench/counterfactual.py:" not in printed.out  # stdout: the report alone
    from training.checkpoint import load_run

    seed = load_run(run).cfg.data.synthetic.seed
    with pytest.raises(SystemExit) as exc:
        main(["--run", str(run), "--seed", str(seed), "--patients", "3", "--no-doc"])
    assert exc.value.code == 2 and "the run trained on that generator seed" in capsys.readouterr().err
