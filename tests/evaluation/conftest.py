"""Fakes shared by the evaluation tests: a diffusion with a known schedule, a network honouring the
output contract of DESIGN.md, a tiny dataset of batch-dict items, and a hand-made Collected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data.stats import DataStats
from evaluation.collect import Collected, NoiseLevel

L = 200


class FakeDiffusion:
    """ε-prediction with ᾱ_t falling linearly from 0.999 to 0.001 over T steps."""

    def __init__(self, T: int = 100):
        self.T = T
        self.alpha_bar = torch.linspace(0.999, 0.001, T)

    def _ab(self, t):
        return self.alpha_bar[t].view(-1, 1, 1)

    def q_sample(self, x0, t, noise):
        ab = self._ab(t)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predict_x0_eps(self, model_out, x_t, t):
        ab = self._ab(t)
        return (x_t - (1 - ab).sqrt() * model_out) / ab.sqrt(), model_out


class FakeNet(torch.nn.Module):
    """Predicts ε = 0 (so x̂0 = x_t / sqrt(ᾱ): exactly the noisy input), class = argmax of a fixed
    vector (collapsed onto NORMAL), and heads read from the static input; records every t seen."""

    def __init__(self):
        super().__init__()
        self.seen_t: list[torch.Tensor] = []

    def forward(self, x_t, t, static, drop_cond=None, return_features=False):
        self.seen_t.append(t.clone())
        B = x_t.shape[0]
        logits = torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0]).expand(B, 5)
        features = {"features": [x_t.transpose(1, 2), static[:, None, :]]} if return_features else {}  # h, z
        return features | {
            "signal": torch.zeros_like(x_t),
            "class_logits": logits,
            "peak_logit": torch.full((B,), 2.0),
            "peak_latency": 9.0 - 0.03 * static[:, 1],
            "peak_amplitude": torch.full((B,), 0.2),
            "threshold": torch.full((B,), 30.0),
        }


def bump(latency_ms: np.ndarray | float, amp: float = 1.0, L: int = L) -> np.ndarray:
    """Gaussian wave V at latency_ms (0.4 ms wide) sampled at 20 kHz; [N, L]."""
    t_ms = np.arange(L) / 20.0
    lat = np.atleast_1d(np.asarray(latency_ms, dtype=float))[:, None]
    return amp * np.exp(-0.5 * ((t_ms[None, :] - lat) / 0.4) ** 2)


def make_items(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Dataset items as build_data yields them (signal normalized by identity stats: it is in µV)."""
    rng = np.random.default_rng(seed)
    intensity = rng.choice(np.arange(0, 101, 10), size=n).astype(np.float32)
    latency = (9.0 - 0.03 * intensity).astype(np.float32)
    sig = bump(latency) + 0.05 * rng.standard_normal((n, L))
    labels = np.arange(n) % 5
    items = []
    for i in range(n):
        items.append({
            "signal": torch.tensor(sig[i], dtype=torch.float32).view(1, L),
            "static": torch.tensor([0.5, intensity[i], 21.1, 300.0]),
            "label": torch.tensor(labels[i], dtype=torch.int64),
            "peak_mask": torch.tensor(bool(i % 4 != 0)),
            "peak_latency": torch.tensor(latency[i]),
            "peak_amplitude": torch.tensor(0.2 + 0.01 * (i % 7), dtype=torch.float32),
            "threshold": torch.tensor(10.0 + 5 * labels[i], dtype=torch.float32),
            "patient_id": torch.tensor(i // 5, dtype=torch.int64),
            "series_id": torch.tensor(i, dtype=torch.int64),  # labels vary inside a patient here: a series each
        })
    return items


def fake_generate(model, diffusion, stats, static, n, sampler, steps, guidance, generator):
    """Generates wave V at the latency the fake data uses for this intensity, µV [n, 1, L]."""
    assert static.shape == (4,)
    lat = 9.0 - 0.03 * float(static[1])
    return torch.tensor(bump(np.full(n, lat)), dtype=torch.float32).view(n, 1, L)


@pytest.fixture
def stats() -> DataStats:
    return DataStats.identity()


def hand_collected(n: int = 100, *, collapsed: bool, seed: int = 0) -> Collected:
    """A Collected built by hand: healthy (near-perfect heads, a real denoiser) or collapsed
    (NORMAL for every sample, constant threshold, latency unrelated to the truth, no denoising)."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 5
    mask = np.arange(n) % 4 != 0
    lat = rng.uniform(5.5, 9.0, n)
    amp = rng.uniform(0.05, 0.5, n)
    thr = rng.uniform(0.0, 90.0, n)
    clean = bump(lat)
    noisy = clean + rng.standard_normal(clean.shape)
    if collapsed:
        proba = np.tile([0.8, 0.05, 0.05, 0.05, 0.05], (n, 1))
        peak_prob = np.full(n, 0.9)
        lat_pred = rng.uniform(5.5, 9.0, n)
        amp_pred = rng.uniform(0.05, 0.5, n)
        thr_pred = np.full(n, 30.0)
        estimate = noisy.copy()
    else:
        proba = np.full((n, 5), 0.02)
        proba[np.arange(n), label] = 0.92
        peak_prob = np.where(mask, 0.9, 0.1)
        lat_pred, amp_pred, thr_pred = lat + 0.05 * rng.standard_normal(n), amp * 1.02, thr + rng.standard_normal(n)
        estimate = clean + 0.05 * rng.standard_normal(clean.shape)
    return Collected(
        label=label, proba=proba, peak_mask=mask, peak_prob=peak_prob,
        latency_true=lat, latency_pred=lat_pred, amplitude_true=amp, amplitude_pred=amp_pred,
        threshold_true=thr, threshold_pred=thr_pred, static=np.tile([0.5, 80.0, 21.1, 300.0], (n, 1)),
        signal=clean, units="µV", levels=[NoiseLevel(0.0, 50, 0.5, noisy, estimate)],
    )


def write_fake_run(run_dir: Path, *, steps: int = 40, weight_drift: float = 0.0, evaluated: dict | None = None,
                   scale: float = 1.0) -> Path:
    """A run directory with a metrics.jsonl as the monitoring callbacks write it; every loss is
    ``scale`` times the default (another seed of the same run)."""
    comps = ("signal", "class", "peak_exist", "peak_latency", "peak_amplitude", "threshold")
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [{"kind": "text", "step": 0, "epoch": 1, "scalars": {}, "text": "weights",
              "data": {"mapping": {f"weight_{i}": c for i, c in enumerate(comps)}}}]
    for s in range(10, steps + 1, 10):
        lines.append({"kind": "step", "step": s, "epoch": 1, "text": "",
                      "scalars": {"train/total": scale * 10.0 / s, **{f"train/{c}": scale / s for c in comps}},
                      "data": {}})
        lines.append({"kind": "weights", "step": s, "epoch": 1, "text": "", "data": {},
                      "scalars": {f"train/weight_{i}": 1.0 + weight_drift * s * (i == 0) for i in range(6)}})
        if s % 20 == 0:
            lines.append({"kind": "epoch", "step": s, "epoch": s // 20, "text": "summary", "data": {},
                          "scalars": {"train/total": scale * 10.0 / s, "val/total": scale * 12.0 / s,
                                      **{f"val/{c}": scale * 1.2 / s for c in comps}}})
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"kind": "step", "st'  # a run still writing
    (run_dir / "metrics.jsonl").write_text(text, encoding="utf-8")
    if evaluated is not None:
        (run_dir / "eval").mkdir(exist_ok=True)
        (run_dir / "eval" / "metrics.json").write_text(json.dumps(evaluated), encoding="utf-8")
    return run_dir


@pytest.fixture
def fx():
    """This module's fakes and helpers (tests have no packages to import them from)."""
    import sys

    return sys.modules[__name__]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished one-epoch run (4-channel network, 6 synthetic patients; seconds on a CPU). Shared by
    the session: tests write their outputs elsewhere (--out) and never into it."""
    from tests.runs import tiny_config, train_run

    root = tmp_path_factory.mktemp("tiny_run")
    cfg = tiny_config(root, "training.epochs=1", "model.base_channels=4", "data.synthetic.patients=6")
    train_run(cfg, root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def tiny_label_run(tmp_path_factory) -> Path:
    """tiny_run trained with model.label_conditioning (issue 28): generate's --type, --threshold and --levels."""
    from tests.runs import tiny_config, train_run

    root = tmp_path_factory.mktemp("tiny_label_run")
    cfg = tiny_config(root, "training.epochs=1", "model.base_channels=4", "data.synthetic.patients=6",
                      "model.label_conditioning=true")
    train_run(cfg, root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def tiny_wave_run(tmp_path_factory) -> Path:
    """tiny_run trained with model.label_conditioning and model.wave_conditioning (issue 28) through train.py's
    own entry point, which writes its wave_profile.json (generate draws each ear's wave V from it)."""
    from tests.reliability.procs import in_process_args, train_in_process

    root = tmp_path_factory.mktemp("tiny_wave_run")
    assert train_in_process(in_process_args(root, "run", "training.epochs=1", "model.base_channels=4",
                                            "data.synthetic.patients=6", "model.label_conditioning=true",
                                            "model.wave_conditioning=true", "logging.use_tensorboard=false")) == 0
    return root / "run"
