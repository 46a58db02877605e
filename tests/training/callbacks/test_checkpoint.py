"""EarlyStoppingCallback: each `training.early_stopping` key decides when a run stops (issue 18).

The stop path through a real trainer is in tests/training/test_trainer_options.py; here the rule
itself, on a fake trainer fed validation summaries.
"""

from __future__ import annotations

import pytest

from training.callbacks.checkpoint import EarlyStoppingCallback


def stops_after(make_trainer, cfg, values, metric="val/total", other=None, **es) -> int | None:
    """Feed validations whose ``metric`` takes ``values``; the 1-based validation that stopped, or None."""
    cfg.training.early_stopping.enabled = True
    for k, v in es.items():
        setattr(cfg.training.early_stopping, k, v)
    trainer = make_trainer([EarlyStoppingCallback()])
    trainer.should_stop = False
    for i, v in enumerate(values, 1):
        trainer.validate({"val/total": v, "val/signal": (other or values)[i - 1], metric: v})
        if trainer.should_stop:
            return i
    return None


def test_enabled_false_never_stops(make_trainer, cfg):
    worsening = [1.0, 2.0, 3.0, 4.0]
    assert stops_after(make_trainer, cfg, worsening, patience=1) == 2
    cfg.training.early_stopping.enabled = False
    trainer = make_trainer([EarlyStoppingCallback()])
    trainer.should_stop = False
    for v in worsening:
        trainer.validate({"val/total": v})
    assert trainer.should_stop is False


def test_patience_counts_validations_without_improvement(make_trainer, cfg):
    values = [1.0, 2.0, 2.0, 2.0, 2.0]
    assert stops_after(make_trainer, cfg, values, patience=2) == 3
    assert stops_after(make_trainer, cfg, values, patience=4) == 5


def test_mode_says_which_way_is_better(make_trainer, cfg):
    falling = [3.0, 2.0, 1.0, 0.5]
    assert stops_after(make_trainer, cfg, falling, patience=2, mode="min") is None
    assert stops_after(make_trainer, cfg, falling, patience=2, mode="max") == 3


def test_min_delta_is_the_smallest_improvement_that_counts(make_trainer, cfg):
    creeping = [1.0, 0.95, 0.9, 0.85]
    assert stops_after(make_trainer, cfg, creeping, patience=2, min_delta=0.0) is None
    assert stops_after(make_trainer, cfg, creeping, patience=2, min_delta=0.1) == 3


def test_metric_is_the_one_watched(make_trainer, cfg):
    total = [1.0, 2.0, 3.0, 4.0]  # val/total worsens while val/signal improves
    signal = [4.0, 3.0, 2.0, 1.0]
    assert stops_after(make_trainer, cfg, total, other=signal, patience=2) == 3
    cfg.training.early_stopping.metric = "val/signal"
    trainer = make_trainer([EarlyStoppingCallback()])
    trainer.should_stop = False
    for t, s in zip(total, signal, strict=True):
        trainer.validate({"val/total": t, "val/signal": s})
    assert trainer.should_stop is False


def test_a_metric_the_validation_lacks_is_named(make_trainer, cfg):
    cfg.training.early_stopping.enabled, cfg.training.early_stopping.metric = True, "val/patient/type/macro_f1"
    trainer = make_trainer([EarlyStoppingCallback()])
    with pytest.raises(ValueError, match=r"^config key 'training.early_stopping.metric': expected one of "
                                         r"\['val/total'\], found 'val/patient/type/macro_f1'$"):
        trainer.validate({"val/total": 1.0})
