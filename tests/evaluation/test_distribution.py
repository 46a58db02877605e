"""evaluation/distribution.py: Fréchet distance against closed forms and scipy, C2ST sanity, transfer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from scipy.stats import norm

from evaluation.distribution import (
    auroc,
    c2st_auroc,
    c2st_scores,
    fit_transfer,
    frechet_distance,
    frechet_gaussian,
    gaussian_fit,
    transfer_score,
)


def random_spd(rng: np.random.Generator, D: int, scale: float = 1.0) -> np.ndarray:
    A = rng.normal(size=(D, D))
    return scale * (A @ A.T / D + 0.1 * np.eye(D))


def test_frechet_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, c = rng.normal(size=8), random_spd(rng, 8)
    assert frechet_gaussian(mu, c, mu, c) == pytest.approx(0.0, abs=1e-9)


def test_frechet_1d_closed_form():
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) = (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_gaussian([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(9.0 + 1.5**2)


def test_frechet_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.0, -1.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert frechet_gaussian(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e4])
def test_frechet_matches_the_scipy_sqrtm_formula_at_any_scale(scale):
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6) * np.sqrt(scale), rng.normal(size=6) * np.sqrt(scale)
    c1, c2 = random_spd(rng, 6, scale), random_spd(rng, 6, scale)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(linalg.sqrtm(c1 @ c2).real)
    assert frechet_gaussian(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-7)


def test_frechet_is_symmetric_and_finite_for_singular_covariances():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 10))  # 5 rows in 10 dimensions: rank-4 covariance
    b = rng.normal(size=(7, 10)) + 1.0
    d_ab, d_ba = frechet_distance(a, b), frechet_distance(b, a)
    assert np.isfinite(d_ab) and d_ab > 0
    # zero eigenvalues come out as +-1e-16 and their square roots as 1e-8: symmetric to 1e-6, not 1e-12
    assert d_ab == pytest.approx(d_ba, rel=1e-6)


def test_frechet_of_samples_approaches_the_gaussians_value():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, size=(20000, 4))
    b = rng.normal(0.5, 2.0, size=(20000, 4))
    assert frechet_distance(a, b) == pytest.approx(4 * 0.25 + 4 * 1.0, rel=0.03)
    assert frechet_distance(a[:10000], a[10000:]) < 0.01  # two halves of one distribution


def test_gaussian_fit_is_mean_and_unbiased_covariance():
    x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 2.0]])
    mu, c = gaussian_fit(x)
    np.testing.assert_allclose(mu, [2.0, 2.0])
    np.testing.assert_allclose(c, np.cov(x.T))


def test_frechet_refuses_bad_input():
    with pytest.raises(ValueError, match=r"frechet_distance: expected two sets with one feature dimension, "
                                         r"found 3 and 4"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"frechet_distance: expected a 2-D feature array with at least 2 rows, "
                                         r"found shape \[1, 3\]"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"frechet_distance: expected finite features, found 1 non-finite values"):
        frechet_distance(np.r_[np.zeros((4, 3)), [[np.nan, 0, 0]]], np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"frechet_gaussian: expected means \[D\] and covariances \[D, D\] of one D"):
        frechet_gaussian(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_c2st_cannot_tell_one_distribution_from_itself():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1200, 6))
    assert abs(c2st_auroc(x[:600], x[600:]) - 0.5) < 0.06


def test_c2st_auroc_of_a_mean_shift_matches_the_optimal_classifier():
    # two unit-variance Gaussians Delta apart: the best (linear) classifier's AUROC is Phi(Delta / sqrt(2))
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(1000, 3)), rng.normal(size=(1000, 3))
    a[:, 0] += 1.0
    assert c2st_auroc(a, b) == pytest.approx(norm.cdf(1.0 / np.sqrt(2)), abs=0.04)  # 0.760; sd about 0.012


def test_c2st_keeps_groups_together_and_refuses_shared_groups():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(40, 2)), rng.normal(size=(30, 2))
    sa, sb = c2st_scores(a, b, np.arange(40) // 4, 100 + np.arange(30) // 3)
    assert sa.shape == (40,) and sb.shape == (30,) and np.all((sa >= 0) & (sa <= 1))
    with pytest.raises(ValueError, match=r"c2st groups: expected the two sets to share no group, found 1 shared"):
        c2st_scores(a, b, np.zeros(40), np.zeros(30))
    with pytest.raises(ValueError, match=r"c2st: expected at least 2 groups in each set for cross-validation, found 1"):
        c2st_scores(a, b, np.zeros(40), np.ones(30))


def test_transfer_regression_and_binary():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 5))
    y = 3.0 * x[:, 0] + 0.1 * rng.normal(size=400)
    model = fit_transfer("regression", x[:200], y[:200])
    s = transfer_score("regression", model, x[200:], y[200:])
    assert s["r2"] > 0.95 and s["mae"] < 0.3
    yb = (x[:, 1] > 0).astype(float)
    clf = fit_transfer("binary", x[:200], yb[:200])
    assert transfer_score("binary", clf, x[200:], yb[200:])["auroc"] > 0.95
    assert fit_transfer("binary", x[:10], np.ones(10)) is None  # one class: no model
    assert np.isnan(transfer_score("binary", None, x, yb)["auroc"])
    with pytest.raises(ValueError, match=r"fit_transfer task: expected one of \['regression', 'binary'\], "
                                         r"found 'ranking'"):
        fit_transfer("ranking", x, y)
    with pytest.raises(ValueError, match=r"fit_transfer binary labels: expected 0 or 1, found \[2.0\]"):
        fit_transfer("binary", x[:3], np.array([0.0, 1.0, 2.0]))


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(8)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 60).astype(float)
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(60)], np.r_[pos, neg])
    assert auroc(pos, neg) == pytest.approx(expected)
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0 and np.isnan(auroc(np.array([]), neg))
