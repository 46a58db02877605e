"""bench/virtual_patients.py: the twins' conditions and tied noise, the features and scores it builds on, and
the whole bench on a tiny label-conditioned run (its JSON, table, doc section and figures; one error line for a
run without label conditioning)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bench.condition_grid import MIN_BAND
from bench.virtual_patients import (
    CLASS_NAMES,
    discriminative,
    frechet,
    main,
    ratio,
    recording_features,
    residual_rms,
    sample_twins,
    stacked,
)
from data.stats import DataStats
from data.synthetic import generate as synthetic_cohort
from tests.runs import tiny_config, train_run
from training.clinical import series_index
from training.config import DiffusionConfig
from training.diffusion import GaussianDiffusion

TINY_BENCH = ["--patients", "10", "--steps", "2", "--n-boot", "20"]


@pytest.fixture(scope="module")
def label_run(tmp_path_factory) -> Path:
    """A one-epoch label-conditioned run with a series model (6 synthetic patients; seconds)."""
    root = tmp_path_factory.mktemp("vp_label_run")
    cfg = tiny_config(root, "training.epochs=1", "model.base_channels=4", "data.synthetic.patients=6",
                      "model.label_conditioning=true", "series.enabled=true", "series.epochs=2", "model.peak_head=map")
    train_run(cfg, root / "run")
    return root / "run"


class RowEcho(nn.Module):
    """Predicts eps = 0 (each signal is its own x_T, whatever the condition) and records what each row was given."""

    label_conditioned = True

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x_t, t, static, drop_cond=None, label=None, threshold=None):
        self.seen.append((static.clone(), label.clone(), threshold.clone()))
        return {"signal": torch.zeros_like(x_t) * self.scale}

    @classmethod
    def loaded(cls, run_dir: Path) -> SimpleNamespace:
        """A run in ``run_dir`` as sample_twins reads it, with this network."""
        return SimpleNamespace(model=cls(), stats=DataStats.identity(), run_dir=run_dir,
                               diffusion=GaussianDiffusion(DiffusionConfig(prediction="eps", timesteps=50)))


def test_twins_share_one_noise_path_per_series_and_get_each_recordings_condition(tmp_path):
    cohort = synthetic_cohort(3, 5)
    series = series_index(cohort.series_id, cohort.static[:, 1])
    loaded = RowEcho.loaded(tmp_path)
    net = loaded.model
    kw = {"sampler": "ddim", "steps": 2, "guidance": 1.0, "eta": 0.0, "clip": None, "lowpass_hz": 0.0, "share": 1.0}
    x = sample_twins(loaded, cohort, series, kw, seed=0, batch_size=1000)  # (N L)
    assert x.shape == cohort.signal.shape
    for rows in series.members:
        assert (x[rows] == x[rows[0]]).all()  # every draw shared: one noise path over its levels
    half = sample_twins(RowEcho.loaded(tmp_path), cohort, series, kw | {"share": 0.5}, seed=0, batch_size=1000)
    rows = series.members[0]
    r = np.corrcoef(half[rows])[np.triu_indices(len(rows), 1)]  # pairs of one series' levels
    assert (r > 0.2).all() and (r < 0.8).all()  # half of every draw in common: related, not identical
    assert len({x[m[0]].tobytes() for m in series.members}) == len(series)  # patients differ
    static, label, threshold = (torch.cat([s[k] for s in net.seen[::2]]) for k in range(3))  # one pass per step
    assert len(static) == len(cohort)
    # every row's own static values with its series' type and threshold (rows sampled series by series)
    seen = {tuple(s.tolist()) + (int(y), float(h)) for s, y, h in zip(static, label, threshold, strict=True)}
    truth = {tuple(s.tolist()) + (int(y), float(h))
             for s, y, h in zip(cohort.static, cohort.label, cohort.threshold, strict=True)}
    assert seen == truth


def test_twins_get_the_microphonic_of_a_training_ear_of_their_type(tmp_path):
    """With a bank in the run, each twin of a type whose training ears ring gets one ear's microphonic on top of
    what --no-microphonic-bank's twins are (same seed); the other types' twins stay as they were."""
    from evaluation.microphonic_bank import fit_bank, save_bank, window

    cohort = synthetic_cohort(6, 5)
    series = series_index(cohort.series_id, cohort.static[:, 1])
    k = int(cohort.label[0])  # the first series' type rings in every training recording of the bank
    levels = np.arange(0.0, 105.0, 5.0)
    bank = fit_bank(np.zeros((len(levels), 200), np.float32), levels, np.full(len(levels), k), np.zeros(len(levels)))
    bank["component"], bank["row"] = np.repeat(window()[None], len(levels), 0), np.arange(len(levels))
    save_bank(tmp_path, bank)
    kw = {"sampler": "ddim", "steps": 1, "guidance": 1.0, "eta": 0.0, "clip": None, "lowpass_hz": 0.0, "share": 1.0}
    x = sample_twins(RowEcho.loaded(tmp_path), cohort, series, kw, seed=0, batch_size=1000)
    plain = sample_twins(RowEcho.loaded(tmp_path), cohort, series, kw | {"no_microphonic_bank": True}, seed=0,
                         batch_size=1000)
    mine = cohort.label == k
    np.testing.assert_allclose((x - plain)[mine], np.broadcast_to(window(), (mine.sum(), 200)), atol=1e-4)
    assert (x[~mine] == plain[~mine]).all() and kw["microphonic_composed"] == mine.sum()


class WaveEcho(RowEcho):
    """RowEcho for a network with model.wave_conditioning: records the wave V condition of every row."""

    wave_conditioned = True

    def forward(self, x_t, t, static, drop_cond=None, label=None, threshold=None, wave=None):
        self.seen.append((static.clone(), wave.clone()))
        return {"signal": torch.zeros_like(x_t) * self.scale}


def test_a_wave_network_gets_each_series_wave_v_from_the_runs_profile_not_the_cohorts(tmp_path):
    """model.wave_conditioning: sample_twins draws every series' wave V from RUN/wave_profile.json (fitted on
    another cohort), one ear per series: presence never falls with level within a series, and the drawn
    latencies are not the cohort's own; a run without the file is one line."""
    from evaluation.wave_profile import fit_profile, save_profile

    train = synthetic_cohort(120, 3)
    save_profile(tmp_path, fit_profile(train.static, train.threshold, train.label, train.peak_mask,
                                       np.nan_to_num(train.peak_latency), np.nan_to_num(train.peak_amplitude),
                                       train.series_id))
    cohort = synthetic_cohort(4, 5)
    series = series_index(cohort.series_id, cohort.static[:, 1])
    loaded = SimpleNamespace(model=WaveEcho(), stats=DataStats.identity(), run_dir=tmp_path,
                             diffusion=GaussianDiffusion(DiffusionConfig(prediction="eps", timesteps=50)))
    kw = {"sampler": "ddim", "steps": 2, "guidance": 1.0, "eta": 0.0, "clip": None, "lowpass_hz": 0.0, "share": 0.5}
    sample_twins(loaded, cohort, series, kw, seed=0, batch_size=1000)
    static = torch.cat([s for s, _ in loaded.model.seen[::2]]).numpy()
    wave = torch.cat([w for _, w in loaded.model.seen[::2]]).numpy()
    assert len(wave) == len(cohort)
    by_row = {tuple(s): w for s, w in zip(static.tolist(), wave, strict=True)}
    drawn = np.array([by_row[tuple(s)] for s in cohort.static.tolist()])  # (N 3) in the cohort's order
    for rows in series.members:
        order = rows[np.argsort(cohort.static[rows, 1])]
        assert (np.diff(drawn[order, 0]) >= 0).all()  # one ear: present from some level up
    both = (drawn[:, 0] == 1) & cohort.peak_mask
    assert both.sum() > 10 and not np.allclose(drawn[both, 1], cohort.peak_latency[both])
    (tmp_path / "wave_profile.json").unlink()
    with pytest.raises(ValueError, match="expected wave_profile.json beside a network trained with "
                                         "model.wave_conditioning"):
        sample_twins(loaded, cohort, series, kw, seed=0, batch_size=1000)


def test_features_see_the_noise_level_and_residual_rms_ignores_slow_waves():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((4, 200))
    f1, f2 = recording_features(noise), recording_features(2 * noise)
    assert f1.shape == (4, 50 + 2 + 7)
    np.testing.assert_allclose(f2[:, 52:] - f1[:, 52:], 2 * np.log10(2), atol=1e-9)  # log band power: 2 log10(2)
    np.testing.assert_allclose(f2[:, 50:52] - f1[:, 50:52], np.log10(2), atol=1e-9)  # log RMS: log10(2)
    t = np.arange(200) / 20.0  # ms
    slow = np.sin(2 * np.pi * 0.2 * t)[None]  # 200 Hz: the waves' band, far below the residual's
    assert residual_rms(slow)[0] < 0.05 * np.sqrt(np.mean(slow**2))
    assert 0.8 < residual_rms(noise).mean() < 1.0  # white noise: most of it above a 0.5 ms average


def test_discriminative_score_is_near_zero_for_one_distribution_and_near_half_for_two():
    rng = np.random.default_rng(0)
    _, units = stacked([np.arange(10) + 10 * i for i in range(10)])  # 10 series of 10 recordings
    same = discriminative(rng.standard_normal((100, 3)), rng.standard_normal((100, 3)), units, units, seed=0,
                          n_boot=20)
    apart = discriminative(rng.standard_normal((100, 3)) + 3, rng.standard_normal((100, 3)), units, units, seed=0,
                           n_boot=20)
    assert same["score"].value < 0.15 and 0.3 < same["auroc"].value < 0.7
    assert apart["score"].value > 0.45 and apart["auroc"].value > 0.99
    for e in (*same.values(), *apart.values()):
        assert e.low <= e.value <= e.high


def test_frechet_is_small_for_one_distribution_large_for_two_with_a_jackknife_interval_over_series():
    rng = np.random.default_rng(1)
    _, units = stacked([np.arange(20) + 20 * i for i in range(20)])  # 20 series of 20 recordings
    a, b = rng.standard_normal((400, 4)), rng.standard_normal((400, 4))
    same = frechet(a, b, units, units)
    apart = frechet(a + 2.0, b, units, units)
    assert same.value < 0.2 and apart.value == pytest.approx(16.0, rel=0.15)  # |mean shift|² = 4 x 2²
    for e in (same, apart):
        assert e.low <= e.value <= e.high and e.high > e.low


def test_ratio_pairs_the_twins_and_has_no_interval_for_one_series():
    gen, real = np.array([2.0, 2.0, 6.0]), np.array([1.0, 1.0, 3.0])
    r = ratio(gen, real, [np.array([0, 1]), np.array([2])], n_boot=20, seed=0)
    assert r.value == pytest.approx(2.0) and r.low == pytest.approx(2.0) and r.high == pytest.approx(2.0)
    one = ratio(gen, real, [np.array([0, 1, 2])], n_boot=20, seed=0)
    assert one.value == pytest.approx(2.0) and np.isnan(one.low)


def _estimates(tree, path=""):
    """(path, value dict) of every {"value", "ci"} in a JSON tree."""
    if isinstance(tree, dict):
        if set(tree) == {"value", "ci"}:
            yield path, tree
            return
        for k, v in tree.items():
            yield from _estimates(v, f"{path}/{k}")


def test_the_bench_on_a_tiny_label_run(label_run, tmp_path, capsys):
    out, doc, figures = tmp_path / "vp.json", tmp_path / "results.md", tmp_path / "img"
    assert main(["--run", str(label_run), *TINY_BENCH, "--out", str(out), "--doc", str(doc),
                 "--figures", str(figures), "--lowpass-hz", "5000"]) == 0
    r = json.loads(out.read_text(encoding="utf-8"))
    S = r["cohort"]["series"]
    assert S == 10 and sum(r["cohort"]["series_per_type"].values()) == S and r["types"] == list(CLASS_NAMES)
    assert set(r["read_back"]) == {"generated", "real"}
    for side in ("generated", "real"):
        assert set(r["read_back"][side]) == {"heads", "series_model"}  # the run has a series model
        for reader in r["read_back"][side].values():
            assert np.sum(reader["type"]["confusion"]) == S
            assert 0 <= reader["threshold"]["within_10db"]["value"] <= 1
    assert set(r["independent"]) >= {"real", "generated", "agreement_with_network", "train_recordings"}
    assert set(r["fidelity"]) == set(CLASS_NAMES)
    assert sum(f["series"] for f in r["fidelity"].values()) == S
    loud = [f["microphonic"] for f in r["fidelity"].values() if "microphonic" in f]  # types with recordings >= 70 dB
    assert loud and all(m["recordings"] > 0 and np.isfinite(m["generated"]) and np.isfinite(m["real"]) for m in loud)
    for path, e in _estimates(r):
        v, (lo, hi) = e["value"], e["ci"]
        assert v is None or np.isfinite(v), path
        if "ratio" in path or path.endswith("mae_db"):
            assert v > 0 or path.endswith("mae_db"), path
        elif "/frechet/" in path:
            assert v >= 0, path
        elif v is not None:
            assert 0 <= v <= 1, path
            if "/score" in path:
                assert v <= 0.5, path
        if lo is not None and hi is not None and v is not None:
            assert lo - 1e-9 <= hi, path
    assert "grid" in r and isinstance(r["type_waves"], list)  # the wave map head: per condition, per type and level
    assert all(row["n"] >= MIN_BAND and row["type"] in CLASS_NAMES for row in r["type_waves"])
    if r["type_waves"]:
        assert "| type | level | recordings | wave I read" in doc.read_text(encoding="utf-8")
    assert r["sampling"]["steps"] == 2 and r["sampling"]["sampler"]  # the run's sampler, steps overridden
    assert r["sampling"]["lowpass_hz"] == 5000.0  # the flag, recorded and said in the doc
    assert "low-pass 5000 Hz" in doc.read_text(encoding="utf-8")
    text = doc.read_text(encoding="utf-8")
    assert "<!-- virtual_patients: begin -->" in text and "| reader | type macro-F1, generated" in text
    assert "](img/virtual_patients_waterfall.png)" in text
    for name in ("confusion", "threshold", "waterfall"):
        assert (figures / f"virtual_patients_{name}.png").read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    assert "| series model |" in captured.out
    assert "virtual_patients: sampling 10 twins" in captured.err and "reading the generated series back" in captured.err


def test_a_run_without_label_conditioning_is_one_error_line(tmp_path, capsys):
    cfg = tiny_config(tmp_path, "training.epochs=1", "model.base_channels=4", "data.synthetic.patients=6")
    train_run(cfg, tmp_path / "run")
    capsys.readouterr()
    out = tmp_path / "vp.json"
    assert main(["--run", str(tmp_path / "run"), *TINY_BENCH, "--out", str(out), "--no-doc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: run '{tmp_path / 'run'}': expected a run trained with "
                                               "model.label_conditioning true")
    assert not out.exists()


def test_types_keeps_only_the_series_of_those_types(label_run, tmp_path, capsys):
    """--types: the cohort's series of the named types alone (a development aid), said in the JSON; an
    unknown or repeated name is one error line, as is a type the cohort lacks."""
    out = tmp_path / "vp.json"
    assert main(["--run", str(label_run), *TINY_BENCH, "--types", "normal", "--out", str(out), "--no-doc"]) == 0
    r = json.loads(out.read_text(encoding="utf-8"))
    per_type = r["cohort"]["series_per_type"]
    assert per_type["NORMAL"] == r["cohort"]["series"] > 0 and sum(per_type.values()) == per_type["NORMAL"]
    assert r["benchmark"]["types"] == ["NORMAL"]
    capsys.readouterr()
    for flag, expected in (("FOO", "expected one of"), ("NORMAL,normal", "expected distinct types")):
        with pytest.raises(SystemExit):
            main(["--run", str(label_run), *TINY_BENCH, "--types", flag, "--out", str(out), "--no-doc"])
        err = capsys.readouterr().err.strip().splitlines()
        assert expected in err[-1] and "--types" in err[-1]
