"""Scores of simple baselines on the synthetic data, for judging later model results.

    python -m data.baselines --patients 2000 --seed 0 [--json FILE]

Patients are split 70/15/15 by ``data.splits.split_patients`` (split seed 0); models are fitted
on the training split and scored per recording on the test split. Two baselines per target:

- the constant: the majority class / the training mean;
- a linear model on signal + static (200 µV samples and age, intensity, rate, FMP, standardized
  on the training split): logistic regression for class and wave V presence (plain and with
  balanced class weights), ridge regression for latency, amplitude (recordings with a wave V)
  and threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, mean_absolute_error, roc_auc_score
from sklearn.preprocessing import StandardScaler

from data.records import Records
from data.splits import split_patients
from data.synthetic import generate


def _features(records: Records) -> np.ndarray:
    return np.concatenate([records.signal, records.static], axis=1).astype(np.float64)  # (N 204)


def _classification(name: str, y_tr: np.ndarray, y_te: np.ndarray, x_tr: np.ndarray, x_te: np.ndarray) -> list[dict]:
    majority = np.full_like(y_te, np.bincount(y_tr).argmax())
    rows = [{"target": name, "model": "majority", **_cls_scores(y_te, majority)}]
    for weight in (None, "balanced"):
        model = LogisticRegression(max_iter=3000, class_weight=weight).fit(x_tr, y_tr)
        scores = _cls_scores(y_te, model.predict(x_te))
        if len(np.unique(y_tr)) == 2:
            scores["auc"] = float(roc_auc_score(y_te, model.predict_proba(x_te)[:, 1]))
        rows.append({"target": name, "model": f"logistic ({weight or 'unweighted'})", **scores})
    return rows


def _cls_scores(y: np.ndarray, pred: np.ndarray) -> dict:
    return {"accuracy": float(accuracy_score(y, pred)), "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0))}


def _regression(name: str, y_tr: np.ndarray, y_te: np.ndarray, x_tr: np.ndarray, x_te: np.ndarray) -> list[dict]:
    pred = Ridge(alpha=1.0).fit(x_tr, y_tr).predict(x_te)
    mean = np.full_like(y_te, y_tr.mean())
    return [{"target": name, "model": "train mean", "mae": float(mean_absolute_error(y_te, mean))},
            {"target": name, "model": "ridge", "mae": float(mean_absolute_error(y_te, pred)),
             "r2": float(1 - ((y_te - pred) ** 2).sum() / ((y_te - y_te.mean()) ** 2).sum())}]


def baselines(n_patients: int = 2000, seed: int = 0) -> dict:
    records = generate(n_patients, seed)
    tr_idx, _, te_idx = split_patients(records.patient_id, records.label, (0.7, 0.15, 0.15), seed=0)
    tr, te = records.subset(tr_idx), records.subset(te_idx)
    scaler = StandardScaler().fit(_features(tr))
    x_tr, x_te = scaler.transform(_features(tr)), scaler.transform(_features(te))
    rows = _classification("class", tr.label, te.label, x_tr, x_te)
    rows += _classification("peak_mask", tr.peak_mask.astype(int), te.peak_mask.astype(int), x_tr, x_te)
    for name in ("peak_latency", "peak_amplitude"):
        m_tr, m_te = tr.peak_mask, te.peak_mask
        rows += _regression(name, getattr(tr, name)[m_tr].astype(float), getattr(te, name)[m_te].astype(float),
                            x_tr[m_tr], x_te[m_te])
    rows += _regression("threshold", tr.threshold.astype(float), te.threshold.astype(float), x_tr, x_te)
    return {"patients": n_patients, "seed": seed, "train_recordings": len(tr), "test_recordings": len(te),
            "rows": rows}


def format_table(result: dict) -> str:
    cols = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "mae", "r2")
    lines = [f"| target | model | {' | '.join(cols)} |", "|" + "---|" * (len(cols) + 2)]
    for row in result["rows"]:
        cells = [f"{row[c]:.3f}" if c in row else "" for c in cols]
        lines.append(f"| {row['target']} | {row['model']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data.baselines", description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the scores as JSON")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    result = baselines(args.patients, args.seed)
    print(f"{args.patients} patients (seed {args.seed}): {result['train_recordings']} train, "
          f"{result['test_recordings']} test recordings ({time.perf_counter() - start:.0f} s)")
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
