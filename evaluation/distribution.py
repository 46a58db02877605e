"""Distribution-level comparison of two sample sets: Fréchet distance, classifier two-sample test,
and train-on-one / test-on-the-other transfer (bench/generation.py uses all three).

Inputs are feature arrays [N, D] (one row per sample). Nothing here knows the network: the caller
chooses the features (bench/generation.py: the network's pooled trunk features at t = 0).

- Fréchet distance (Fréchet 1957; Dowson & Landau 1982, the closed form for Gaussians; used on
  network features as FID by Heusel et al. 2017): fit a Gaussian to each set and compute

      FD = |mu_1 - mu_2|^2 + tr(C_1) + tr(C_2) - 2 tr((C_1^{1/2} C_2 C_1^{1/2})^{1/2})

  The last trace equals tr((C_1 C_2)^{1/2}) (same eigenvalues) but is computed from symmetric
  eigendecompositions only, so it is real and finite where scipy.linalg.sqrtm(C_1 C_2) returns
  complex parts for near-singular covariances. FD is biased upwards at finite N (Chong & Forsyth
  2020): compare a value only with a reference computed at the same N (bench/generation.py pairs
  every generated set with a real set of the same size).
- Classifier two-sample test (Lopez-Paz & Oquab 2017): a logistic regression learns to tell the
  sets apart; its cross-validated AUROC is 0.5 when they are indistinguishable to it.
- Transfer (train on generated, test on real; Esteban et al. 2017 "TSTR"): fit a small linear model
  on one set's features and labels, score it on another's.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

C2ST_FOLDS = 5
RIDGE_ALPHAS = np.logspace(-2, 5, 15)  # RidgeCV picks one by leave-one-out (GCV) on the training set
TASKS = ("regression", "binary")


def _features(name: str, x: np.ndarray, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < min_rows:
        raise ValueError(f"{name}: expected a 2-D feature array with at least {min_rows} rows, found shape "
                         f"{list(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: expected finite features, found {int((~np.isfinite(x)).sum())} non-finite values")
    return x


def _same_width(name: str, a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name}: expected two sets with one feature dimension, found {a.shape[1]} and {b.shape[1]}")


# --------------------------------------------------------------------------------------------
# Fréchet distance


def gaussian_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of the rows of x [N, D] (float64)."""
    x = _features("gaussian_fit", x)
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    """C^{1/2} of a symmetric positive semi-definite matrix; round-off negative eigenvalues count as 0."""
    w, V = np.linalg.eigh((c + c.T) / 2)  # (D), (D D)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T  # (D D)


def frechet_gaussian(mu1: np.ndarray, c1: np.ndarray, mu2: np.ndarray, c2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, c1) and N(mu2, c2); see the module
    docstring. mu [D], c [D, D] symmetric PSD. Round-off can leave a value of order -1e-12 for equal
    Gaussians: the result is clipped at 0 (a distance)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    c1, c2 = np.atleast_2d(np.asarray(c1, np.float64)), np.atleast_2d(np.asarray(c2, np.float64))
    D = mu1.shape[0]
    if mu2.shape != (D,) or c1.shape != (D, D) or c2.shape != (D, D):
        raise ValueError(f"frechet_gaussian: expected means [D] and covariances [D, D] of one D, found "
                         f"{list(mu1.shape)}, {list(c1.shape)}, {list(mu2.shape)}, {list(c2.shape)}")
    s1 = _psd_sqrt(c1)  # (D D) C_1^{1/2}
    m = s1 @ c2 @ s1  # (D D) symmetric PSD, eigenvalues of C_1 C_2
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    fd = float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2.0 * tr_sqrt)
    return max(fd, 0.0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of a [N, D] and b [M, D]."""
    a, b = _features("frechet_distance", a), _features("frechet_distance", b)
    _same_width("frechet_distance", a, b)
    return frechet_gaussian(*gaussian_fit(a), *gaussian_fit(b))


# --------------------------------------------------------------------------------------------
# classifier two-sample test


def c2st_scores(a: np.ndarray, b: np.ndarray, groups_a: np.ndarray | None = None, groups_b: np.ndarray | None = None,
                *, folds: int = C2ST_FOLDS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities that a row belongs to ``a``, from a standardized logistic regression
    trained to tell a [N, D] from b [M, D] (stratified K-fold; rows of one group, e.g. one patient,
    stay in one fold). Returns (scores for a [N], scores for b [M]); AUROC 0.5 = indistinguishable.
    ``folds`` is lowered to the number of groups of the smaller set when that is smaller (at least 2)."""
    a, b = _features("c2st", a), _features("c2st", b)
    _same_width("c2st", a, b)
    ga = np.arange(len(a)) if groups_a is None else np.asarray(groups_a)
    gb = len(a) + np.arange(len(b)) if groups_b is None else np.asarray(groups_b)
    if ga.shape != (len(a),) or gb.shape != (len(b),):
        raise ValueError(f"c2st groups: expected one group per row ({len(a)} and {len(b)}), found "
                         f"{list(ga.shape)} and {list(gb.shape)}")
    if np.intersect1d(ga, gb).size:
        raise ValueError("c2st groups: expected the two sets to share no group, found "
                         f"{np.intersect1d(ga, gb).size} shared")
    k = min(folds, len(np.unique(ga)), len(np.unique(gb)))
    if k < 2:
        raise ValueError(f"c2st: expected at least 2 groups in each set for cross-validation, found {k}")
    x, y, g = np.concatenate([a, b]), np.r_[np.ones(len(a)), np.zeros(len(b))], np.concatenate([ga, gb])
    scores = np.empty(len(x))
    for train, test in StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(x, y, g):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[train], y[train])
        scores[test] = clf.predict_proba(x[test])[:, 1]
    return scores[: len(a)], scores[len(a) :]


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC of scores of positives against negatives, the Mann-Whitney form (ties count one half;
    equal to sklearn's roc_auc_score); nan when either side is empty."""
    n1, n0 = len(pos), len(neg)
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(np.r_[pos, neg])  # (n1 + n0) average ranks
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def c2st_auroc(a: np.ndarray, b: np.ndarray, **kw) -> float:
    """Cross-validated AUROC of the classifier two-sample test (:func:`c2st_scores`)."""
    return auroc(*c2st_scores(a, b, **kw))


# --------------------------------------------------------------------------------------------
# transfer: train on one set, test on another


def fit_transfer(task: str, x: np.ndarray, y: np.ndarray):
    """A standardized ridge regression of y [N] on x [N, D], alpha chosen by leave-one-out on x
    (RidgeCV's closed form: no fitting loop). "regression": y is the target; "binary": y is 0/1 and
    the prediction is a score, read by its AUROC (least-squares classification, Fisher's discriminant
    direction up to scale). Returns None for a binary task without both classes."""
    x = _features("fit_transfer", x)
    y = np.asarray(y, dtype=np.float64)
    if task not in TASKS:
        raise ValueError(f"fit_transfer task: expected one of {list(TASKS)}, found {task!r}")
    if y.shape != (len(x),):
        raise ValueError(f"fit_transfer: expected one label per row ({len(x)}), found shape {list(y.shape)}")
    if task == "binary":
        if not np.isin(y, (0.0, 1.0)).all():
            other = sorted(set(np.unique(y).tolist()) - {0.0, 1.0})[:5]
            raise ValueError(f"fit_transfer binary labels: expected 0 or 1, found {other}")
        if len(np.unique(y)) < 2:
            return None
    return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS)).fit(x, y)


def transfer_score(task: str, model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Scores of a :func:`fit_transfer` model on x [M, D], y [M]: R² and MAE (regression) or AUROC
    (binary); nan where undefined (no model, a constant target, one class)."""
    y = np.asarray(y, dtype=np.float64)
    nan = float("nan")
    if task == "regression":
        if model is None or len(y) < 2 or np.ptp(y) == 0:
            return {"r2": nan, "mae": nan}
        pred = model.predict(x)
        return {"r2": float(r2_score(y, pred)), "mae": float(mean_absolute_error(y, pred))}
    if model is None:
        return {"auroc": nan}
    score = model.predict(x)
    return {"auroc": auroc(score[y == 1], score[y == 0])}
