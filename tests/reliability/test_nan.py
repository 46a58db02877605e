"""NaN injected into one component at chosen steps (a test-only wrapper around
``Objective.forward``): the configured policy holds and no checkpoint ever holds NaN."""

from __future__ import annotations

import logging
import math

import pytest
import torch

import training.callbacks.checkpoint as checkpoint_callbacks
from tests.reliability.procs import TINY_MODEL
from tests.runs import tiny_config
from train import prepare_run_dir
from training.balancers.config import STRATEGIES
from training.checkpoint import load_checkpoint
from training.components import COMPONENTS
from training.objective import Objective, ObjectiveOutput
from training.setup import build_trainer, setup_logging, write_run_files
from training.trainer import Trainer, TrainingError


def inject_nan(monkeypatch, component: str, steps: set[int]) -> None:
    """Training losses of ``component`` become NaN (gradients too) at optimizer steps ``steps``."""
    real = Objective.forward
    optimizer_steps = {"done": 0}  # counted here: the objective does not know the trainer's step

    def forward(self, net, batch, generator, *, train, **kw):  # kw: shard (DDP) and whatever comes next
        out = real(self, net, batch, generator, train=train, **kw)
        if train:
            optimizer_steps["done"] += 1  # one micro-batch per step in these runs (grad_accum_steps = 1)
            if optimizer_steps["done"] in steps:
                out = ObjectiveOutput({**out.losses, component: out.losses[component] * float("nan")}, out.features)
        return out

    monkeypatch.setattr(Objective, "forward", forward)


def non_finite(tree, where: str = "") -> list[str]:
    """Paths of the floating tensors/values in a nested state that hold NaN or Inf (an all-NaN
    ``L0`` is the "no loss observed yet" sentinel of GradNorm/DWA, e.g. DWA with normalize=none)."""
    if isinstance(tree, torch.Tensor):
        if where.endswith(".L0") and torch.isnan(tree).all():
            return []
        return [where] if tree.is_floating_point() and not torch.isfinite(tree).all() else []
    if isinstance(tree, float):
        return [] if math.isfinite(tree) else [where]
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in non_finite(v, f"{where}.{k}")]
    if isinstance(tree, (list, tuple)):
        return [p for i, v in enumerate(tree) for p in non_finite(v, f"{where}[{i}]")]
    return []


def weights_of(state: dict) -> dict:
    """What a resumed run computes with (callback state may hold -inf sentinels, e.g. running maxima)."""
    return {k: state[k] for k in ("model", "ema", "optimizer", "meta_loss")}


def watch_checkpoints(monkeypatch) -> list[tuple[int, list[str]]]:
    """(step, non-finite weight paths) of every checkpoint written."""
    seen: list[tuple[int, list[str]]] = []
    real = checkpoint_callbacks.save_checkpoint

    def save(state, path):
        seen.append((state["step"], non_finite(weights_of(state))))
        real(state, path)

    monkeypatch.setattr(checkpoint_callbacks, "save_checkpoint", save)
    return seen


def fit(tmp_path, *overrides: str) -> Trainer:
    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path, *TINY_MODEL, "training.epochs=1", "logging.use_tensorboard=false",
                      "training.checkpoint_every_steps=1", *overrides)
    run_dir = tmp_path / "exp"
    prepare_run_dir(run_dir, overwrite=True)
    setup_logging(run_dir)
    logging.getLogger("abr").propagate = True  # caplog sees the run's warnings
    trainer = build_trainer(cfg, run_dir)
    write_run_files(trainer)
    trainer.fit()
    return trainer


def test_skip_policy_skips_warns_and_counts(tmp_path, monkeypatch, caplog):
    component, strategy = "class", "famo"  # per-step balancer state a NaN step could poison
    inject_nan(monkeypatch, component, {3, 7})
    saved = watch_checkpoints(monkeypatch)
    trainer = fit(tmp_path, f"loss.balancer.strategy={strategy}")
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("WARNING non-finite loss")]
    assert warnings == [
        f"WARNING non-finite loss at step 3 in components ['{component}']: step skipped (1 in a row, 1 in total)",
        f"WARNING non-finite loss at step 7 in components ['{component}']: step skipped (1 in a row, 2 in total)",
    ]
    assert trainer.skipped_steps == 2 and trainer.step == trainer.steps_per_epoch
    assert saved and all(bad == [] for _, bad in saved), saved
    last = load_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt")
    assert last["skipped_steps"] == 2 and non_finite(weights_of(last)) == []
    assert all(math.isfinite(v) for v in trainer.last_val.values())  # training went on, not poisoned


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("component", COMPONENTS)
def test_skip_policy_every_component_and_strategy(tmp_path, monkeypatch, component, strategy):
    inject_nan(monkeypatch, component, {3, 7})
    saved = watch_checkpoints(monkeypatch)
    trainer = fit(tmp_path, f"loss.balancer.strategy={strategy}")
    assert trainer.skipped_steps == 2
    assert all(bad == [] for _, bad in saved), saved
    assert all(math.isfinite(v) for v in trainer.last_val.values())


def test_stops_after_n_in_a_row_with_the_checkpoint_intact(tmp_path, monkeypatch):
    inject_nan(monkeypatch, "peak_latency", {4, 5, 6})
    saved = watch_checkpoints(monkeypatch)
    with pytest.raises(TrainingError) as info:
        fit(tmp_path, "training.max_consecutive_nan=3")
    assert str(info.value) == (
        "non-finite loss at step 6 in components ['peak_latency']; 3 non-finite step(s) in a row "
        "(training.nan_policy=skip, training.max_consecutive_nan=3); the last checkpoint is intact"
    )
    assert [step for step, _ in saved] == [1, 2, 3, 4, 5] and all(bad == [] for _, bad in saved)
    last = load_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt")
    assert last["step"] == 5 and non_finite(weights_of(last)) == []


def test_raise_policy_stops_at_the_first(tmp_path, monkeypatch):
    inject_nan(monkeypatch, "signal", {2})
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 in components \['signal'\]; 1 non-finite"):
        fit(tmp_path, "training.nan_policy=raise")
    assert load_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt")["step"] == 1
