"""Runs shared by the bench tests (each costs tens of seconds of training on a CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def series_run(tmp_path_factory) -> Path:
    """A tiny run as train.py leaves one: the series stage, and the input check and calibration
    (familiarity.json, calibration.json) that bench/counterfactual.py and bench/ood.py read. Shared by
    the session: tests write their outputs elsewhere and never into it."""
    from data.dataset import build_data
    from evaluation.trust import fit_trust
    from tests.runs import tiny_config, train_run
    from training.checkpoint import load_run
    from training.series import load_series
    from training.series_stage import run_series_stage

    root = tmp_path_factory.mktemp("series_run")
    cfg = tiny_config(root, "series.enabled=true", "series.epochs=2", "series.width=16", "series.heads=2")
    run = root / "run"
    train_run(cfg, run)
    bundle = build_data(cfg.data, cfg.loss.class_weights)
    run_series_stage(run, load_run(run).model, bundle, cfg)
    loaded = load_run(run)  # the best checkpoint, as evaluation.trust fits it
    fit_trust(run, loaded.model, loaded.diffusion, bundle, load_series(run))
    return run
