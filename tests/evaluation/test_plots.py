"""The evaluation figures, read back from what they draw: units on the axes, n and metrics on each
panel, one point per patient for the threshold with "no response" apart, one legend, conditions
named with the age as a clinician writes it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from data.records import CLASS_NAMES
from evaluation import plots
from evaluation.runlog import read_run


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save (closed figures keep their artists)."""
    figures = []
    real_save = plots._save

    def keep(fig, path):
        figures.append(fig)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def with_patients(col, per: int = 5, no_response: int = 3):
    """``col`` with ``per`` recordings per patient sharing one true threshold; the first patients
    have no response (105 dB)."""
    n = len(col.label)
    pid = np.arange(n) // per
    thr = np.round(col.threshold_true[pid * per] / 5) * 5
    thr[pid < no_response] = plots.NO_RESPONSE_THRESHOLD_DB
    return dataclasses.replace(col, patient_id=pid, threshold_true=thr)


def test_scatter_has_units_n_and_metrics_and_one_point_per_patient(fx, tmp_path, drawn):
    col = with_patients(fx.hand_collected(collapsed=False))
    path = plots.plot_scatter(col, tmp_path / "scatter.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    (fig,) = drawn
    lat, amp, thr, nr = fig.axes
    assert (lat.get_xlabel(), lat.get_ylabel()) == ("true wave V latency (ms)", "predicted wave V latency (ms)")
    assert amp.get_xlabel() == "true wave V amplitude (µV)" and thr.get_xlabel() == "true threshold (dB nHL)"
    assert all(ax.get_title() == "" for ax in (lat, amp, thr))  # units on axes, not in titles
    boxes = [" ".join(t.get_text() for t in ax.texts) for ax in (lat, amp, thr)]
    n_peak = int(col.peak_mask.sum())
    assert boxes[0].startswith(f"n = {n_peak} recordings\nr = ") and "MAE = " in boxes[0] and boxes[0].endswith(" ms")
    assert boxes[2].startswith("n = 17 patients\n")  # 20 patients, 3 without a response
    (points,) = thr.collections
    assert len(points.get_offsets()) == 17  # one per patient, not one per recording
    assert plots.NO_RESPONSE_THRESHOLD_DB not in points.get_offsets()[:, 0]  # 105 dB is not a point on the axis
    (strip,) = nr.collections
    assert len(strip.get_offsets()) == 3 and nr.get_xticklabels()[0].get_text() == "true: no\nresponse"
    assert nr.get_title() == "predicted for\n3 patients\nwith no response"  # the strip says what it holds


def test_scatter_threshold_mae_is_the_reports(fx, stats, tmp_path, drawn):
    """The threshold panel's MAE (per patient) used to appear nowhere in report.md (issue 29)."""
    from evaluation.report import compute_metrics, write_report

    col = with_patients(fx.hand_collected(collapsed=False))
    col = dataclasses.replace(col, threshold_pred=col.threshold_pred + 3.0)
    plots.plot_scatter(col, tmp_path / "scatter.png")
    panel_mae = drawn[0].axes[2].texts[0].get_text().split("MAE = ")[1].split(" ")[0]
    m = compute_metrics(col, {"label": np.arange(100) % 5, "peak_mask": np.ones(100, bool)}, stats, CLASS_NAMES,
                        n_boot=10)
    report = write_report(m, tmp_path, figures=[str(tmp_path / "scatter.png")]).read_text(encoding="utf-8")
    assert f"Threshold per patients (the median of each one's recordings, as the scatter's threshold panel shows " \
           f"it): MAE {panel_mae} dB" in report
    assert "its right strip holds the predictions for the 3 patients with no response" in report


def test_threshold_is_per_series_when_a_patient_has_two(fx, tmp_path, drawn):
    col = with_patients(fx.hand_collected(collapsed=False), per=10, no_response=0)  # 10 patients
    col = dataclasses.replace(col, series_id=np.arange(100) % 2)  # two ears each
    plots.plot_scatter(col, tmp_path / "scatter.png")
    assert drawn[0].axes[2].texts[0].get_text().startswith("n = 20 series\n")
    assert len(drawn[0].axes[2].collections[0].get_offsets()) == 20


def test_scatter_without_patient_ids_says_recordings(fx, tmp_path, drawn):
    plots.plot_scatter(fx.hand_collected(collapsed=False), tmp_path / "scatter.png")
    assert drawn[0].axes[2].texts[0].get_text().startswith("n = 100 recordings")


def test_loss_curves_have_y_labels_and_one_legend(fx, tmp_path, drawn):
    runs = [read_run(fx.write_fake_run(tmp_path / name)) for name in ("A", "B")]
    plots.plot_loss_curves(runs, tmp_path / "curves.png")
    (fig,) = drawn
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_legend() for ax in visible] == [None] * 7 and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["train (window mean)", "validation", "A", "B"]
    assert [visible[i].get_ylabel() for i in (0, 4)] == ["loss (log scale)"] * 2
    assert all(ax.get_xlabel() == "optimizer step" for ax in visible[3:])


@pytest.mark.parametrize(("age", "text"), [(0.0, "age < 1 y"), (0.25, "age 3 mo"), (34.0, "age 34 y")])
def test_waveform_panels_name_the_condition(fx, tmp_path, drawn, age, text):
    signal = fx.bump(7.0)[0]
    examples = {k: {"real": signal, "static": np.array([age, 70.0, 21.1, 300.0]), "denoised": signal,
                    "generated": [signal]} for k in range(2)}
    plots.plot_waveforms(examples, CLASS_NAMES, "z-score", tmp_path / "w.png")
    (fig,) = drawn
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[0] == f"NORMAL: 70 dB nHL, 21.1/s, {text}, FMP 300\nn = 1 recorded, 1 generated" \
        and "0.0 y" not in " ".join(titles)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1  # no legend over a trace
    assert fig.axes[0].get_ylabel() == "amplitude (z-score)"


def test_waterfall_reads_like_a_clinical_series(tmp_path):
    """Loudest trace on top, wave V marked at its latency (filled at and above the threshold, open below),
    the threshold line between the threshold's traces and the ones below, the interval shaded."""
    levels = np.array([20.0, 80.0, 40.0, 60.0])  # any order in, loudest on top out
    t_ms = np.arange(200) / 20.0
    signal = np.stack([np.exp(-0.5 * ((t_ms - 6.0) / 0.3) ** 2) * lv / 80 for lv in levels])  # (4 200) µV
    prob = np.array([0.9, 0.9, 0.2, 0.9])  # 20 dB detected (below the threshold), 40 dB not
    latency = np.array([6.5, 6.0, 6.2, 6.1])
    w = plots.Waterfall()
    path = w.draw(signal, levels, prob, latency, 60.0, tmp_path / "w.png", title="patient 3\nNORMAL",
                  interval=(55.0, 70.0))
    assert path.is_file()
    heights = [seg[:, 1].mean() for seg in w.traces.get_segments()]
    assert heights == sorted(heights, reverse=True)  # first trace on top
    assert [t.get_text() for t in w.labels] == ["80", "60", "40", "20"]
    ptp = [np.ptp(seg[:, 1]) for seg in w.traces.get_segments()]
    assert ptp == sorted(ptp, reverse=True)  # the 80 dB trace is the one on top
    assert list(w.filled.get_xdata()) == [6.0, 6.1] and list(w.hollow.get_xdata()) == [6.5]
    offsets = [float(t.get_position()[1]) for t in w.labels]  # the 80, 60, 40 and 20 dB traces
    assert w.threshold.get_visible() and offsets[2] < w.threshold.get_ydata()[0] < offsets[1]  # under 60, above 40
    band = w.band.get_window_extent()  # over the 60 dB trace (inside 55-70), not the 80 or 40 dB ones
    to_px = w.ax.transData.transform
    assert band.y0 < to_px((0, offsets[1]))[1] < band.y1 and not band.y0 < to_px((0, offsets[0]))[1] < band.y1
    assert w.title.get_text() == "patient 3\nNORMAL"
    # the same figure draws the next series: a total loss, three levels, no threshold
    w.draw(signal[:3], np.array([90.0, 100.0, 80.0]), np.full(3, 0.7), np.full(3, 7.0), 105.0, tmp_path / "x.png",
           title="patient 4\nTOTAL")
    assert [t.get_text() for t in w.labels if t.get_visible()] == ["100", "90", "80"]
    assert not w.threshold.get_visible() and w.band is None
    assert len(w.filled.get_xdata()) == 0 and len(w.hollow.get_xdata()) == 3  # all below "no response": open
    assert (tmp_path / "x.png").is_file()



def test_waterfall_draws_other_readers_marks_and_a_note(tmp_path):
    """TraceMarks: one latency per trace in the caller's order (NaN: none), on the trace or above it; no wave V
    where peak_prob is None; the note under the legend; the next draw replaces the marks."""
    levels = np.array([20.0, 80.0])
    t_ms = np.arange(200) / 20.0
    signal = np.stack([np.exp(-0.5 * ((t_ms - 2.0) / 0.3) ** 2) * lv / 80 for lv in levels])  # (2 200) µV
    w = plots.Waterfall()
    marks = [plots.TraceMark("P1, A", np.array([np.nan, 2.0]), "o", "tab:blue", filled=False),
             plots.TraceMark("wave I", np.array([2.1, 1.9]), "v", "tab:green", above=True)]
    w.draw(signal, levels, None, None, float("inf"), tmp_path / "m.png", title="CAP", units="dB SPL", marks=marks,
           note="A vs B: 3/3", gap=2.0)
    a, net = w.marks
    assert list(a.get_xdata()) == [2.0] and a.get_ydata()[0] == pytest.approx(1.0)  # the 80 dB trace, on top, peak 1
    assert list(net.get_xdata()) == [1.9, 2.1]  # drawing order: loudest first
    peak = 0.25 * np.exp(-0.5 * (0.1 / 0.3) ** 2)  # the 20 dB trace at 2.1 ms
    assert net.get_ydata()[1] == pytest.approx(peak - 2.0 + 0.15 * 2.0, abs=1e-3)  # at -gap, 0.15 gap above
    labels = [t.get_text() for t in w.legend.get_texts()]
    assert labels == ["P1, A", "wave I"]  # no wave V entry
    assert len(w.filled.get_xdata()) == 0 and w.note.get_text() == "A vs B: 3/3"
    assert w.ax.get_ylabel() == "stimulus level (dB SPL)" and (tmp_path / "m.png").is_file()
    w.draw(signal, levels, np.full(2, 0.9), np.full(2, 2.0), 105.0, tmp_path / "n.png", title="next")
    assert w.marks == [] and w.note.get_text() == "" and len(w.ax.lines) == len(w.early) + 4

def test_waterfall_wraps_a_long_title_and_note_inside_the_figure(tmp_path):
    """The input check's verdict line and its reason are longer than a half-page figure is wide: wrapped,
    every word kept, no line longer than the width allows."""
    levels, t_ms = np.array([20.0, 80.0]), np.arange(200) / 20.0
    signal = np.stack([np.exp(-0.5 * ((t_ms - 6.0) / 0.3) ** 2) * lv / 80 for lv in levels])
    title = "INPUT UNLIKE TRAINING DATA: answers below not to be trusted\npatient 0"
    note = "input check: unlike training data (the network's denoising error at noise 0.3 is 14.7x the median)"
    w = plots.Waterfall()
    w.draw(signal, levels, None, None, 105.0, tmp_path / "u.png", title=title, note=note)
    shown_title, shown_note = w.title.get_text(), w.note.get_text()
    assert shown_title.split() == title.split() and shown_note.split() == note.split()
    assert max(map(len, shown_title.split("\n"))) <= plots.TITLE_CHARS < len(title.split("\n")[0])
    assert max(map(len, shown_note.split("\n"))) <= plots.NOTE_CHARS < len(note)


def test_scale_bar_is_a_round_value():
    assert plots._scale_bar(0.3) == 0.1 and plots._scale_bar(0.05) == 0.02 and plots._scale_bar(2.5) == 1.0


def test_waveform_panels_show_n_and_the_noise_level(fx, tmp_path, drawn):
    signal = fx.bump(7.0)[0]
    examples = {0: {"real": signal, "static": np.array([0.5, 70.0, 21.1, 300.0]), "noisy": signal,
                    "denoised": signal, "snr_db": -5.0, "generated": [signal] * 3}}
    plots.plot_waveforms(examples, CLASS_NAMES, "µV", tmp_path / "w.png")
    assert drawn[0].axes[0].get_title(loc="left").endswith(
        "\nn = 1 recorded, 3 generated; noisy input at diffusion SNR -5 dB")


def test_weights_under_fixed_say_constant_instead_of_identical_lines(fx, tmp_path, drawn):
    plots.plot_weights(read_run(fx.write_fake_run(tmp_path / "fixed")), tmp_path / "weights.png")
    (ax,) = drawn[0].axes
    assert len(ax.lines) == 0  # six identical lines drew as one
    assert ax.texts[0].get_text().startswith("weights constant over the run:\nSignal = 1\nClass = 1")
    plots.plot_weights(read_run(fx.write_fake_run(tmp_path / "drift", weight_drift=0.1)), tmp_path / "w2.png")
    assert len(drawn[1].axes[0].lines) == 6


def test_report_says_why_validation_can_be_below_training(fx, stats, tmp_path):
    from evaluation.report import compute_metrics, write_report

    m = compute_metrics(fx.hand_collected(collapsed=False), {"label": np.arange(100) % 5,
                                                              "peak_mask": np.ones(100, bool)}, stats, CLASS_NAMES,
                        n_boot=10)
    report = write_report(m, tmp_path, figures=["loss_curves.png"]).read_text(encoding="utf-8")
    assert "- loss_curves: validation loss can sit below training loss: the training loss is taken with dropout" \
        in report
