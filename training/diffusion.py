"""The Gaussian diffusion process: schedules, forward noising, training targets, Min-SNR loss, sampling.

The process is separate from the network: it takes any ``denoise_fn(x_t, t, drop_cond)`` and owns
the schedule buffers (computed in float64, stored as float32). Notation (Ho et al. 2020):

    alpha_bar_t = prod_{s<=t} (1 - beta_s),   alpha_t = sqrt(alpha_bar_t),   sigma_t = sqrt(1 - alpha_bar_t)
    x_t = alpha_t * x0 + sigma_t * eps                                       (Ho et al. 2020, eq. 4)
    v   = alpha_t * eps - sigma_t * x0                                       (Salimans & Ho 2022, sec. 4)
    SNR(t) = alpha_t^2 / sigma_t^2

Timestep convention: t is an integer in [0, T); t = 0 is the *first noisy* step (alpha_bar_0 close
to 1 but below it), t = T-1 the noisiest. Where the network must see a *clean* signal (the
auxiliary heads at evaluation, and a clean head pass in training) the caller passes the clean x0
with t = 0: the lowest noise level the network is trained on, so the timestep embedding stays in
its training range, and the gap between x0 and x_0 (sigma_0 = 0.0064 for the cosine schedule at
T = 1000, 0.01 for the linear one) is far below the recording noise of an ABR.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from data.waveform import lowpass_zero_phase
from training.config import DiffusionConfig
from training.samplers import (
    CLEAN,
    SPACINGS,
    DPMSolverPP2M,
    Level,
    ddim_step,
    ddpm_step,
    gaussian,
    timestep_sequence,
)

DenoiseFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x_t, t, drop_cond) -> model "signal" output
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmpp2m")
# timestep spacing per sampler when the config says "auto": measured on Gaussian data with the exact
# denoiser (tests/training/test_samplers.py), linspace suits the first-order samplers, while
# DPM-Solver++(2M) at 20 steps is 10x more accurate on the log-SNR grid (variance error 4 % vs 42 %).
AUTO_SPACING = {"ddpm": "linspace", "ddim": "linspace", "dpmpp2m": "logsnr"}
MAX_BETA = 0.999  # Nichol & Dhariwal 2021, sec. 3.2: prevents singularities near t = T


def cosine_betas(T: int, s: float = 0.008) -> Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = f(t) / f(0),
    f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), beta_t = 1 - alpha_bar(t+1) / alpha_bar(t), clipped
    to 0.999. Index t = 0 ... T-1 here is continuous time (t+1)/T. float64 [T]."""
    u = torch.arange(T + 1, dtype=torch.float64) / T  # (T+1)
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # (T+1)
    return (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)  # (T)


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Linear schedule (Ho et al. 2020, sec. 4): beta from beta_start to beta_end, given for T = 1000
    and scaled by 1000/T so that any T spans the same noise range (Nichol & Dhariwal 2021). float64 [T]."""
    scale = 1000.0 / T
    return torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64).clamp(max=MAX_BETA)


class GaussianDiffusion(nn.Module):
    """Schedule buffers and the process math for one :class:`DiffusionConfig` (see module docstring).

    Buffers (float32, [T]): ``betas``, ``alphas_cumprod`` (alpha_bar), ``sqrt_alphas_cumprod`` (alpha_t),
    ``sqrt_one_minus_alphas_cumprod`` (sigma_t), ``snr``. Tensors x are [B, C, L] (any trailing shape
    works); t is int64 [B].
    """

    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.T = cfg.timesteps
        if cfg.schedule == "cosine":
            betas = cosine_betas(cfg.timesteps, cfg.cosine_s)
        elif cfg.schedule == "linear":
            betas = linear_betas(cfg.timesteps, cfg.beta_start, cfg.beta_end)
        else:
            raise ValueError(f"diffusion.schedule: expected 'cosine' or 'linear', found {cfg.schedule!r}")
        abar = torch.cumprod(1 - betas, dim=0)  # (T) float64
        self._abar64 = abar  # plain attribute, float64 on the CPU: the samplers' per-step scalars
        for name, value in (
            ("betas", betas),
            ("alphas_cumprod", abar),
            ("sqrt_alphas_cumprod", abar.sqrt()),
            ("sqrt_one_minus_alphas_cumprod", (1 - abar).sqrt()),
            ("snr", abar / (1 - abar)),
        ):
            self.register_buffer(name, value.float(), persistent=False)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"T={self.T}, schedule={c.schedule}, prediction={c.prediction}, min_snr_gamma={c.min_snr_gamma}"

    # ---------------------------------------------------------------------------------------
    # training

    def _at(self, buf: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """buf[t] shaped to broadcast against x: [B] -> [B, 1, ..., 1]."""
        return buf[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))

    def sample_timesteps(self, batch: int, device, generator: torch.Generator | None = None) -> Tensor:
        """t ~ Uniform{0, ..., T-1}, int64 [batch] on ``device`` (drawn on the generator's device)."""
        src = generator.device if generator is not None else device
        return torch.randint(0, self.T, (batch,), generator=generator, device=src).to(device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = alpha_t x0 + sigma_t eps, a sample of q(x_t | x0) (Ho et al. 2020, eq. 4)."""
        a, s = self._at(self.sqrt_alphas_cumprod, t, x0), self._at(self.sqrt_one_minus_alphas_cumprod, t, x0)
        return a * x0 + s * noise  # (B C L)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the signal head regresses: eps, v = alpha_t eps - sigma_t x0 (Salimans & Ho 2022), or x0."""
        p = self.cfg.prediction
        if p == "eps":
            return noise
        if p == "x0":
            return x0
        a, s = self._at(self.sqrt_alphas_cumprod, t, x0), self._at(self.sqrt_one_minus_alphas_cumprod, t, x0)
        return a * noise - s * x0  # (B C L)

    def loss_weight(self, t: Tensor) -> Tensor:
        """Min-SNR-gamma weight (Hang et al. 2023, sec. 3.4) in the parameterization's own units, [B].

        The x0-space weight is min(SNR, gamma). An eps error is an x0 error times sqrt(SNR), a v error
        an x0 error times sqrt(SNR + 1), so the same weighting reads
            x0: min(SNR, gamma)    eps: min(SNR, gamma) / SNR    v: min(SNR, gamma) / (SNR + 1).
        gamma = 0 turns weighting off (weight 1).
        """
        snr = self.snr[t]  # (B)
        gamma = self.cfg.min_snr_gamma
        if gamma <= 0:
            return torch.ones_like(snr)
        w = snr.clamp(max=gamma)
        return {"x0": w, "eps": w / snr, "v": w / (snr + 1)}[self.cfg.prediction]

    def signal_loss(self, pred: Tensor, x0: Tensor, noise: Tensor, t: Tensor,
                    sample_weight: Tensor | None = None) -> Tensor:
        """The ``signal`` component: per-sample MSE to :meth:`target`, Min-SNR-weighted, mean over batch;
        with ``sample_weight`` [B] (>= 0, not all 0) the weighted mean sum(w l) / sum(w) instead."""
        if pred.shape != x0.shape:
            raise ValueError(f"signal prediction: expected shape {tuple(x0.shape)}, found {tuple(pred.shape)}")
        mse = (pred.float() - self.target(x0, noise, t).float()).pow(2).flatten(1).mean(dim=1)  # (B)
        loss = self.loss_weight(t) * mse  # (B)
        if sample_weight is None:
            return loss.mean()
        w = sample_weight.float()
        return (w * loss).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)

    def predict_x0_eps(self, model_out: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(x0_hat, eps_hat) from the network output in the configured parameterization:
        eps: x0 = (x_t - sigma eps) / alpha;  v: x0 = alpha x_t - sigma v, eps = sigma x_t + alpha v;
        x0: eps = (x_t - alpha x0) / sigma."""
        a, s = self._at(self.sqrt_alphas_cumprod, t, x_t), self._at(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        p = self.cfg.prediction
        if p == "eps":
            return (x_t - s * model_out) / a, model_out
        if p == "v":
            return a * x_t - s * model_out, s * x_t + a * model_out
        return model_out, (x_t - a * model_out) / s

    # ---------------------------------------------------------------------------------------
    # sampling

    def level(self, t: int) -> Level:
        """(alpha_t, sigma_t) as float64 Python numbers, so that alpha^2 + sigma^2 = 1 to 1e-16."""
        abar = float(self._abar64[t])
        return Level(math.sqrt(abar), math.sqrt(1.0 - abar))

    def sampling_kwargs(self) -> dict:
        """The config's sampling defaults, as keyword arguments of :meth:`sample`."""
        c = self.cfg
        return {"sampler": c.sampler, "steps": c.sampling_steps, "eta": c.eta, "guidance": c.guidance,
                "clip": c.clip_x0 or None, "lowpass_hz": c.lowpass_hz, "guidance_sigma_min": c.guidance_sigma_min}

    def _guided(self, denoise_fn: DenoiseFn, x_t: Tensor, t: Tensor, guidance: float) -> Tensor:
        """Classifier-free guidance (Ho & Salimans 2022, eq. 6): uncond + w (cond - uncond).
        w = 1 is the conditional model alone and costs one evaluation."""
        keep = torch.zeros(x_t.shape[0], dtype=torch.bool, device=x_t.device)  # (B) drop_cond = False
        cond = denoise_fn(x_t, t, keep)
        if guidance == 1.0:
            return cond
        uncond = denoise_fn(x_t, t, ~keep)
        return uncond + guidance * (cond - uncond)

    @torch.no_grad()
    def sample(
        self,
        denoise_fn: DenoiseFn,
        shape: tuple[int, ...],
        *,
        sampler: str = "ddim",
        steps: int = 50,
        eta: float = 0.0,
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
        clip: float | None = None,
        spacing: str | None = None,
        tied: int = 1,
        share: float = 1.0,
        lowpass_hz: float | None = None,
        guidance_sigma_min: float | None = None,
    ) -> Tensor:
        """Draw x0 of ``shape`` (e.g. [B, 1, L]) by running the reverse process from x_T ~ N(0, I).

        denoise_fn(x_t, t, drop_cond) returns the network's "signal" output (eps, v or x0 per
        ``cfg.prediction``); t is int64 [B], drop_cond bool [B]. ``sampler``: "ddpm" (ancestral;
        steps = T for the full chain, fewer for a strided one), "ddim" (``eta`` from 0, deterministic,
        to 1) or "dpmpp2m" (DPM-Solver++ 2M, good at 15-25 steps). ``clip``: clamp x0_hat to
        [-clip, clip] at each step; None (default) leaves standardized signals unbounded.
        ``spacing``: timestep spacing (see :func:`training.samplers.timestep_sequence`), default
        ``cfg.timestep_spacing``; "auto" picks per sampler (``AUTO_SPACING``). ``generator`` may live
        on any device (noise is drawn there and moved to this module's device). ``tied``: each run of
        ``tied`` consecutive rows shares every noise draw, x_T and the stochastic samplers' step noise
        (one virtual patient's series, evaluation.generate); 1 (default) draws as before; ``share``: the
        share of each draw's variance the run has in common (1: all; training.samplers.gaussian).
        ``lowpass_hz``: the samples through data.waveform.lowpass_zero_phase at that frequency at the end; None:
        ``cfg.lowpass_hz``; 0: none. ``guidance_sigma_min``: ``guidance`` only at the steps whose noise level
        sigma_t / alpha_t exceeds it, the conditional model alone below (one evaluation per step); None:
        ``cfg.guidance_sigma_min``; 0: every step.
        """
        if clip is not None and clip <= 0:
            raise ValueError(f"clip: expected a positive bound or None, found {clip}")
        ts = self._sampling_timesteps(sampler, steps, spacing)  # (S) descending
        device = self.betas.device
        solver = DPMSolverPP2M()
        sigma_min = self.cfg.guidance_sigma_min if guidance_sigma_min is None else guidance_sigma_min
        x = gaussian(shape, device, generator, tied, share)  # x_T (B C L)
        for i, t in enumerate(ts):
            cur, nxt = self.level(t), (self.level(ts[i + 1]) if i + 1 < len(ts) else CLEAN)
            tt = torch.full((shape[0],), t, dtype=torch.long, device=device)  # (B)
            w = guidance if cur.sigma / cur.alpha > sigma_min else 1.0  # guidance's interval (Kynkäänniemi 2024)
            x0, eps = self.predict_x0_eps(self._guided(denoise_fn, x, tt, w), x, tt)
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
                eps = (x - cur.alpha * x0) / cur.sigma  # keep (x0, eps) consistent with x_t
            if sampler == "ddim":
                x = ddim_step(x, x0, eps, cur, nxt, eta, generator, tied, share)
            elif sampler == "ddpm":
                x = ddpm_step(x, x0, cur, nxt, generator, tied, share)
            else:
                x = solver.step(x, x0, cur, nxt)
        return self._lowpass(x, self.cfg.lowpass_hz if lowpass_hz is None else lowpass_hz)

    def _sampling_timesteps(self, sampler: str, steps: int, spacing: str | None) -> list[int]:
        """:meth:`sample`'s timesteps, descending; ValueError for an unknown sampler or spacing."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {list(SAMPLERS)}, found {sampler!r}")
        spacing = spacing or self.cfg.timestep_spacing
        spacing = AUTO_SPACING[sampler] if spacing == "auto" else spacing
        if spacing not in SPACINGS:
            raise ValueError(f"timestep spacing: expected one of {list(SPACINGS)}, found {spacing!r}")
        lam = (self.sqrt_alphas_cumprod / self.sqrt_one_minus_alphas_cumprod).log()  # (T) lambda_t
        return timestep_sequence(self.T, steps, spacing, lam)

    @staticmethod
    def _lowpass(x: Tensor, cutoff_hz: float) -> Tensor:
        """Samples (B C L) through data.waveform.lowpass_zero_phase (0: as they are); one host round trip."""
        if not cutoff_hz:
            return x
        return torch.from_numpy(lowpass_zero_phase(x.detach().float().cpu().numpy(), cutoff_hz)).to(x)
