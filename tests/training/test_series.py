"""The series stage: SeriesNet properties, ordinal targets, and a tiny run with series.enabled."""

from __future__ import annotations

import json

import pytest
import torch

from models.series import SeriesNet
from tests.runs import read_jsonl, tiny_config, train_run
from training.series import load_series, threshold_from_logits
from training.series_stage import drop_recordings, ordinal_targets


def test_seriesnet_ignores_padding_and_recording_order():
    torch.manual_seed(0)
    net = SeriesNet(n_features=6, n_types=5, n_threshold=22, width=16, heads=2, layers=2, dropout=0.0).eval()
    ev, level = torch.randn(1, 5, 6), torch.tensor([[20.0, 40, 60, 80, 100]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    out = net(ev, level, mask)
    perm = torch.tensor([3, 0, 4, 1, 2])
    shuffled = net(ev[:, perm], level[:, perm], mask)
    padded = net(torch.cat([ev, torch.randn(1, 3, 6) * 100], 1), torch.cat([level, torch.full((1, 3), 55.0)], 1),
                 torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)], 1))
    for k in out:
        assert out[k].shape == ((1, 22) if k == "threshold_logits" else (1, 5))
        torch.testing.assert_close(shuffled[k], out[k], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(padded[k], out[k], atol=1e-5, rtol=1e-5)


def test_ordinal_targets_and_median():
    t = ordinal_targets(torch.tensor([0, 10, 21]), sigma=1.0)
    assert torch.allclose(t.sum(1), torch.ones(3))
    assert t.argmax(1).tolist() == [0, 10, 21]
    assert t[1, 9] > t[1, 7] > 0  # a near miss is cheaper than a far one
    assert ordinal_targets(torch.tensor([4]), sigma=0.0)[0].tolist() == [float(i == 4) for i in range(22)]
    logits = torch.full((1, 22), -30.0)
    logits[0, 8], logits[0, 12] = 0.0, 0.1  # 47.5 % at 40 dB, 52.5 % at 60 dB: the median is 60 dB
    median, low, high = threshold_from_logits(logits)
    assert median.tolist() == [60.0] and low.tolist() == [40.0] and high.tolist() == [60.0]


def test_drop_recordings_keeps_one_per_series():
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    for _ in range(20):
        kept = drop_recordings(mask, 0.9, g)
        assert (kept <= mask).all() and kept.any(1).all()


def test_a_run_with_the_series_stage(tmp_path):
    cfg = tiny_config(tmp_path, "data.synthetic.patients=30", "series.enabled=true", "series.epochs=2",
                      "series.val_every=1", "series.width=16", "series.heads=2")
    run_dir = tmp_path / "run"
    train_run(cfg, run_dir)
    from training.checkpoint import load_run
    from training.series_stage import run_series_stage

    loaded = load_run(run_dir)
    from data.dataset import build_data

    records = read_jsonl(run_dir / "metrics.jsonl")
    series = [r for r in records if r["kind"] == "epoch" and r["data"]["stage"] == "series"]
    assert [r["epoch"] for r in series] == [1, 2]  # the trainer ran the stage (series.enabled)
    assert all("val/series/threshold/within_5db" in r["scalars"] for r in series)
    best = run_series_stage(run_dir, loaded.model, build_data(cfg.data, cfg.loss.class_weights), cfg)  # a refit
    assert best["epoch"] in (1, 2)
    net = load_series(run_dir)
    assert net is not None and net.threshold_head.out_features == 22
    val = [r for r in records if "val/patient/threshold/within_10db" in r.get("scalars", {})]
    assert val, "validation scores the series level (training.clinical_validation defaults to true)"


# -- every `series` key changes what fit_series does (issue 18) ----------------------------------


def _series_set(seed: int, S: int = 16, levels: int = 5, F: int = 6):
    import numpy as np

    from training.series import Evidence, SeriesSet

    rng = np.random.default_rng(seed)
    N = S * levels
    sid = np.repeat(np.arange(S), levels)
    static = np.zeros((N, 4), np.float32)
    static[:, 1] = np.tile(np.linspace(20, 100, levels), S)  # intensity, dB nHL
    zeros = np.zeros(N, np.float32)
    ev = Evidence(evidence=rng.normal(size=(N, F)).astype(np.float32), proba=np.zeros((N, 5), np.float32),
                  peak_prob=zeros, latency=zeros, amplitude=zeros, threshold=zeros, static=static,
                  series_id=sid, patient_id=sid)
    threshold = np.repeat(rng.choice([20.0, 40.0, 60.0, 80.0], S), levels)
    label = np.repeat(rng.integers(0, 5, S), levels)
    return SeriesSet(ev, threshold, label)


SERIES_BASE = {"epochs": 2, "width": 16, "heads": 2, "layers": 1, "val_every": 1, "batch_size": 4}
SERIES_FLIPS = {"width": 32, "layers": 2, "heads": 4, "dropout": 0.5, "epochs": 3, "batch_size": 8, "lr": 1e-2,
                "weight_decay": 0.5, "drop_recordings": 0.6, "threshold_sigma": 0.0, "val_every": 2}


def _fit(**overrides):
    from training.config import SeriesConfig
    from training.series_stage import fit_series

    records = []
    net, _ = fit_series(_series_set(0), _series_set(1), SeriesConfig(**{**SERIES_BASE, **overrides}), 5, seed=0,
                        on_epoch=records.append)
    return net, json.dumps(records, sort_keys=True)  # NaN (a metric undefined on this set) compares equal here


def test_every_series_key_is_flipped():
    from training.config import SeriesConfig

    # `enabled`: test_series_enabled_runs_the_stage_after_training; extra_patients, thinned_series, noise_series,
    # noise_surrogates, noise_band, coherence, waterfall and microphonic change what the stage trains on, not how it
    # fits, val_noise_series what it validates on: tests/training/test_series_training_parts.py
    keys = {f for f in SeriesConfig.__dataclass_fields__
            if f not in ("enabled", "extra_patients", "thinned_series", "noise_series", "noise_surrogates",
                         "noise_band", "coherence", "waterfall", "microphonic", "val_noise_series")}
    assert set(SERIES_FLIPS) == keys
    assert _fit()[1] == _fit()[1]  # the fit is seeded: a difference below comes from the key


@pytest.mark.parametrize("key", list(SERIES_FLIPS))
def test_each_series_key_changes_the_fit(key):
    base_net, base = _fit()
    net, records = _fit(**{key: SERIES_FLIPS[key]})
    shapes = [tuple(p.shape) for p in net.parameters()] != [tuple(p.shape) for p in base_net.parameters()]
    assert shapes or records != base, key


def test_series_enabled_runs_the_stage_after_training(tmp_path):
    from tests.reliability.procs import in_process_args, train_in_process

    extra = ["training.epochs=1", "series.epochs=1", "series.width=16", "series.heads=2",
             "logging.use_tensorboard=false"]
    for enabled in (True, False):
        name = f"series-{enabled}"
        assert train_in_process(in_process_args(tmp_path, name, *extra, f"series.enabled={enabled}")) == 0
        stages = {r["data"].get("stage") for r in read_jsonl(tmp_path / name / "metrics.jsonl") if r["kind"] == "epoch"}
        assert ("series" in stages) == enabled
        assert (load_series(tmp_path / name) is not None) == enabled


def test_the_stage_resumes_exactly_from_its_state_mid_epoch():
    """SeriesStage.state_dict mid-epoch (a checkpoint_every_steps checkpoint) and a fresh stage given it
    end with the same weights as a stage that never stopped (issue 26): order, hidden recordings, dropout."""
    from training.config import SeriesConfig
    from training.series_stage import SeriesStage

    cfg = SeriesConfig(**{**SERIES_BASE, "epochs": 3, "dropout": 0.3})

    def stage():
        s = SeriesStage(cfg, 5, seed=0, grad_clip=1.0)
        s.prepare_sets(_series_set(0), _series_set(1))
        return s

    def run(s, stop_at=None):
        while not s.finished:
            for idx in s.batches():
                s.train_step(idx)
                if s.epoch == 2 and s.epoch_step == stop_at:
                    return s.state_dict()
            if s.validates:
                s.validate()
            s.end_epoch()
        return None

    whole = stage()
    run(whole)
    state = run(stage(), stop_at=2)
    assert state is not None and state["epoch"] == 2 and state["epoch_step"] == 2
    resumed = SeriesStage(cfg, 5, seed=0, grad_clip=1.0)
    resumed.load_state_dict(state)
    torch.manual_seed(123)  # whatever ran in between: the state brings its own RNG
    resumed.prepare_sets(_series_set(0), _series_set(1))
    run(resumed)
    a, b = whole.best_net().state_dict(), resumed.best_net().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the same record, NaN included (a metric with no case in these series is NaN in both)
    assert json.dumps(whole.best["record"], sort_keys=True) == json.dumps(resumed.best["record"], sort_keys=True)


def test_the_refit_cli_uses_the_runs_config_as_it_stands(tmp_path):
    """python -m training.series_stage refits with config.yaml's series settings (what --resume last wrote),
    not best.pt's: a run resumed with new series.* options had them ignored by a refit."""
    from tests.reliability.procs import in_process_args, train_in_process
    from training.checkpoint import load_checkpoint
    from training.series import SERIES_KEYS
    from training.series_stage import main

    extra = ["training.epochs=1", "series.epochs=1", "series.width=16", "series.heads=2",
             "logging.use_tensorboard=false"]
    assert train_in_process(in_process_args(tmp_path, "r", *extra, "series.enabled=true")) == 0
    run = tmp_path / "r"
    text = (run / "config.yaml").read_text(encoding="utf-8")
    assert "\n  noise_series: 0.0" in text
    (run / "config.yaml").write_text(text.replace("\n  noise_series: 0.0", "\n  noise_series: 0.5"), encoding="utf-8")
    assert main(["--run", str(run)]) == 0
    saved = load_checkpoint(run / "checkpoints" / "series.pt", required=SERIES_KEYS)
    assert saved["series_config"]["noise_series"] == 0.5
