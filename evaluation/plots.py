"""Evaluation figures (matplotlib, Agg backend: no display needed). Each function writes one PNG
and returns its path.

They are drawn for a paper: sized in inches for a two-column page (7.2 in wide) with 7-8 pt
text, saved at 200 dpi; units on the axes, never in titles; each scatter panel states its n and
its metrics (Pearson r, MAE); one legend per figure, outside the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from data.records import EXTRA_WAVES, SAMPLE_RATE_HZ  # noqa: E402
from training.clinical import DETECTION_P  # noqa: E402
from training.clinical import NO_RESPONSE_DB as NO_RESPONSE_THRESHOLD_DB  # noqa: E402 (data.synthetic's 105 dB)
from training.components import COMPONENTS, DISPLAY_NAMES  # noqa: E402
from training.figure_style import PAPER_RC, format_condition  # noqa: E402

if TYPE_CHECKING:  # annotations only: evaluation.predict draws its figures without scipy.stats and sklearn
    from evaluation.collect import Collected
    from evaluation.runlog import RunLog

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
    """The balancer weights over optimizer steps, one line per weight, labelled by component; when
    every weight is constant (the ``fixed`` strategy) their values as text instead."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN / 2, 2.4))
    labels = run.weight_labels()
    series = {key: run.series(key) for key in run.weight_keys()}
    constant = {key: v[0] for key, (_s, v) in series.items() if v and min(v) == max(v)}
    if series and len(constant) == len(series):  # e.g. `fixed`: overlapping flat lines would hide all but one
        ax.text(0.5, 0.5, "weights constant over the run:\n" + "\n".join(
            f"{_label(labels[key])} = {v:g}" for key, v in constant.items()), ha="center", va="center",
            transform=ax.transAxes, fontsize=8)
        ax.set_axis_off()
        fig.tight_layout()
        return _save(fig, path)
    for key, (steps, values) in series.items():
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
    from evaluation.metrics import regression_metrics

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
    none = true >= NO_RESPONSE_THRESHOLD_DB  # the report's "threshold per series" reads the same split
    _scatter_panel(thr_ax, true[~none], pred[~none], "threshold", "dB nHL", counted)
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, int(none.sum()))
    nr_ax.scatter(jitter, pred[none], s=6, alpha=0.6, lw=0, color="tab:red")
    nr_ax.set_xlim(-1, 1)
    nr_ax.set_xticks([0], ["true: no\nresponse"])
    nr_ax.tick_params(axis="y", labelleft=False)
    nr_ax.set_title(f"predicted for\n{int(none.sum())} {counted}\nwith no response", fontsize=7)
    if not none.any():
        nr_ax.text(0, 0.5, "none in\nthis split", ha="center", va="center", fontsize=7, color="0.4",
                   transform=nr_ax.get_xaxis_transform())
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
    fig, axes = plt.subplots(n, 1, figsize=(PAGE_WIDTH_IN / 2 + 0.6, 1.55 * n + 0.4), squeeze=False, sharex=True)
    for ax, (k, ex) in zip(axes[:, 0], sorted(examples.items()), strict=False):
        t_ms = np.arange(len(ex["real"])) / SAMPLE_RATE_HZ * 1000
        if "noisy" in ex:
            ax.plot(t_ms, ex["noisy"], color="0.75", lw=0.6, label="noisy input")
        ax.plot(t_ms, ex["real"], color="k", lw=1.1, label="recorded")
        if "denoised" in ex:
            ax.plot(t_ms, ex["denoised"], color="tab:blue", lw=0.9, label="denoised")
        for i, g in enumerate(ex.get("generated", [])):
            ax.plot(t_ms, g, color="tab:orange", lw=0.7, alpha=0.7, label="generated" if i == 0 else None)
        n_gen = len(ex.get("generated", []))
        noise = f"; noisy input at diffusion SNR {ex['snr_db']:g} dB" if "snr_db" in ex else ""
        ax.set_title(f"{class_names[k]}: {format_condition(ex['static'])}\nn = 1 recorded"
                     + (f", {n_gen} generated" if n_gen else "") + noise, loc="left")
        ax.set_ylabel(f"amplitude ({units})")
    axes[-1, 0].set_xlabel("time (ms)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(labels), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# one intensity series, as an audiologist reads it


EARLY_WAVE_NAMES = EXTRA_WAVES  # waves I, III
EARLY_WAVE_STYLE = (("v", "tab:green"), ("v", "tab:orange"))  # marker, colour of waves I and III
WATERFALL_DPI = 150  # drawn per series, many per run: a fixed layout (no tight bbox) keeps each under 0.1 s


@dataclass(frozen=True)
class TraceMark:
    """Marks a waterfall draws beside its own (:meth:`Waterfall.draw`'s ``marks``): one latency (ms) per
    trace, in the caller's order of the traces, NaN where that trace has none; drawn on the trace, or
    ``above`` it as the network's wave marks are."""

    label: str
    latency: np.ndarray  # (n,)
    marker: str = "o"
    color: str = "k"
    filled: bool = True
    size: float = 4.0
    above: bool = False


TITLE_CHARS, NOTE_CHARS = 58, 66  # characters per line at 8 and 7 pt across a half-page waterfall


def _wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width`` characters (breaking on spaces)."""
    import textwrap

    return "\n".join(w for line in text.split("\n") for w in (textwrap.wrap(line, width) or [""]))


def _on_trace(lat: np.ndarray, x: np.ndarray, offsets: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
    """(n,) the height of each trace of x (n L), drawn at ``offsets``, at its latency ``lat`` (n,) ms."""
    return np.array([np.interp(lat[i], t_ms, x[i]) for i in range(len(x))]) + offsets


def _boundary(level_db: float, levels: np.ndarray, offsets: np.ndarray, gap: float) -> float:
    """The height between the traces at ``level_db`` and above and those below it, on a waterfall whose
    traces at ``levels`` (descending) sit at ``offsets`` (descending, ``gap`` apart)."""
    above, below = offsets[levels >= level_db], offsets[levels < level_db]
    if not len(above):
        return float(offsets[0] + gap / 2)
    if not len(below):
        return float(offsets[-1] - gap / 2)
    return float(above.min() + below.max()) / 2


class Waterfall:
    """Waterfall figures of one intensity series each, drawn one after another on one reused figure
    (making a figure, its axes and its texts costs as much as drawing it, and a prediction draws one per
    series). ``Waterfall().draw(...)`` writes one PNG; :func:`plot_waterfall` is the one-off form.

    What a figure shows (the way an audiologist reads a series): traces (n L) in µV stacked loudest on
    top, each on its own baseline and labelled with its level, time in ms, a µV scale bar;

    - wave V: ▼ at the predicted latency where its probability is >= DETECTION_P, filled at and above the
      series threshold, open below it (the recording's own detector fired where the series answer
      hears no response);
    - the threshold (dB): a dashed line under the quietest trace at or above it, its 10-90 % ``interval``
      shaded over the traces inside it; ``no_response_db`` and above: "no response", no line;
    - ``title``: patient, series and the predicted type (lines joined by newlines);
    - ``marks``: other readers' marks (:class:`TraceMark`), each with its legend entry; ``peak_prob=None``
      draws no wave V; ``note``: lines of text under the legend (e.g. the agreement of the marks);
      ``gap``: the trace spacing in µV (default: 0.9 times the median peak-to-peak, as on a print-out).
    """

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure

        with plt.rc_context(PAPER_RC):  # sizes and spines are fixed when the artists are made
            self.fig = Figure(figsize=(PAGE_WIDTH_IN / 2, 4.0))  # not pyplot's: nothing global to close
            FigureCanvasAgg(self.fig)
            ax = self.ax = self.fig.add_axes((0.2, 0.1, 0.76, 0.8))
            self.traces = ax.add_collection(LineCollection([], colors="k", linewidths=0.8))
            (self.filled,) = ax.plot([], [], "v", color="tab:red", ms=4, ls="none")
            (self.hollow,) = ax.plot([], [], "v", mfc="none", mec="tab:red", ms=4, ls="none")
            self.early = [ax.plot([], [], marker, color=color, ms=3.5, ls="none")[0]
                          for marker, color in EARLY_WAVE_STYLE]  # waves I, III
            self.threshold = ax.axhline(0.0, color="tab:blue", ls="--", lw=1.0)
            (self.bar,) = ax.plot([], [], color="k", lw=1.5)
            self.bar_text = ax.text(0.4, 0.0, "", va="center", fontsize=7)
            self.title = self.fig.text(0.02, 0.98, "", va="top", ha="left", fontsize=8)
            ax.set_yticks([])  # the levels are labels, not a scale: texts cost a third of tick objects
            ax.set_xlabel("time (ms)")
            self.note = self.fig.text(0.02, 0.0, "", va="bottom", ha="left", fontsize=7)
        self.labels: list[Any] = []  # level texts, grown as needed
        self.band = self.legend = None
        self.marks: list[Any] = []  # the lines of the last draw's TraceMarks

    def draw(self, signal: np.ndarray, intensity: np.ndarray, peak_prob: np.ndarray | None,
             latency: np.ndarray | None, threshold_db: float, path: Path, *, title: str,
             interval: tuple[float, float] | None = None, no_response_db: float = NO_RESPONSE_THRESHOLD_DB,
             units: str = "dB", early_waves: tuple[np.ndarray, np.ndarray] | None = None,
             marks: Sequence[TraceMark] = (), note: str = "", gap: float | None = None,
             wave_label: str = f"wave V (p ≥ {DETECTION_P:g})") -> Path:
        """``early_waves``: (probability, latency ms) of waves I and III, (n 2) each, from the wave map
        head; each is marked where its probability is >= DETECTION_P. ``wave_label``: wave V's legend entry
        (what its marks are: the recording's own detections, or the waves read down the waterfall)."""
        order = np.argsort(-np.asarray(intensity, dtype=float), kind="stable")  # loudest first (top)
        x = np.asarray(signal, dtype=float)[order]
        x = x - np.median(x, axis=1, keepdims=True)  # (n L) each trace on its own baseline
        levels, n, L = np.asarray(intensity, float)[order], *x.shape
        prob = np.zeros(n) if peak_prob is None else np.asarray(peak_prob)[order]
        lat = np.full(n, np.nan) if latency is None else np.asarray(latency, float)[order]
        if gap is None:
            gap = max(float(np.median(np.ptp(x, axis=1))) * 0.9, 1e-6)  # traces may touch, as on a print-out
        offsets = -gap * np.arange(n)  # (n,) the top trace at 0
        t_ms = np.arange(L) / SAMPLE_RATE_HZ * 1000
        fig, ax = self.fig, self.ax
        self.traces.set_segments([np.column_stack([t_ms, x[i] + offsets[i]]) for i in range(n)])
        mark = (prob >= DETECTION_P) & (lat >= 0) & (lat <= t_ms[-1])
        y = _on_trace(lat, x, offsets, t_ms) + 0.15 * gap  # (n,)
        counted = mark & (levels >= threshold_db)
        self.filled.set_data(lat[counted], y[counted])
        self.hollow.set_data(lat[mark & ~counted], y[mark & ~counted])
        self._level_labels(offsets, levels)
        ax.set_ylabel(f"stimulus level ({units})", labelpad=22)
        ax.set_xlim(0, t_ms[-1])
        drawn = x + offsets[:, None]  # (n L) a trace taller than the spacing (a loud one) is not cut off
        ax.set_ylim(min(offsets[-1] - 1.3 * gap, drawn.min() - 0.1 * gap),
                    max(offsets[0] + 1.3 * gap, drawn.max() + 0.3 * gap))
        handles = self._early_marks(early_waves, order, x, offsets, gap, t_ms)  # waves I, III first, as on the trace
        if peak_prob is not None:
            handles.append(Line2D([], [], marker="v", color="tab:red", ls="none", ms=4, label=wave_label))
        handles += self._trace_marks(marks, order, x, offsets, gap, t_ms)
        if (mark & ~counted).any():
            handles.append(Line2D([], [], marker="v", mfc="none", mec="tab:red", ls="none", ms=4,
                                  label="below threshold, alone"))
        handles += self._threshold_line(threshold_db, interval, no_response_db, levels, offsets, gap)
        bar, y0 = _scale_bar(gap), offsets[-1] - 1.15 * gap
        self.bar.set_data([0.25, 0.25], [y0, y0 + bar])
        self.bar_text.set_position((0.4, y0 + bar / 2))
        self.bar_text.set_text(f"{bar:g} µV")
        height, note_in = self._layout(title, note, n, rows=math.ceil(len(handles) / 2))
        if self.legend is not None:
            self.legend.remove()
        self.legend = fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.55, note_in / height), ncol=2,
                                 frameon=False, fontsize=7, handletextpad=0.3, columnspacing=1.0)
        path.parent.mkdir(parents=True, exist_ok=True)
        with plt.rc_context({"savefig.bbox": "standard"}):  # the layout is fixed: one draw, not two
            fig.savefig(path, dpi=WATERFALL_DPI, pil_kwargs={"compress_level": 1})
        return path

    def _threshold_line(self, threshold_db: float, interval: tuple[float, float] | None, no_response_db: float,
                        levels: np.ndarray, offsets: np.ndarray, gap: float) -> list[Any]:
        """The dashed threshold line and its 10-90 % band (none at ``no_response_db`` and above): their handles."""
        handles: list[Any] = []
        responding = threshold_db < no_response_db
        self.threshold.set_visible(responding)
        if self.band is not None:
            self.band.remove()
            self.band = None
        if responding:
            level_y = _boundary(threshold_db, levels, offsets, gap)
            self.threshold.set_ydata([level_y, level_y])
            handles.append(Line2D([], [], color="tab:blue", ls="--", lw=1.0, label="threshold"))
            if interval is not None:
                low, high = interval
                inside = offsets[(levels >= low) & (levels <= high)]
                lo = _boundary(low, levels, offsets, gap)
                hi = float(inside.max() + gap / 2) if len(inside) else _boundary(high, levels, offsets, gap)
                self.band = self.ax.axhspan(min(lo, hi), max(lo, hi), color="tab:blue", alpha=0.10, lw=0)
                handles.append(plt.Rectangle((0, 0), 1, 1, color="tab:blue", alpha=0.15, lw=0, label="10-90 %"))
        return handles

    def _layout(self, title: str, note: str, n: int, rows: int) -> tuple[float, float]:
        """Size the figure for n traces, the title, ``rows`` legend rows and the note: (height, note) in inches.
        Title and note lines are wrapped to the half-page width (a long input-check verdict was cut off)."""
        title, note = _wrap(title, TITLE_CHARS), _wrap(note, NOTE_CHARS)
        n_title = title.count("\n") + 1
        height = min(max(1.3 + 0.13 * n_title + 0.3 * n, 3.6), 10.0)  # inches: ~0.3 per trace, room for the labels
        note_in = 0.14 * (note.count("\n") + 1) + 0.05 if note else 0.0
        legend_in = 0.14 * max(rows - 2, 0)  # two rows fit under the axis label; each further row needs room
        height += note_in + legend_in
        top, bottom = 0.25 + 0.14 * n_title, 0.85 + note_in + legend_in  # inches: title; axis label, legend, note
        self.fig.set_size_inches(PAGE_WIDTH_IN / 2, height)
        self.note.set_position((0.02, 0.08 / height))
        self.note.set_text(note)
        self.ax.set_position((0.2, bottom / height, 0.76, 1 - (top + bottom) / height))
        self.title.set_position((0.02, 1 - 0.1 / height))
        self.title.set_text(title)
        return height, note_in

    def _early_marks(self, early: tuple[np.ndarray, np.ndarray] | None, order: np.ndarray, x: np.ndarray,
                     offsets: np.ndarray, gap: float, t_ms: np.ndarray) -> list[Any]:
        """Mark waves I and III on the traces (x already in drawing order); their legend handles."""
        handles = []
        for k, (line, (marker, color)) in enumerate(zip(self.early, EARLY_WAVE_STYLE, strict=True)):
            if early is None:
                line.set_data([], [])
                continue
            prob, lat = np.asarray(early[0])[order, k], np.asarray(early[1], float)[order, k]
            mark = (prob >= DETECTION_P) & (lat >= 0) & (lat <= t_ms[-1])
            y = _on_trace(lat, x, offsets, t_ms) + 0.15 * gap
            line.set_data(lat[mark], y[mark])
            handles.append(Line2D([], [], marker=marker, color=color, ls="none", ms=3.5,
                                  label=f"wave {EARLY_WAVE_NAMES[k]}"))
        return handles

    def _trace_marks(self, marks: Sequence[TraceMark], order: np.ndarray, x: np.ndarray, offsets: np.ndarray,
                     gap: float, t_ms: np.ndarray) -> list[Any]:
        """Draw ``marks`` (replacing the last draw's) on the traces (x already in drawing order); their handles."""
        for line in self.marks:
            line.remove()
        self.marks, handles = [], []
        for m in marks:
            lat = np.asarray(m.latency, float)[order]
            shown = np.isfinite(lat) & (lat >= 0) & (lat <= t_ms[-1])
            y = _on_trace(np.where(shown, lat, 0.0), x, offsets, t_ms) + (0.15 * gap if m.above else 0.0)
            style = {"marker": m.marker, "ms": m.size, "ls": "none", "mec": m.color,
                     "mfc": m.color if m.filled else "none", "mew": 1.0}
            self.marks.append(self.ax.plot(lat[shown], y[shown], **style)[0])
            handles.append(Line2D([], [], label=m.label, **style))
        return handles

    def _level_labels(self, offsets: np.ndarray, levels: np.ndarray) -> None:
        while len(self.labels) < len(offsets):
            self.labels.append(self.ax.text(-0.02, 0.0, "", transform=self.ax.get_yaxis_transform(), ha="right",
                                            va="center", fontsize=7))
        for i, label in enumerate(self.labels):
            label.set_visible(i < len(offsets))
            if i < len(offsets):
                label.set_position((-0.02, offsets[i]))
                label.set_text(f"{levels[i]:g}")


def plot_waterfall(signal: np.ndarray, intensity: np.ndarray, peak_prob: np.ndarray, latency: np.ndarray,
                   threshold_db: float, path: Path, **kwargs: Any) -> Path:
    """One waterfall figure (see :class:`Waterfall`; its ``draw`` takes the same arguments)."""
    return Waterfall().draw(signal, intensity, peak_prob, latency, threshold_db, path, **kwargs)


def _scale_bar(gap: float) -> float:
    """A round µV value near half the trace spacing (1, 2 or 5 times a power of ten)."""
    target = gap / 2
    power = 10 ** math.floor(math.log10(target))
    return max((m * power for m in (1, 2, 5) if m * power <= target), default=power)
