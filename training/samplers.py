"""Reverse-process update rules: DDPM ancestral, DDIM and DPM-Solver++(2M).

Each rule moves x from one noise level to the next, given the denoised estimate (x0_hat, eps_hat)
that :meth:`training.diffusion.GaussianDiffusion.predict_x0_eps` produced at the current level.
A level is written as in x_t = alpha_t * x0 + sigma_t * eps with alpha_t = sqrt(alpha_bar_t) and
sigma_t = sqrt(1 - alpha_bar_t). The chain ends at the clean level ``CLEAN`` (alpha = 1,
sigma = 0), so the last update of every sampler returns x0_hat at the last visited timestep.

Why not diffusers' schedulers: diffusers is not a dependency of this project, and the three update
rules below are about 60 lines together; owning them lets the tests pin each equation and lets the
samplers share one loop (guidance, clipping and the parameterization live in one place).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Spacing = Literal["linspace", "leading", "trailing", "logsnr"]
SPACINGS: tuple[str, ...] = ("linspace", "leading", "trailing", "logsnr")
# Lowest lambda = log(alpha / sigma) the "logsnr" grid spends steps on. Below it x0_hat is the data
# mean and one step crosses the rest exactly; DPM-Solver's reference code stops its cosine schedule
# at t = 0.9946 for the same reason, which is lambda = -4.8 (Lu et al. 2022, code `NoiseScheduleVP`).
LAMBDA_FLOOR = -5.0


@dataclass(frozen=True)
class Level:
    """One noise level: x_t = alpha * x0 + sigma * eps, alpha^2 + sigma^2 = 1."""

    alpha: float
    sigma: float


CLEAN = Level(1.0, 0.0)


def timestep_sequence(T: int, steps: int, spacing: Spacing = "linspace", lam: Tensor | None = None) -> list[int]:
    """The descending timesteps tau_1 > ... > tau_S that a sampler with ``steps`` evaluations visits.

    - ``linspace``: T-1 ... 0, evenly spaced; starts at the noisiest step and ends at the least noisy.
    - ``leading``: (S-1)*(T//S) ... 0, the original DDIM choice (Song et al. 2021); it never visits
      T-1, so it starts from a level whose signal is not quite zero (Lin et al. 2024, Table 2).
    - ``trailing``: T-1, T-1-T/S, ...; starts at T-1 and stops at T/S - 1 (Lin et al. 2024).
    - ``logsnr``: T-1, then uniform in lambda = log(alpha/sigma) from max(lambda_{T-1}, -5) to
      lambda_0 (Lu et al. 2022, sec. 3.3); needs ``lam`` [T]. Multistep solvers assume smooth step
      ratios h_{i-1}/h_i; linspace on the cosine schedule ends with one step 4x longer in lambda
      than the one before, and DPM-Solver++(2M) overshoots there (tests/training/test_samplers.py).
    """
    if not 1 <= steps <= T:
        raise ValueError(f"sampling steps: expected 1 <= steps <= T ({T}), found {steps}")
    if spacing == "logsnr":
        if lam is None or lam.shape != (T,):
            raise ValueError(f"logsnr spacing: expected lambda per timestep [{T}], found {lam}")
        return _logsnr_sequence(lam.double().cpu().numpy(), steps)
    if spacing == "linspace":
        ts = np.round(np.linspace(T - 1, 0, steps))
    elif spacing == "leading":
        ts = (np.arange(steps) * (T // steps))[::-1]
    elif spacing == "trailing":
        ts = T - np.round(np.arange(steps) * (T / steps)) - 1
    else:
        raise ValueError(f"timestep spacing: expected one of {list(SPACINGS)}, found {spacing!r}")
    return [int(t) for t in ts]


def _logsnr_sequence(lam: np.ndarray, steps: int) -> list[int]:
    T = lam.shape[0]
    grid = np.linspace(max(lam[-1], LAMBDA_FLOOR), lam[0], steps)  # (S) increasing lambda
    nearest = np.abs(lam[None, :] - grid[:, None]).argmin(axis=1)  # (S) t closest to each grid point
    ts = [T - 1]
    for i in range(1, steps):  # strictly decreasing, leaving room for the steps still to come
        ts.append(max(min(int(nearest[i]), ts[-1] - 1), steps - 1 - i))
    return ts


def _beta(cur: Level, nxt: Level) -> float:
    """1 - alpha_bar_t / alpha_bar_prev, written with sigmas: no cancellation when both are near 1."""
    return max((cur.sigma**2 - nxt.sigma**2) / nxt.alpha**2, 0.0)


def gaussian(shape: tuple[int, ...], device, generator: torch.Generator | None = None, tied: int = 1,
             share: float = 1.0) -> Tensor:
    """N(0, I) of ``shape`` on ``device``, drawn on the generator's device (a CPU generator works
    with a CUDA model, and the same seed gives the same draws wherever the model runs). ``tied`` > 1:
    each run of ``tied`` consecutive rows shares one draw (one virtual patient's series in
    evaluation.generate); shape[0] must be a multiple of it. ``tied`` = 1 draws exactly as before.
    ``share`` < 1: the shared draw carries only that share of each row's variance, sqrt(share) z_run +
    sqrt(1 - share) z_row (still N(0, I) per row; rows of a run correlate by ``share``)."""
    src = generator.device if generator is not None else device
    if tied == 1:
        return torch.randn(shape, generator=generator, device=src).to(device)
    if shape[0] % tied:
        raise ValueError(f"tied noise: expected a row count that is a multiple of {tied}, found {shape[0]}")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"tied noise share: expected a number from 0 to 1, found {share}")
    z = torch.randn((shape[0] // tied, *shape[1:]), generator=generator, device=src)  # (B/tied ...)
    z = z.repeat_interleave(tied, dim=0)  # (B ...)
    if share < 1.0:
        z = math.sqrt(share) * z + math.sqrt(1.0 - share) * torch.randn(shape, generator=generator, device=src)
    return z.to(device)


def _noise(x: Tensor, generator: torch.Generator | None, tied: int = 1, share: float = 1.0) -> Tensor:
    return gaussian(tuple(x.shape), x.device, generator, tied, share).to(x.dtype)


def ddim_step(
    x_t: Tensor, x0: Tensor, eps: Tensor, cur: Level, nxt: Level, eta: float = 0.0,
    generator: torch.Generator | None = None, tied: int = 1, share: float = 1.0,
) -> Tensor:
    """DDIM update (Song et al. 2021, eq. 12) from level ``cur`` to the less noisy level ``nxt``.

        x_prev = alpha_prev * x0 + sqrt(sigma_prev^2 - c^2) * eps + c * z
        c      = eta * (sigma_prev / sigma_t) * sqrt(1 - alpha_t^2 / alpha_prev^2)      (eq. 16)

    eta = 0 is deterministic (the probability-flow ODE, first order); eta = 1 is DDPM's posterior.
    ``tied``, ``share``: rows sharing the draw z (see :func:`gaussian`).
    """
    c = eta * (nxt.sigma / cur.sigma) * math.sqrt(_beta(cur, nxt))
    x = nxt.alpha * x0 + math.sqrt(max(nxt.sigma**2 - c**2, 0.0)) * eps  # (B C L)
    return x + c * _noise(x, generator, tied, share) if c > 0 else x


def ddpm_step(x_t: Tensor, x0: Tensor, cur: Level, nxt: Level, generator: torch.Generator | None = None,
              tied: int = 1, share: float = 1.0) -> Tensor:
    """Ancestral step: a sample of the posterior q(x_prev | x_t, x0_hat) (Ho et al. 2020, eqs. 6-7).

    With a strided chain the one-step beta is beta' = 1 - alpha_bar_t / alpha_bar_prev (respacing,
    Nichol & Dhariwal 2021, sec. 4), and the variance is the posterior's beta_tilde (eq. 7).
    ``tied``, ``share``: rows sharing the draw (see :func:`gaussian`).
    """
    if nxt.sigma == 0.0:  # posterior of the clean level given x0_hat: x0_hat itself
        return x0
    beta = _beta(cur, nxt)  # beta'_t
    c0 = nxt.alpha * beta / cur.sigma**2  # sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t)
    ct = math.sqrt(1.0 - beta) * nxt.sigma**2 / cur.sigma**2  # sqrt(alpha_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    var = beta * nxt.sigma**2 / cur.sigma**2  # beta_tilde_t
    mean = c0 * x0 + ct * x_t  # (B C L)
    return mean + math.sqrt(var) * _noise(mean, generator, tied, share) if var > 0 else mean


class DPMSolverPP2M:
    """DPM-Solver++(2M), multistep second order in data prediction (Lu et al. 2022, Algorithm 2).

    With lambda = log(alpha / sigma) and h_i = lambda_i - lambda_{i-1}:

        D_i = (1 + 1/(2 r_i)) x0_{i-1} - 1/(2 r_i) x0_{i-2},   r_i = h_{i-1} / h_i
        x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i

    The first step has no history and uses D_1 = x0_0 (DPM-Solver++ 1 = DDIM). The step to the
    clean level (sigma = 0, lambda = inf) is first order, i.e. returns x0_hat ("lower order final").
    One instance serves one sampling run; :meth:`reset` clears the history.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prev_x0: Tensor | None = None
        self.prev_h: float | None = None

    def step(self, x_t: Tensor, x0: Tensor, cur: Level, nxt: Level) -> Tensor:
        if nxt.sigma == 0.0:
            self.reset()
            return x0
        h = math.log(nxt.alpha / nxt.sigma) - math.log(cur.alpha / cur.sigma)
        if self.prev_x0 is None:
            D = x0
        else:
            r = self.prev_h / h
            D = (1.0 + 0.5 / r) * x0 - (0.5 / r) * self.prev_x0  # (B C L)
        self.prev_x0, self.prev_h = x0, h
        return (nxt.sigma / cur.sigma) * x_t - nxt.alpha * math.expm1(-h) * D
