"""build_data(data_cfg, class_weight_mode): the batch dict of DESIGN.md, train-split statistics, both sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data.dataset import ABRDataset, build_data
from data.native import write_native
from data.records import DataFormatError
from data.stats import DataStats, fit_stats
from training.config import load_config

from .conftest import columns_of

BATCH = {
    "signal": (torch.float32, (1, 200)), "static": (torch.float32, (4,)), "label": (torch.int64, ()),
    "peak_mask": (torch.bool, ()), "peak_latency": (torch.float32, ()), "peak_amplitude": (torch.float32, ()),
    "threshold": (torch.float32, ()), "patient_id": (torch.int64, ()), "series_id": (torch.int64, ()),
    "wave_known": (torch.bool, (3,)), "wave_mask": (torch.bool, (3,)), "wave_latency": (torch.float32, (3,)),
    "wave_amplitude": (torch.float32, (3,)),
}


def _build(*overrides: str):
    from tests.runs import over

    cfg = load_config(None, over(["data.synthetic.patients=24", "data.synthetic.seed=2"], *overrides))
    return build_data(cfg.data, cfg.loss.class_weights)


@pytest.fixture(scope="module")
def bundle():
    return _build()


def test_items_and_batches_follow_the_contract(bundle):
    item = bundle.train[0]
    assert {k: (v.dtype, tuple(v.shape)) for k, v in item.items()} == BATCH
    batch = next(iter(DataLoader(bundle.train, batch_size=16)))
    assert {k: (v.dtype, tuple(v.shape)) for k, v in batch.items()} == {k: (d, (16, *s)) for k, (d, s) in BATCH.items()}
    direct = bundle.train.batch(torch.arange(16))
    assert all(torch.equal(direct[k], batch[k]) for k in BATCH)
    assert all(torch.isfinite(v).all() for k, v in bundle.train.tensors.items() if v.is_floating_point())
    t = bundle.train.tensors
    assert (t["peak_latency"][~t["peak_mask"]] == 0).all() and (t["peak_amplitude"][~t["peak_mask"]] == 0).all()
    # waves I, III, V: V is the seeds' wave V columns; I and III are marked by the generator
    assert torch.equal(t["wave_mask"][:, 2], t["peak_mask"]) and torch.equal(t["wave_latency"][:, 2], t["peak_latency"])
    assert t["wave_known"].all() and (t["wave_latency"][~t["wave_mask"]] == 0).all()


def test_splits_are_by_patient_and_stats_from_train_only(bundle):
    ids = [set(ds.tensors["patient_id"].tolist()) for ds in (bundle.train, bundle.val, bundle.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and all(ids)
    t = bundle.train.tensors
    raw_signal = t["signal"] * bundle.stats.signal_std + bundle.stats.signal_mean  # back to µV
    assert raw_signal.mean().item() == pytest.approx(bundle.stats.signal_mean, abs=1e-5)
    assert t["signal"].std().item() == pytest.approx(1.0, abs=1e-3)
    assert bundle.stats.static_mean == pytest.approx(t["static"].double().mean(0).tolist(), rel=1e-5)
    lat = t["peak_latency"][t["peak_mask"]].double()
    assert bundle.stats.latency_mean == pytest.approx(lat.mean().item(), rel=1e-5)
    assert bundle.class_weights.shape == (5,) and bundle.class_weights.mean().item() == pytest.approx(1.0)
    assert DataStats.from_dict(bundle.stats.to_dict()) == bundle.stats
    assert bundle.stats.static_min == t["static"].min(0).values.tolist()  # the span prediction warns outside
    assert bundle.stats.static_max == t["static"].max(0).values.tolist()
    older = {k: v for k, v in bundle.stats.to_dict().items() if k not in ("static_min", "static_max")}
    assert DataStats.from_dict(older).static_min is None  # a run saved before the span was recorded


def test_deterministic(bundle):
    again = _build()
    assert torch.equal(again.train.tensors["signal"], bundle.train.tensors["signal"])
    other = _build("data.split_seed=1")
    assert not torch.equal(other.train.tensors["patient_id"], bundle.train.tensors["patient_id"])


def test_per_sample_normalization_z_scores_each_signal(small_records):
    ds = ABRDataset(small_records, fit_stats(small_records, "per_sample"))
    sig = ds.tensors["signal"][:, 0]
    assert torch.allclose(sig.mean(1), torch.zeros(len(ds)), atol=1e-5)
    assert torch.allclose(sig.std(1), torch.ones(len(ds)), atol=1e-4)


def test_options_sample_weights_and_class_weights():
    b = _build("data.balanced_sampler=true", "loss.class_weights=none")
    assert b.class_weights.tolist() == [1.0] * 5
    w, label = b.sample_weights, b.train.tensors["label"]
    assert w.shape == (len(b.train),)
    per_class = [w[label == c].sum().item() for c in label.unique()]
    assert per_class == pytest.approx([1.0] * len(per_class))  # every class equally likely
    assert _build().sample_weights is None


def test_file_source_strict_and_lenient(tmp_path, small_records):
    path = write_native(tmp_path / "d.npz", small_records)
    b = _build("data.source=file", f"data.path={path}")
    assert len(b.train) + len(b.val) + len(b.test) == len(small_records)
    cols = columns_of(small_records)
    cols["label"][5] = 99
    bad = small_records.subset(np.arange(len(small_records)))
    bad.label = cols["label"]
    write_native(tmp_path / "bad.npz", bad)
    with pytest.raises(DataFormatError, match=r"bad\.npz: sample 5: unknown label"):
        _build("data.source=file", f"data.path={tmp_path / 'bad.npz'}")
    b = _build("data.source=file", f"data.path={tmp_path / 'bad.npz'}", "data.strict=false")
    assert len(b.train) + len(b.val) + len(b.test) == len(small_records) - 1


def test_fit_stats_guards_zero_spread(small_records):
    one = small_records.subset(np.zeros(3, dtype=int))  # three copies of one recording
    s = fit_stats(one)
    assert s.static_std == [1.0] * 4 and s.threshold_std == 1.0


def test_synthetic_series_are_one_per_patient(bundle):
    series, patients = bundle.train.tensors["series_id"], bundle.train.tensors["patient_id"]
    assert torch.equal(series, patients)  # one simulated ear per patient


# -- every `data` key changes what is built (issue 18) -------------------------------------------


def _patients(b) -> list[set[int]]:
    return [set(ds.tensors["patient_id"].tolist()) for ds in (b.train, b.val, b.test)]


def test_synthetic_patients_and_seed_make_the_cohort(bundle):
    assert len(set().union(*_patients(bundle))) == 24
    assert len(set().union(*_patients(_build("data.synthetic.patients=12")))) == 12
    other = _build("data.synthetic.seed=3")
    assert not torch.equal(other.train.tensors["signal"][:5], bundle.train.tensors["signal"][:5])


def test_split_shares_are_the_shares_of_patients(bundle):
    half = [len(p) for p in _patients(_build("data.split=[0.5,0.25,0.25]"))]
    default = [len(p) for p in _patients(bundle)]  # 0.7, 0.15, 0.15 of 24
    assert sum(half) == sum(default) == 24
    assert abs(half[0] - 12) <= 1 and abs(default[0] - 17) <= 1  # shares rounded to whole patients


def test_normalization_per_sample_z_scores_each_training_signal(bundle):
    sig = _build("data.normalization=per_sample").train.tensors["signal"][:, 0]  # [N, L]
    assert torch.allclose(sig.mean(1), torch.zeros(len(sig)), atol=1e-5)
    assert torch.allclose(sig.std(1), torch.ones(len(sig)), atol=1e-3)
    assert not torch.allclose(bundle.train.tensors["signal"][:, 0].std(1), torch.ones(len(bundle.train)), atol=1e-3)


def test_synthetic_domain_and_catch_fraction_make_the_cohort(bundle):
    """data.synthetic.domain=wide: the same patients and labels through another recording chain;
    data.synthetic.catch_fraction: catch sessions (TOTAL, no response) added to the patients' splits."""
    wide = _build("data.synthetic.domain=wide")
    assert torch.equal(wide.train.tensors["label"], bundle.train.tensors["label"])
    assert not torch.equal(wide.train.tensors["signal"], bundle.train.tensors["signal"])
    caught = _build("data.synthetic.catch_fraction=1.0")
    catch = caught.train.tensors["series_id"] >= 24  # catch sessions: series ids after the 24 patients'
    assert catch.any() and bool((caught.train.tensors["label"][catch] == 3).all())
    assert not caught.train.tensors["peak_mask"][catch].any()
    assert _patients(caught) == _patients(bundle)  # every patient stays in its split
    mixed = _build("data.synthetic.domain=mixed")  # half the patients narrow, half wide
    assert _patients(mixed) == _patients(bundle)
    assert not torch.equal(mixed.train.tensors["signal"], wide.train.tensors["signal"])
