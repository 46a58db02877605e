"""Evaluation figures (matplotlib, Agg backend: no display needed). Each function writes one PNG
and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.collect import Collected  # noqa: E402
from evaluation.metrics import SAMPLE_RATE_HZ  # noqa: E402
from evaluation.runlog import RunLog  # noqa: E402
from training.components import COMPONENTS, DISPLAY_NAMES  # noqa: E402

CURVE_KEYS: tuple[str, ...] = ("total", *COMPONENTS)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(n: int, cols: int = 4, size: tuple[float, float] = (3.6, 2.8)):
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def _label(key: str) -> str:
    return DISPLAY_NAMES.get(key, key.capitalize())


def plot_loss_curves(runs: Sequence[RunLog], path: Path, keys: Sequence[str] = CURVE_KEYS) -> Path:
    """One panel per component (and the total): train (step-log window means, dashed) and val
    (epoch summaries, solid) against the optimizer step; one colour per run when several are
    overlaid (``evaluation.compare``). Log scale where every value is positive."""
    fig, axes = _grid(len(keys))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes, keys, strict=False):
        positive = True
        for i, run in enumerate(runs):
            c = colors[i % len(colors)]
            tag = f"{run.name}: " if len(runs) > 1 else ""
            for split, kinds, style in (("train", ("step",), "--"), ("val", ("epoch",), "-")):
                steps, values = run.series(f"{split}/{key}", kinds)
                if values:
                    ax.plot(steps, values, style, color=c, marker="." if split == "val" else None,
                            label=f"{tag}{split}", alpha=0.6 if split == "train" else 1.0)
                    positive &= min(values) > 0
        if ax.lines:
            if positive:
                ax.set_yscale("log")
            ax.legend(fontsize=6)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(_label(key))
        ax.set_xlabel("optimizer step")
    return _save(fig, path)


def plot_weights(run: RunLog, path: Path) -> Path:
    """The balancer weights over optimizer steps, one line per weight, labelled by component."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = run.weight_labels()
    for key in run.weight_keys():
        steps, values = run.series(key)
        ax.plot(steps, values, label=labels[key])
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no weight records in metrics.jsonl", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("weight")
    ax.set_title(f"Balancer weights: {run.name}")
    return _save(fig, path)


def plot_confusion(cm: Sequence[Sequence[int]], class_names: Sequence[str], path: Path) -> Path:
    """Row-normalized confusion matrix (share of each true class), counts written in the cells."""
    cm = np.asarray(cm, dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.6))
    im = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    k = len(class_names)
    ax.set_xticks(range(k), class_names, rotation=30, ha="right")
    ax.set_yticks(range(k), class_names)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color="white" if share[i, j] > 0.5 else "black",
                    fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, label="share of true class")
    return _save(fig, path)


def plot_scatter(col: Collected, path: Path) -> Path:
    """Predicted against true wave V latency and amplitude (true peaks only) and threshold, with the
    identity line."""
    panels = (
        ("wave V latency (ms)", col.latency_true[col.peak_mask], col.latency_pred[col.peak_mask]),
        ("wave V amplitude (µV)", col.amplitude_true[col.peak_mask], col.amplitude_pred[col.peak_mask]),
        ("threshold (dB nHL)", col.threshold_true, col.threshold_pred),
    )
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (title, y, yhat) in zip(axes, panels, strict=True):
        if len(y):
            ax.scatter(y, yhat, s=5, alpha=0.4)
            lo, hi = float(min(y.min(), yhat.min())), float(max(y.max(), yhat.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity")
            ax.legend(fontsize=7)
        ax.set_title(title)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
    return _save(fig, path)


def plot_waveforms(examples: dict[int, dict[str, np.ndarray]], class_names: Sequence[str], units: str,
                   path: Path) -> Path:
    """Per class: a real recording, its noisy version and the denoised estimate, and signals
    generated for the same static condition."""
    fig, axes = plt.subplots(len(examples) or 1, 1, figsize=(8, 2.2 * max(len(examples), 1)), squeeze=False)
    for ax, (k, ex) in zip(axes[:, 0], sorted(examples.items()), strict=False):
        t_ms = np.arange(len(ex["real"])) / SAMPLE_RATE_HZ * 1000
        if "noisy" in ex:
            ax.plot(t_ms, ex["noisy"], color="0.75", lw=0.8, label="noisy input")
        ax.plot(t_ms, ex["real"], color="k", lw=1.4, label="real")
        if "denoised" in ex:
            ax.plot(t_ms, ex["denoised"], color="tab:blue", lw=1.2, label="denoised")
        for i, g in enumerate(ex.get("generated", [])):
            ax.plot(t_ms, g, color="tab:orange", lw=0.9, alpha=0.7, label="generated" if i == 0 else None)
        age, intensity, rate, fmp = (float(v) for v in ex["static"])
        ax.set_title(f"{class_names[k]}: age {age:.1f} y, {intensity:.0f} dB, {rate:.1f}/s, FMP {fmp:.0f}", fontsize=9)
        ax.set_ylabel(units)
        ax.legend(fontsize=7, ncol=4, loc="upper right")
    axes[-1, 0].set_xlabel("time (ms)")
    return _save(fig, path)
