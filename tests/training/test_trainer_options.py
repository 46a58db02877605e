"""The `training` options (and the other keys the trainer reads), each by its behaviour on a tiny run.

Issue 18: an option that nothing exercises is usually broken. Every test here would fail if the
trainer ignored its key (used the default instead). The runs are tiny (3 patients, one or a few
epochs of one to a few steps, CPU) and observe the trainer only through public hooks: callbacks, torch's
own module and optimizer hooks, ``metrics.jsonl`` and the trainer's attributes.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.runs import over, read_jsonl, tiny_config, train_run
from training.callbacks.base import Callback
from training.setup import build_trainer

SMALL = ["data.synthetic.patients=3", "training.epochs=1", "training.clinical_validation=false",
         "logging.use_tensorboard=false"]


def small(tmp_path, *extra: str):
    return tiny_config(tmp_path, *over(SMALL, *extra))  # a test's own value replaces SMALL's (no key twice)


class Steps(Callback):
    """Keeps every StepOutput."""

    def __init__(self) -> None:
        self.outs = []

    def on_step_end(self, trainer, out) -> None:
        self.outs.append(out)


def fit(cfg, tmp_path, *callbacks: Callback):
    trainer = build_trainer(cfg, tmp_path / "run", callbacks=list(callbacks))
    trainer.fit()
    return trainer


class Inputs:
    """What the network is called with in training mode: x, t, drop_cond and autocast, per call."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls: list[dict] = []
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if module.training:
            x, t = args[0], args[1]
            drop = kwargs.get("drop_cond", args[3] if len(args) > 3 else None)
            self.calls.append({"x": x.detach().clone(), "t": t.detach().clone(),
                               "drop": None if drop is None else drop.detach().clone(),
                               "autocast": torch.is_autocast_enabled("cpu")})


def clean_rows(call: dict, signals: torch.Tensor) -> torch.Tensor:
    """[rows] bool: the row is, exactly, one of the training split's clean signals."""
    x = call["x"].flatten(1)  # [n, L]
    return (x[:, None, :] == signals.flatten(1)[None]).all(-1).any(-1)


# --------------------------------------------------------------------------------------------
# what the network sees: loss.head_input, model.cond_drop_prob, training.batch_size, training.precision


def test_head_input_clean_shows_the_heads_the_recorded_signal(tmp_path):
    seen, heads = {}, {}
    for mode in ("clean", "noisy"):
        trainer = build_trainer(small(tmp_path, f"loss.head_input={mode}", "model.cond_drop_prob=0"), tmp_path / mode,
                                callbacks=[steps := Steps()])
        inputs = Inputs(trainer.model)
        trainer.fit()
        signals = trainer.data.train.tensors["signal"]
        seen[mode] = [(clean_rows(c, signals), c["t"]) for c in inputs.calls]
        heads[mode] = torch.stack([torch.stack([o.losses[k] for k in ("class", "peak_exist", "threshold")])
                                   for o in steps.outs])
    B = 16
    for rows, t in seen["clean"]:  # every training pass holds the B clean signals, at t = 0
        assert int(rows.sum()) == B and bool((t[rows] == 0).all())
    assert all(int(rows.sum()) == 0 for rows, _ in seen["noisy"])  # the heads read x_t only
    assert not torch.allclose(heads["clean"], heads["noisy"])  # and what they read changes their losses


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_cond_drop_prob_drops_the_condition_of_the_noisy_rows_in_training(tmp_path, p):
    trainer = build_trainer(small(tmp_path, f"model.cond_drop_prob={p}"), tmp_path / "run", callbacks=[])
    inputs = Inputs(trainer.model)
    trainer.fit()
    signals = trainer.data.train.tensors["signal"]
    for call in inputs.calls:
        noisy = ~clean_rows(call, signals)
        assert call["drop"] is not None and bool((call["drop"][noisy] == (p == 1.0)).all())
        assert not bool(call["drop"][~noisy].any())  # the clean rows keep their condition


@pytest.mark.parametrize(("p_type", "p_threshold"), [(1.0, 0.0), (0.0, 1.0)])
def test_label_conditioning_and_its_drop_probabilities_reach_the_network(tmp_path, p_type, p_threshold):
    """model.label_conditioning passes the batch's type and threshold to the noisy rows, each dropped to its
    null (-1, NaN) with model.type_drop_prob / model.threshold_drop_prob; the clean rows (the heads' t = 0
    pass) always get both nulls. Without the key the network is called without labels, as before."""
    calls = []

    def hook(module, args, kwargs):
        if module.training:
            calls.append((args[1].clone(), kwargs.get("label"), kwargs.get("threshold")))

    cfg = small(tmp_path, "model.label_conditioning=true", f"model.type_drop_prob={p_type}",
                f"model.threshold_drop_prob={p_threshold}", "model.cond_drop_prob=0")
    trainer = build_trainer(cfg, tmp_path / "run", callbacks=[])
    assert trainer.objective.label_drop == (p_type, p_threshold)
    trainer.model.register_forward_pre_hook(hook, with_kwargs=True)
    trainer.fit()
    assert calls
    for t, y, h in calls:
        B = t.shape[0] // 2
        assert (y[B:] == -1).all() and h[B:].isnan().all() and (t[B:] == 0).all()
        assert bool((y[:B] == -1).all()) == (p_type == 1.0) and bool((y[:B] >= 0).all()) == (p_type == 0.0)
        assert bool(h[:B].isnan().all()) == (p_threshold == 1.0) and bool(h[:B].isfinite().all()) == (p_threshold == 0)
    calls.clear()
    plain = build_trainer(small(tmp_path, "model.cond_drop_prob=0"), tmp_path / "plain", callbacks=[])
    assert plain.objective.label_drop is None
    plain.model.register_forward_pre_hook(hook, with_kwargs=True)
    plain.fit()
    assert calls and all(y is None and h is None for _, y, h in calls)


@pytest.mark.parametrize("batch_size", [8, 12])
def test_batch_size_is_the_batch_and_sets_the_steps(tmp_path, batch_size):
    trainer = build_trainer(small(tmp_path, f"training.batch_size={batch_size}"), tmp_path / "run", callbacks=[])
    inputs = Inputs(trainer.model)
    trainer.fit()
    assert trainer.steps_per_epoch == len(trainer.data.train) // batch_size == trainer.step
    assert {c["x"].shape[0] for c in inputs.calls} == {2 * batch_size}  # noisy + clean rows


@pytest.mark.parametrize(("precision", "autocast"), [("fp32", False), ("bf16", True)])
def test_precision_sets_autocast(tmp_path, precision, autocast):
    trainer = build_trainer(small(tmp_path, f"training.precision={precision}"), tmp_path / "run", callbacks=[])
    inputs = Inputs(trainer.model)
    trainer.fit()
    assert inputs.calls and {c["autocast"] for c in inputs.calls} == {autocast}


# --------------------------------------------------------------------------------------------
# optimization: grad_accum_steps, grad_clip, lr and its schedule, weight_decay, ema_decay


def test_grad_accum_steps_2_equals_one_step_at_twice_the_batch(tmp_path):
    """With the head losses that are plain means over the batch (class CE without class weights,
    peak_exist BCE, threshold Huber) and the heads reading the clean signal (no noise drawn for
    them), two micro-batches of 8 give the gradient of one batch of 16: the same run."""
    common = ["loss.class_weights=none", "loss.head_input=clean", "model.cond_drop_prob=0", "training.ema_decay=0",
              "loss.balancer.weights={signal: 0, class: 1, peak_exist: 1, peak_latency: 0, peak_amplitude: 0, "
              "threshold: 1}"]
    runs = {}
    for name, extra in (("accum", ["training.batch_size=8", "training.grad_accum_steps=2"]),
                        ("big", ["training.batch_size=16"]), ("small", ["training.batch_size=8"])):
        runs[name] = fit(small(tmp_path / name, *common, *extra), tmp_path / name, steps := Steps())
        runs[name].outs = steps.outs
    accum, big, small_ = runs["accum"], runs["big"], runs["small"]
    assert accum.step == big.step == len(big.data.train) // 16 and small_.step == len(big.data.train) // 8
    for a, b in zip(accum.outs, big.outs, strict=True):
        for k in ("class", "peak_exist", "threshold"):
            assert a.losses[k].item() == pytest.approx(b.losses[k].item(), rel=1e-4, abs=1e-6), k
    for (name, pa), pb in zip(accum.model.named_parameters(), big.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)
    moved = [not torch.allclose(pa, pb, rtol=1e-4, atol=1e-5)
             for pa, pb in zip(accum.model.parameters(), small_.model.parameters(), strict=True)]
    assert any(moved)  # without accumulation (batch 8, twice the steps) the run differs


def test_grad_clip_bounds_the_gradient_the_optimizer_applies(tmp_path):
    applied = {}
    for clip in (0.05, 0.0):
        trainer = build_trainer(small(tmp_path, f"training.grad_clip={clip}"), tmp_path / str(clip),
                                callbacks=[steps := Steps()])
        norms = []
        trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs, norms=norms: norms.append(
            math.sqrt(sum(float(p.grad.square().sum()) for g in opt.param_groups for p in g["params"]
                          if p.grad is not None))))
        trainer.fit()
        logged = [float(o.grad_norm) for o in steps.outs]  # the norm before clipping
        applied[clip] = (norms, logged)
    norms, logged = applied[0.05]
    assert min(logged) > 0.05  # every step needed clipping...
    assert norms == pytest.approx([0.05] * len(norms), rel=1e-4)  # ...and got exactly the bound
    norms, logged = applied[0.0]  # 0 turns clipping off: the optimizer gets the full gradient
    assert norms == pytest.approx(logged, rel=1e-4) and max(norms) > 0.05


def test_lr_warmup_min_lr_ratio_and_weight_decay_drive_the_optimizer(tmp_path):
    cfg = small(tmp_path, "training.epochs=6", "training.lr=0.0123", "training.weight_decay=0.031",
                "training.warmup_steps=3", "training.min_lr_ratio=0.2")
    trainer = fit(cfg, tmp_path, steps := Steps())
    decay = next(g for g in trainer.optimizer.param_groups if g["name"] == "decay")
    assert decay["initial_lr"] == pytest.approx(0.0123) and decay["weight_decay"] == pytest.approx(0.031)
    total, lr = trainer.total_steps, [o.lr for o in steps.outs]  # the lr for the next step, after each step

    def expected(k):  # linear warm-up over 3 steps, then cosine from lr to lr * 0.2 at the last step
        if k < 3:
            return 0.0123 * (k + 1) / 3
        return 0.0123 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * min(1.0, (k - 3) / (total - 3)))))

    assert lr == pytest.approx([expected(k) for k in range(1, total + 1)], rel=1e-6)
    assert lr[-1] == pytest.approx(0.0123 * 0.2)


def test_ema_decay_sets_the_averaged_weights(tmp_path):
    shadows = {}
    for decay in (0.1, 0.9):
        trainer = fit(small(tmp_path, f"training.ema_decay={decay}"), tmp_path / str(decay))
        shadows[decay] = torch.cat([p.flatten() for p in trainer.ema.shadow.parameters()])
        model = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        assert not torch.equal(shadows[decay], model)
    assert not torch.allclose(shadows[0.1], shadows[0.9])
    off = fit(small(tmp_path, "training.ema_decay=0"), tmp_path / "off")
    assert off.ema is None and off.state_dict()["ema"] is None


# --------------------------------------------------------------------------------------------
# validation and stopping: val_every, clinical_validation, early stopping


def test_val_every_validates_every_nth_epoch_and_the_last(tmp_path):
    cfg = small(tmp_path, "training.epochs=5", "training.val_every=2")
    train_run(cfg, tmp_path / "run")
    epochs = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5]
    validated = [r["epoch"] for r in epochs if "val/total" in r["scalars"]]
    assert validated == [2, 4, 5]
    assert not any(k.startswith("val/patient/") for r in epochs for k in r["scalars"])  # clinical_validation=false


def test_early_stopping_stops_after_patience_validations_without_improvement(tmp_path):
    """min_delta far above any change: the first validation sets the best, the next `patience` do
    not improve on it, and training stops there (of 6 epochs, 3 run)."""
    cfg = small(tmp_path, "training.epochs=6", "training.early_stopping.enabled=true",
                "training.early_stopping.patience=2", "training.early_stopping.min_delta=1e9")
    trainer = train_run(cfg, tmp_path / "run")
    epochs = [r["epoch"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert epochs == [1, 2, 3] and trainer.step == 3 * trainer.steps_per_epoch
    assert "early stopping: val/total has not improved by more than 1e+09 for 2 validations" in \
        (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    full = train_run(small(tmp_path, "training.epochs=6"), tmp_path / "full")
    assert full.step == 6 * full.steps_per_epoch  # disabled (the default): all epochs run


# --------------------------------------------------------------------------------------------
# the data order and the run as a whole: data.balanced_sampler, data.num_workers, seed, device


def test_balanced_sampler_draws_the_classes_evenly(tmp_path):
    shares = {}
    for balanced in ("false", "true"):
        trainer = build_trainer(small(tmp_path, "data.synthetic.patients=30", f"data.balanced_sampler={balanced}"),
                                tmp_path / balanced, callbacks=[])
        labels = trainer.data.train.tensors["label"][torch.tensor(list(trainer.sampler))]
        counts = torch.bincount(labels, minlength=5).float()
        shares[balanced] = counts.max().item() / counts.sum().item()
    assert shares["false"] > 0.6 and shares["true"] < shares["false"] - 0.2  # NORMAL no longer dominates


def test_num_workers_reaches_the_data_loaders(tmp_path, monkeypatch):
    import training.trainer

    real, seen = training.trainer.DataLoader, []

    def loader(*args, **kwargs):
        seen.append(kwargs["num_workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(training.trainer, "DataLoader", loader)
    fit(small(tmp_path, "data.num_workers=1"), tmp_path)
    assert seen and set(seen) == {1}


def test_seed_sets_the_initial_weights(tmp_path):
    def weights(seed):
        trainer = build_trainer(small(tmp_path, f"seed={seed}"), tmp_path, callbacks=[])
        return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    assert torch.equal(weights(0), weights(0)) and not torch.equal(weights(0), weights(1))


def test_device_is_resolved_from_the_config(tmp_path):
    with pytest.raises(ValueError, match=r"^config key 'device': expected auto, cpu, cuda or cuda:N, found 'tpu'$"):
        build_trainer(small(tmp_path, "device=tpu"), tmp_path, callbacks=[])
    assert build_trainer(small(tmp_path, "device=cpu"), tmp_path, callbacks=[]).device == torch.device("cpu")


@pytest.mark.parametrize("p_wave", [0.0, 1.0])
def test_wave_conditioning_and_its_drop_probability_reach_the_network(tmp_path, p_wave):
    """model.wave_conditioning passes each noisy row its recording's wave V [present, latency, amplitude] (NaN
    latency and amplitude where absent), all NaN (the null) with model.wave_drop_prob; the clean rows always get
    the null. Without the key the network is called without a wave V condition."""
    calls = []

    def hook(module, args, kwargs):
        if module.training:
            calls.append((args[1].clone(), kwargs.get("wave")))

    cfg = small(tmp_path, "model.label_conditioning=true", "model.wave_conditioning=true",
                f"model.wave_drop_prob={p_wave}", "model.cond_drop_prob=0")
    trainer = build_trainer(cfg, tmp_path / "run", callbacks=[])
    assert trainer.objective.wave_drop == p_wave
    trainer.model.register_forward_pre_hook(hook, with_kwargs=True)
    trainer.fit()
    assert calls
    for t, wave in calls:
        B = t.shape[0] // 2
        assert wave.shape == (2 * B, 3) and wave[B:].isnan().all() and (t[B:] == 0).all()
        if p_wave == 1.0:
            assert wave[:B].isnan().all()
        else:
            present = wave[:B, 0] == 1
            assert not wave[:B, 0].isnan().any() and wave[:B][present, 1:].isfinite().all()
            assert wave[:B][~present, 1:].isnan().all()
    plain = build_trainer(small(tmp_path, "model.label_conditioning=true"), tmp_path / "plain", callbacks=[])
    assert plain.objective.wave_drop is None
