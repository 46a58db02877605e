"""W&B without a login or without a network: one warning, the run is kept offline, training
completes, and nothing waits longer than ``logging.wandb.init_timeout``."""

from __future__ import annotations

import time

import pytest
import wandb

from tests.reliability.procs import in_process_args, train_in_process
from tests.training.callbacks.fakes import read_wandb_offline


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no saved login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.mark.parametrize("network", ["no login", "no network"])
def test_online_without_login_or_network_falls_back_to_offline(tmp_path, monkeypatch, capsys, no_wandb_login,
                                                                network):
    if network == "no network":  # a key, but the server cannot be reached (nothing listens on port 9)
        monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    t0 = time.monotonic()
    rc = train_in_process(in_process_args(tmp_path, "exp", "training.epochs=1", "logging.use_wandb=true",
                                          "logging.wandb.mode=online", "logging.wandb.init_timeout=3"))
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    warnings = [line for line in err.splitlines() if "W&B" in line]
    assert len(warnings) == 1 and "W&B online init failed" in warnings[0], warnings
    assert f"logging offline to {tmp_path / 'exp'}/wandb instead" in warnings[0]
    wandb.teardown()  # the service writes the run file asynchronously
    (run_file,) = (tmp_path / "exp" / "wandb").glob("offline-run-*/run-*.wandb")
    kinds = [r.WhichOneof("record_type") for r in read_wandb_offline(run_file)]
    assert "history" in kinds and "exit" in kinds
    assert elapsed < 60  # the init timeout bounds the wait (3 s here), not a network stack's retries
