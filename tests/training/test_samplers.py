"""Samplers: timestep grids, single update rules, guidance, clipping, and Gaussian data with the exact denoiser.

Gaussian data x0 ~ N(mu, diag(s^2)) has a closed-form optimal denoiser,
    E[x0 | x_t] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) * (x_t - alpha mu),
and a closed-form probability-flow ODE: (x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2) is constant
along it, so a deterministic sampler started at x_{T-1} should land on mu + s * that constant.
The scales s stay in [0.3, 2] (standardized signals); far smaller scales are resolved only below
sigma_0 of a T = 1000 schedule, where no sampler on that grid can be exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from training.config import DiffusionConfig
from training.diffusion import GaussianDiffusion
from training.samplers import CLEAN, DPMSolverPP2M, Level, ddim_step, ddpm_step, timestep_sequence

MU = torch.tensor([1.0, -0.5, 0.0, 2.0]).view(1, 1, 4)
S = torch.tensor([0.5, 1.0, 2.0, 0.3]).view(1, 1, 4)
N = 20000


@pytest.fixture(autouse=True)
def _one_thread():
    # the runs below are many tiny elementwise ops: threads only add contention on a shared CPU
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def exact_denoiser(d: GaussianDiffusion):
    """The optimal network output for Gaussian data, in d's parameterization."""

    def fn(x_t, t, drop_cond):
        a = d.sqrt_alphas_cumprod[t].view(-1, 1, 1)
        s = d.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1)
        x0 = MU + a * S**2 / (a**2 * S**2 + s**2) * (x_t - a * MU)
        eps = (x_t - a * x0) / s
        return {"x0": x0, "eps": eps, "v": a * eps - s * x0}[d.cfg.prediction]

    return fn


def ode_endpoint(d: GaussianDiffusion, x_start: torch.Tensor) -> torch.Tensor:
    a, s = d.level(d.T - 1).alpha, d.level(d.T - 1).sigma
    return MU + S * (x_start - a * MU) / torch.sqrt(a**2 * S**2 + s**2)


def run(d, sampler, steps, seed=0, **kw):
    return d.sample(exact_denoiser(d), (N, 1, 4), sampler=sampler, steps=steps,
                    generator=torch.Generator().manual_seed(seed), **kw)


# --- timestep grids ------------------------------------------------------------------------


def test_timestep_sequences_pinned():
    assert timestep_sequence(1000, 50, "trailing") == [999 - 20 * i for i in range(50)]
    assert timestep_sequence(1000, 50, "leading") == [20 * (49 - i) for i in range(50)]
    lin = timestep_sequence(1000, 50, "linspace")
    assert lin[0] == 999 and lin[-1] == 0 and len(lin) == 50
    assert lin == [round(999 - 999 * i / 49) for i in range(50)]
    assert timestep_sequence(10, 10, "linspace") == list(range(9, -1, -1))


def test_logsnr_sequence_uniform_in_lambda():
    d = GaussianDiffusion(DiffusionConfig())
    lam = (d.sqrt_alphas_cumprod / d.sqrt_one_minus_alphas_cumprod).log().double()
    ts = timestep_sequence(1000, 20, "logsnr", lam)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 20
    assert ts == sorted(set(ts), reverse=True)  # strictly decreasing
    h = lam[ts[2:]].diff()  # after the jump from T-1 to the floor: steps of equal length in lambda
    expected = (lam[0].item() - (-5.0)) / 19
    assert (h - expected).abs().max().item() < 0.35 * expected
    assert timestep_sequence(1000, 1000, "logsnr", lam) == list(range(999, -1, -1))


def test_timestep_sequence_errors():
    with pytest.raises(ValueError, match=r"sampling steps: expected 1 <= steps <= T \(10\), found 11"):
        timestep_sequence(10, 11)
    with pytest.raises(ValueError, match="timestep spacing: expected one of"):
        timestep_sequence(10, 5, "karras")
    with pytest.raises(ValueError, match="logsnr spacing: expected lambda per timestep"):
        timestep_sequence(10, 5, "logsnr")


# --- single updates ------------------------------------------------------------------------


def test_one_ddim_step_eta0_pinned():
    # x0_hat = 2, eps_hat = -1, next level alpha = 0.8, sigma = 0.6: x = 0.8 * 2 + 0.6 * (-1) = 1.0
    x = ddim_step(torch.tensor([0.3]), torch.tensor([2.0]), torch.tensor([-1.0]), Level(0.6, 0.8), Level(0.8, 0.6))
    assert x.item() == pytest.approx(1.0, abs=1e-6)


def test_one_ddim_step_on_the_schedule():
    d = GaussianDiffusion(DiffusionConfig(prediction="eps"))
    x_t, eps = torch.tensor([[[0.7, -1.2]]]), torch.tensor([[[0.1, 0.4]]])
    t, prev = 600, 580
    ab_t, ab_p = d.alphas_cumprod.double()[t].item(), d.alphas_cumprod.double()[prev].item()
    x0 = (x_t.double() - math.sqrt(1 - ab_t) * eps.double()) / math.sqrt(ab_t)  # Song et al. eq. 12, eta = 0
    expected = math.sqrt(ab_p) * x0 + math.sqrt(1 - ab_p) * eps.double()
    x0_hat, eps_hat = d.predict_x0_eps(eps, x_t, torch.tensor([t]))
    got = ddim_step(x_t, x0_hat, eps_hat, d.level(t), d.level(prev), eta=0.0)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


def test_ddpm_step_is_the_posterior():
    cur, nxt = Level(math.sqrt(0.5), math.sqrt(0.5)), Level(math.sqrt(0.8), math.sqrt(0.2))
    beta = 1 - 0.5 / 0.8
    mean = math.sqrt(0.8) * beta / 0.5 * 1.0 + math.sqrt(1 - beta) * 0.2 / 0.5 * 2.0  # Ho et al. eq. 7
    var = 0.2 / 0.5 * beta
    g = torch.Generator().manual_seed(0)
    x = ddpm_step(torch.full((200000,), 2.0), torch.ones(200000), cur, nxt, g)
    assert x.mean().item() == pytest.approx(mean, abs=0.01)
    assert x.var().item() == pytest.approx(var, rel=0.02)
    assert torch.equal(ddpm_step(torch.ones(3), torch.full((3,), 4.0), cur, CLEAN), torch.full((3,), 4.0))


def test_ddim_eta1_equals_ddpm():
    d = GaussianDiffusion(DiffusionConfig())
    a = d.sample(exact_denoiser(d), (64, 1, 4), sampler="ddim", steps=25, eta=1.0,
                 generator=torch.Generator().manual_seed(5))
    b = d.sample(exact_denoiser(d), (64, 1, 4), sampler="ddpm", steps=25, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_dpmpp2m_first_step_is_ddim_and_history_resets():
    solver = DPMSolverPP2M()
    x, x0 = torch.tensor([0.5]), torch.tensor([1.5])
    cur, nxt = Level(0.6, 0.8), Level(0.8, 0.6)
    assert solver.step(x, x0, cur, nxt).item() == pytest.approx(ddim_step(x, x0, (x - 0.6 * x0) / 0.8, cur, nxt).item())
    assert solver.prev_x0 is not None
    assert solver.step(x, x0, nxt, CLEAN).item() == pytest.approx(1.5)
    assert solver.prev_x0 is None


# --- Gaussian data with the exact denoiser (acceptance) ------------------------------------


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("sampler,steps,var_tol", [("ddpm", 1000, 0.04), ("ddim", 50, 0.10), ("dpmpp2m", 20, 0.06)])
def test_gaussian_data_mean_and_variance(prediction, sampler, steps, var_tol):
    # measured (seed 0, any parameterization): max |var/s^2 - 1| = 0.021 (DDPM-1000), 0.078 (DDIM-50),
    # 0.041 (DPM++ 20); DDIM at 50 steps is biased low (first-order ODE steps shrink the spread).
    d = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    x = run(d, sampler, steps)
    assert torch.isfinite(x).all()
    assert ((x.mean(0) - MU[0]) / S[0]).abs().max().item() < 0.05
    assert (x.var(0) / S[0] ** 2 - 1).abs().max().item() < var_tol


def test_deterministic_samplers_follow_the_ode():
    d = GaussianDiffusion(DiffusionConfig())
    exact = ode_endpoint(d, torch.randn((N, 1, 4), generator=torch.Generator().manual_seed(0)))
    err = {(s, k): ((run(d, s, k) - exact).abs() / S).mean().item() for s, k in
           [("ddim", 20), ("ddim", 50), ("dpmpp2m", 20), ("dpmpp2m", 40)]}
    # measured: DDIM 0.066 (20), 0.026 (50); DPM++(2M) 0.012 (20), 0.0031 (40), in units of s
    assert err[("dpmpp2m", 20)] < 0.02
    assert err[("dpmpp2m", 20)] < 0.6 * err[("ddim", 50)]  # 20 second-order steps beat 50 first-order ones
    assert err[("dpmpp2m", 20)] / err[("dpmpp2m", 40)] > 3.0  # second order: about 4x per halving of h
    assert err[("ddim", 20)] / err[("ddim", 50)] > 2.0  # first order: about 2.5x for 2.5x the steps


def test_logsnr_spacing_is_what_makes_dpmpp2m_accurate():
    d = GaussianDiffusion(DiffusionConfig())
    var_err = {sp: (run(d, "dpmpp2m", 20, spacing=sp).var(0) / S[0] ** 2 - 1).abs().max().item()
               for sp in ("linspace", "logsnr", "auto")}
    assert var_err["logsnr"] < var_err["linspace"] / 3
    assert var_err["auto"] == var_err["logsnr"]


# --- guidance, clipping, errors ------------------------------------------------------------


class Recorder:
    """Predicts x0 = a with the condition and x0 = b without it; records drop_cond per call."""

    def __init__(self, a: float, b: float):
        self.a, self.b, self.calls = a, b, []

    def __call__(self, x_t, t, drop_cond):
        assert drop_cond.dtype == torch.bool and drop_cond.shape == (x_t.shape[0],)
        assert t.dtype == torch.int64 and t.shape == (x_t.shape[0],)
        self.calls.append(bool(drop_cond.all()) if drop_cond.any() else False)
        return torch.where(drop_cond.view(-1, 1, 1), self.b, self.a).expand_as(x_t)


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_classifier_free_guidance(w):
    d = GaussianDiffusion(DiffusionConfig(prediction="x0"))
    fn = Recorder(a=1.0, b=-0.5)
    x = d.sample(fn, (3, 1, 5), sampler="ddim", steps=4, guidance=w)
    torch.testing.assert_close(x, torch.full((3, 1, 5), -0.5 + w * 1.5))  # uncond + w (cond - uncond)
    if w == 1.0:
        assert fn.calls == [False] * 4  # conditional only: one evaluation per step
    else:
        assert fn.calls == [False, True] * 4


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp2m"])
def test_no_clamping_unless_configured(sampler):
    d = GaussianDiffusion(DiffusionConfig(prediction="x0"))
    fn = Recorder(a=3.0, b=3.0)
    free = d.sample(fn, (2, 1, 5), sampler=sampler, steps=10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(free, torch.full((2, 1, 5), 3.0))
    clipped = d.sample(fn, (2, 1, 5), sampler=sampler, steps=10, clip=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(clipped, torch.ones(2, 1, 5))


def test_sample_errors():
    d = GaussianDiffusion(DiffusionConfig())
    fn = Recorder(0.0, 0.0)
    with pytest.raises(ValueError, match=r"sampler: expected one of \['ddpm', 'ddim', 'dpmpp2m'\], found 'euler'"):
        d.sample(fn, (1, 1, 4), sampler="euler")
    with pytest.raises(ValueError, match="sampling steps: expected 1 <= steps <= T"):
        d.sample(fn, (1, 1, 4), steps=1001)
    with pytest.raises(ValueError, match="clip: expected a positive bound or None, found 0"):
        d.sample(fn, (1, 1, 4), clip=0)
    with pytest.raises(ValueError, match="timestep spacing: expected one of"):
        d.sample(fn, (1, 1, 4), spacing="uniform")


@pytest.mark.parametrize("spacing,sampler,expected", [
    ("trailing", "ddim", [99, 74, 49, 24]),
    ("linspace", "ddim", [99, 66, 33, 0]),
    ("auto", "ddim", [99, 66, 33, 0]),
])
def test_config_timestep_spacing_is_used(spacing, sampler, expected):
    d = GaussianDiffusion(DiffusionConfig(timesteps=100, sampling_steps=4, timestep_spacing=spacing))
    seen = []

    def fn(x_t, t, drop_cond):
        seen.append(int(t[0]))
        return torch.zeros_like(x_t)

    d.sample(fn, (1, 1, 3), sampler=sampler, steps=4)
    assert seen == expected


# --------------------------------------------------------------------------------------------
# tied noise: one virtual patient's series (issue 28)


def test_gaussian_tied_repeats_each_draw_and_untied_draws_as_before():
    from training.samplers import gaussian

    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(gaussian((6, 1, 4), "cpu", torch.Generator().manual_seed(5)),
                               torch.randn((6, 1, 4), generator=g), rtol=0, atol=0)
    tied = gaussian((6, 1, 4), "cpu", torch.Generator().manual_seed(5), tied=3)  # (6 1 4)
    first = torch.randn((2, 1, 4), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(tied, first.repeat_interleave(3, dim=0), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"tied noise: expected a row count that is a multiple of 4, found 6"):
        gaussian((6, 1, 4), "cpu", None, tied=4)


def test_gaussian_share_sets_the_correlation_of_tied_rows_and_keeps_unit_variance():
    from training.samplers import gaussian

    z = gaussian((2 * 2000, 1, 50), "cpu", torch.Generator().manual_seed(1), tied=2, share=0.3)  # pairs
    a, b = z[0::2].flatten(), z[1::2].flatten()
    assert float(z.var()) == pytest.approx(1.0, abs=0.02)
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) == pytest.approx(0.3, abs=0.02)
    full = gaussian((6, 1, 4), "cpu", torch.Generator().manual_seed(5), tied=3, share=1.0)
    torch.testing.assert_close(full, gaussian((6, 1, 4), "cpu", torch.Generator().manual_seed(5), tied=3),
                               rtol=0, atol=0)  # share 1: the draws as before
    with pytest.raises(ValueError, match=r"tied noise share: expected a number from 0 to 1, found 1.5"):
        gaussian((6, 1, 4), "cpu", None, tied=3, share=1.5)


@pytest.mark.parametrize(("sampler", "eta"), [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0), ("dpmpp2m", 0.0)])
def test_tied_rows_share_every_noise_draw(sampler, eta):
    """With a denoiser that ignores the condition, tied rows end identical under every sampler (x_T and, for
    ddpm and ddim with eta > 0, each step's noise are shared); rows of different groups differ."""
    d = GaussianDiffusion(DiffusionConfig(timesteps=100, prediction="eps"))
    x = d.sample(exact_denoiser(d), (6, 1, 4), sampler=sampler, steps=10, eta=eta,
                 generator=torch.Generator().manual_seed(0), tied=3)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2]) and torch.equal(x[3], x[5])
    assert not torch.allclose(x[0], x[3])
    part = d.sample(exact_denoiser(d), (6, 1, 4), sampler=sampler, steps=10, eta=eta,
                    generator=torch.Generator().manual_seed(0), tied=3, share=0.5)
    assert not torch.allclose(part[0], part[1])  # a share of the draw in common: related, not identical
