"""Patient-level stratified splits, class weights and the balanced sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from data.splits import balanced_weights, class_weights, split_patients


def _cohort(n_patients: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 30, n_patients)
    pid = np.repeat(rng.permutation(10 * n_patients)[:n_patients], per)  # ids need not be contiguous
    cls = rng.choice(5, n_patients, p=[0.797, 0.008, 0.106, 0.033, 0.056])
    return pid, np.repeat(cls, per)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 400), seed=st.integers(0, 2**16),
       ratios=st.sampled_from([(0.7, 0.15, 0.15), (0.8, 0.2, 0.0), (0.34, 0.33, 0.33), (1.0, 0.0, 0.0)]))
def test_no_patient_in_two_splits_and_every_recording_in_one(n, seed, ratios):
    pid, label = _cohort(n, seed)
    parts = split_patients(pid, label, ratios, seed)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(pid)))
    patients = [set(pid[p].tolist()) for p in parts]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])
    for s, r in enumerate(ratios):
        assert (len(parts[s]) > 0) == (r > 0)


def test_stratified_by_class_and_deterministic():
    pid, label = _cohort(2000, 0)
    a = split_patients(pid, label, (0.7, 0.15, 0.15), seed=5)
    b = split_patients(pid, label, (0.7, 0.15, 0.15), seed=5)
    c = split_patients(pid, label, (0.7, 0.15, 0.15), seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    for cls in range(5):
        n = [len(np.unique(pid[p][label[p] == cls])) for p in a]
        share = np.array(n) / sum(n)
        assert np.allclose(share, (0.7, 0.15, 0.15), atol=0.5 / sum(n) + 0.02), (cls, n)


def test_class_weights():
    label = np.array([0] * 80 + [1] * 1 + [2] * 10 + [3] * 4 + [4] * 5)
    assert class_weights(label, "none").tolist() == [1.0] * 5
    for mode, power in (("inverse", 1.0), ("sqrt_inverse", 0.5)):
        w = class_weights(label, mode)
        assert w.dtype == torch.float32 and w.shape == (5,)
        assert w.mean().item() == pytest.approx(1.0)
        expected = 1.0 / np.array([80, 1, 10, 4, 5]) ** power
        np.testing.assert_allclose(w.numpy(), expected / expected.mean(), rtol=1e-6)
    w = class_weights(np.array([0, 0, 2]), "inverse")  # absent classes: weight 1, mean still 1
    assert w[[1, 3, 4]].tolist() == [1.0, 1.0, 1.0] and w.mean().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="expected 'none', 'inverse' or 'sqrt_inverse'"):
        class_weights(label, "balanced")


def test_balanced_weights_draw_classes_equally():
    label = np.array([0] * 990 + [1] * 10 + [2] * 100)
    weights = balanced_weights(label)
    drawn = label[torch.multinomial(weights, len(label), replacement=True,
                                    generator=torch.Generator().manual_seed(0)).numpy()]
    share = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(share, 1 / 3, atol=0.05)


def test_a_rare_class_with_three_patients_reaches_every_split():
    patient_id = np.repeat(np.arange(40), 5)
    label = np.zeros(200, dtype=np.int64)
    label[:15] = 1  # patients 0, 1, 2: the rare class
    parts = split_patients(patient_id, label, [0.7, 0.15, 0.15], seed=0)
    assert all((label[idx] == 1).any() for idx in parts)
