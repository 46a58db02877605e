"""Step metrics (window means, cadence, no per-step host sync, resume) and epoch summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.training.callbacks.fakes import healthy_losses, make_step_output
from training.callbacks.format import format_step_line
from training.callbacks.metrics import EpochSummaryCallback, StepMetricsCallback
from training.components import COMPONENTS


def _window_means(steps: range) -> dict[str, float]:
    rows = [healthy_losses(s) for s in steps]
    return {c: float(np.mean([r[c] for r in rows])) for c in COMPONENTS}


def test_one_line_every_log_frequency_steps_with_window_means(make_trainer):
    trainer = make_trainer([StepMetricsCallback()])
    trainer.steps(35, healthy_losses, grad_norm=lambda s: float(s))
    lines = trainer.of_kind("step")
    assert [r.step for r in lines] == [10, 20, 30]  # cadence; the 5 steps after 30 wait for step 40
    for r in lines:
        window = range(r.step - 9, r.step + 1)  # means over this window only, not running sums
        expected = _window_means(window)
        for c in COMPONENTS:
            assert r.scalars[f"train/{c}"] == pytest.approx(expected[c], rel=1e-6)
        total = float(np.mean([sum(healthy_losses(s).values()) for s in window]))
        assert r.scalars["train/total"] == pytest.approx(total, rel=1e-6)
        assert r.scalars["grad_norm/total"] == pytest.approx(np.mean(list(window)))
        assert r.data["max"]["grad_norm/total"] == r.step
        assert r.text == format_step_line(r.step, {"total": r.scalars["train/total"],
                                                   **{c: r.scalars[f"train/{c}"] for c in COMPONENTS}})
    assert len({r.text for r in lines}) == len(lines)  # no line repeats


def test_skipped_steps_are_counted_not_averaged(make_trainer):
    trainer = make_trainer([StepMetricsCallback()])
    nan = {c: math.nan for c in COMPONENTS}
    trainer.steps(10, lambda s: nan if s in (3, 7) else healthy_losses(s), skipped=lambda s: s in (3, 7))
    (r,) = trainer.of_kind("step")
    kept = [s for s in range(1, 11) if s not in (3, 7)]
    assert r.scalars["train/signal"] == pytest.approx(_window_means(kept)["signal"], rel=1e-6)
    assert (r.data["window_steps"], r.data["skipped_steps"]) == (8, 2)


def test_all_skipped_window_still_logs_a_line(make_trainer):
    trainer = make_trainer([StepMetricsCallback()])
    trainer.steps(10, lambda s: {c: math.nan for c in COMPONENTS}, skipped=True)
    (r,) = trainer.of_kind("step")
    assert "all 10 steps" in r.text and r.data["skipped_steps"] == 10


def test_no_host_sync_between_log_points(make_trainer, monkeypatch):
    trainer = make_trainer([StepMetricsCallback()])
    outs = [make_step_output(s, healthy_losses(s), head_grad_norms={}) for s in range(1, 10)]
    reads = []
    for name in ("item", "tolist", "__float__", "cpu", "numpy"):
        orig = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _o=orig, _n=name, **k: (reads.append(_n), _o(self, *a, **k))[1])
    for out in outs:  # steps 1..9: none is a log point
        trainer.step = out.step
        for cb in trainer.callbacks:
            cb.on_step_end(trainer, out)
    assert reads == []
    out = make_step_output(10, healthy_losses(10))
    trainer.callbacks[0].on_step_end(trainer, out)
    assert reads.count("tolist") == 1  # one read for the whole line


def test_head_norms_of_the_log_step_are_in_the_record(make_trainer):
    trainer = make_trainer([StepMetricsCallback()])
    # like the real trainer: per-head norms only at log steps
    trainer.steps(10, healthy_losses, head_grad_norms=lambda s: {"signal": 3.0, "peak": 4.0} if s == 10 else {})
    (r,) = trainer.of_kind("step")
    assert r.scalars["grad_norm/signal"] == 3.0 and r.scalars["grad_norm/peak"] == 4.0
    assert r.data["window_steps"] == 10  # keys changing at the log step did not reset the window


def test_state_dict_resumes_mid_window_identically(make_trainer, tmp_path):
    full = make_trainer([StepMetricsCallback()])
    full.steps(25, healthy_losses)
    first = make_trainer([StepMetricsCallback()])
    first.steps(14, healthy_losses)
    state = first.callbacks[0].state_dict()
    resumed = make_trainer([StepMetricsCallback()], step=14)
    resumed.callbacks[0].load_state_dict(state)
    resumed.steps(11, healthy_losses)
    assert [r.text for r in first.of_kind("step") + resumed.of_kind("step")] == [r.text for r in full.of_kind("step")]


def test_epoch_summary_record(make_trainer):
    trainer = make_trainer([EpochSummaryCallback()], max_epochs=200)
    trainer.step = 114
    summary = {"train/total": 138.0073, "train/signal": 1.0295, "val/total": 124.2066, "val/signal": 0.9266,
               "lr": 1e-4}
    trainer.end_epoch(summary)
    (r,) = trainer.of_kind("epoch")
    assert (r.step, r.epoch) == (114, 1)
    assert r.text.split("\n") == ["Epoch 1/200 Summary:", "  Train - Total: 138.0073, Signal: 1.0295",
                                  "  Val   - Total: 124.2066, Signal: 0.9266", "  LR: 1.00e-04"]
    assert r.scalars == {"train_epoch/total": 138.0073, "train_epoch/signal": 1.0295, "val/total": 124.2066,
                         "val/signal": 0.9266, "lr": 1e-4}
