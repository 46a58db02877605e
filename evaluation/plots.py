"""Evaluation figures (matplotlib, Agg backend: no display needed). Each function writes one PNG
and returns its path.

They are drawn for a paper: sized in inches for a two-column page (7.2 in wide) with 7-8 pt
text, saved at 200 dpi; units on the axes, never in titles; each scatter panel states its n and
its metrics (Pearson r, MAE); one legend per figure, outside the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from data.records import SAMPLE_RATE_HZ  # noqa: E402
from data.synthetic import NO_RESPONSE_THRESHOLD_DB  # noqa: E402
from evaluation.collect import Collected  # noqa: E402
from evaluation.metrics import regression_metrics  # noqa: E402
from evaluation.runlog import RunLog  # noqa: E402
from training.components import COMPONENTS, DISPLAY_NAMES  # noqa: E402
from training.figure_style import PAPER_RC, format_condition  # noqa: E402

CURVE_KEYS: tuple[str, ...] = ("total", *COMPONENTS)
PAGE_WIDTH_IN = 7.2  # a two-column journal page


def paper_style(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a plotting function under :data:`PAPER_RC` (text sizes are fixed when artists are made)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plt.rc_context(PAPER_RC):
            return fn(*args, **kwargs)

    return wrapper


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _label(key: str) -> str:
    return DISPLAY_NAMES.get(key, key.capitalize())


def _stats_box(ax, lines: Sequence[str]) -> None:
    ax.text(0.03, 0.97, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=7,
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.8", "alpha": 0.9})


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


# --------------------------------------------------------------------------------------------
# training curves


@paper_style
def plot_loss_curves(runs: Sequence[RunLog], path: Path, keys: Sequence[str] = CURVE_KEYS) -> Path:
    """One panel per component (and the total): train (step-log window means, dashed) and val
    (epoch summaries, solid) against the optimizer step; one colour per run when several are
    overlaid (``evaluation.compare``). Log scale where every value is positive. One legend, above
    the panels."""
    cols = 4
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PAGE_WIDTH_IN, 1.75 * rows + 0.5), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for i, (ax, key) in enumerate(zip(axes.flat, keys, strict=False)):
        positive = True
        for j, run in enumerate(runs):
            for split, kinds, style in (("train", ("step",), "--"), ("val", ("epoch",), "-")):
                steps, values = run.series(f"{split}/{key}", kinds)
                if values:
                    ax.plot(steps, values, style, color=colors[j % len(colors)], lw=1.0,
                            marker="." if split == "val" else None, ms=3, alpha=0.6 if split == "train" else 1.0)
                    positive &= min(values) > 0
        if ax.lines:
            if positive:
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(_label(key))
        if i % cols == 0:
            ax.set_ylabel("loss" + (" (log scale)" if ax.get_yscale() == "log" else ""))
        if i + cols >= len(keys):  # the lowest panel of its column
            ax.set_xlabel("optimizer step")
    handles = [Line2D([], [], color="0.3", ls="--", label="train (window mean)"),
               Line2D([], [], color="0.3", ls="-", marker=".", label="validation")]
    if len(runs) > 1:
        handles += [Line2D([], [], color=colors[j % len(colors)], lw=2, label=run.name) for j, run in enumerate(runs)]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(handles), 6),
               frameon=False)
    fig.tight_layout()
    return _save(fig, path)


@paper_style
def plot_weights(run: RunLog, path: Path) -> Path:
    """The balancer weights over optimizer steps, one line per weight, labelled by component."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN / 2, 2.4))
    labels = run.weight_labels()
    for key in run.weight_keys():
        steps, values = run.series(key)
        ax.plot(steps, values, lw=1.0, label=_label(labels[key]))
    if ax.lines:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    else:
        ax.text(0.5, 0.5, "no weight records in metrics.jsonl", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss weight")
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# predictions


@paper_style
def plot_confusion(cm: Sequence[Sequence[int]], class_names: Sequence[str], path: Path) -> Path:
    """Row-normalized confusion matrix (share of each true class), counts written in the cells."""
    cm = np.asarray(cm, dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN / 2, 3.0))
    im = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    k = len(class_names)
    ax.set_xticks(range(k), class_names, rotation=30, ha="right")
    ax.set_yticks(range(k), class_names)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color="white" if share[i, j] > 0.5 else "black",
                    fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="share of the true class")
    fig.tight_layout()
    return _save(fig, path)


def per_series(col: Collected, true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(true, predicted, what was counted) per intensity series: the median of each series'
    recordings (the true threshold is one value per series, i.e. per patient unless a patient has
    several ears or sessions; the heads answer per recording). Without patient ids: per recording."""
    if col.patient_id is None:
        return true, pred, "recordings"
    series = col.series_id if col.series_id is not None else col.patient_id
    _, group = np.unique(np.stack([col.patient_id, series]), axis=1, return_inverse=True)
    group = group.ravel()
    ids = np.arange(group.max() + 1)
    t = np.array([np.median(true[group == g]) for g in ids])
    y = np.array([np.median(pred[group == g]) for g in ids])
    counted = "patients" if len(ids) == len(np.unique(col.patient_id)) else "series"
    return t, y, counted


def _scatter_panel(ax, y: np.ndarray, yhat: np.ndarray, what: str, unit: str, counted: str) -> None:
    if len(y):
        ax.scatter(y, yhat, s=4, alpha=0.35, lw=0, color="tab:blue")
        lo, hi = float(min(y.min(), yhat.min())), float(max(y.max(), yhat.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    m = regression_metrics(y, yhat)
    _stats_box(ax, [f"n = {m['n']} {counted}", f"r = {_fmt(m['pearson_r'])}", f"MAE = {_fmt(m['mae'])} {unit}"])
    ax.set_xlabel(f"true {what} ({unit})")
    ax.set_ylabel(f"predicted {what} ({unit})")


@paper_style
def plot_scatter(col: Collected, path: Path) -> Path:
    """Predicted against true, with the identity line and n, r and MAE on each panel: wave V latency
    and amplitude per recording (recordings with a wave V), and the threshold per patient, or per
    intensity series where a patient has several (:func:`per_series`). Patients without a response
    (true threshold coded as no response, 105 dB) are drawn apart, in their own strip on the right,
    not as a point at 105 dB on the axis."""
    fig = plt.figure(figsize=(PAGE_WIDTH_IN, 2.5))
    grid = fig.add_gridspec(1, 4, width_ratios=[1, 1, 1, 0.28], wspace=0.45)
    lat_ax, amp_ax, thr_ax = (fig.add_subplot(grid[0, i]) for i in range(3))
    nr_ax = fig.add_subplot(grid[0, 3], sharey=thr_ax)
    mask = col.peak_mask
    _scatter_panel(lat_ax, col.latency_true[mask], col.latency_pred[mask], "wave V latency", "ms", "recordings")
    _scatter_panel(amp_ax, col.amplitude_true[mask], col.amplitude_pred[mask], "wave V amplitude", "µV", "recordings")
    true, pred, counted = per_series(col, col.threshold_true, col.threshold_pred)
    none = true >= NO_RESPONSE_THRESHOLD_DB
    _scatter_panel(thr_ax, true[~none], pred[~none], "threshold", "dB nHL", counted)
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, int(none.sum()))
    nr_ax.scatter(jitter, pred[none], s=6, alpha=0.6, lw=0, color="tab:red")
    nr_ax.set_xlim(-1, 1)
    nr_ax.set_xticks([0], ["no\nresponse"])
    nr_ax.tick_params(axis="y", labelleft=False)
    nr_ax.set_title(f"n = {int(none.sum())}", fontsize=7)
    for spine in ("left",):
        nr_ax.spines[spine].set_linestyle(":")
    return _save(fig, path)


@paper_style
def plot_waveforms(examples: dict[int, dict[str, np.ndarray]], class_names: Sequence[str], units: str,
                   path: Path) -> Path:
    """Per class: a real recording, its noisy version and the denoised estimate, and signals
    generated for the same static condition; each panel names the class and the condition. One
    legend above the panels, so no trace is covered. ``units``: "µV", or "z-score" when the run
    normalized each recording on its own."""
    n = max(len(examples), 1)
    fig, axes = plt.subplots(n, 1, figsize=(PAGE_WIDTH_IN / 2 + 0.6, 1.35 * n + 0.4), squeeze=False, sharex=True)
    for ax, (k, ex) in zip(axes[:, 0], sorted(examples.items()), strict=False):
        t_ms = np.arange(len(ex["real"])) / SAMPLE_RATE_HZ * 1000
        if "noisy" in ex:
            ax.plot(t_ms, ex["noisy"], color="0.75", lw=0.6, label="noisy input")
        ax.plot(t_ms, ex["real"], color="k", lw=1.1, label="recorded")
        if "denoised" in ex:
            ax.plot(t_ms, ex["denoised"], color="tab:blue", lw=0.9, label="denoised")
        for i, g in enumerate(ex.get("generated", [])):
            ax.plot(t_ms, g, color="tab:orange", lw=0.7, alpha=0.7, label="generated" if i == 0 else None)
        ax.set_title(f"{class_names[k]}: {format_condition(ex['static'])}", loc="left")
        ax.set_ylabel(f"amplitude ({units})")
    axes[-1, 0].set_xlabel("time (ms)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(labels), frameon=False)
    fig.tight_layout()
    return _save(fig, path)
