"""GaussianDiffusion: schedules, forward process, targets, conversions, Min-SNR loss, config keys."""

from __future__ import annotations

import math

import pytest
import torch

from data.schema import ConfigError
from training.config import DiffusionConfig, load_config
from training.diffusion import GaussianDiffusion

PREDICTIONS = ("eps", "v", "x0")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make(**kw) -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig(**kw))


# --- schedules -----------------------------------------------------------------------------


@pytest.mark.parametrize("T,s", [(1000, 0.008), (50, 0.008), (1000, 0.02)])
def test_cosine_alpha_bar_endpoints(T, s):
    def f(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    d = make(timesteps=T, cosine_s=s)
    abar0 = f(1 / T) / f(0)  # first noisy step, Nichol & Dhariwal eq. 17
    # the last beta is clipped to 0.999, so alpha_bar_{T-1} = alpha_bar((T-1)/T) * (1 - 0.999)
    abar_last = f((T - 1) / T) / f(0) * (1 - 0.999)
    assert d.alphas_cumprod[0].item() == pytest.approx(abar0, rel=1e-6)
    assert 0.99 < d.alphas_cumprod[0].item() < 1.0
    assert d.alphas_cumprod[-1].item() == pytest.approx(abar_last, rel=1e-4)
    assert d.betas.max().item() == pytest.approx(0.999)
    assert (d.alphas_cumprod.diff() < 0).all()


def test_cosine_s_is_read():
    assert make(cosine_s=0.02).alphas_cumprod[0] < make(cosine_s=0.008).alphas_cumprod[0]


@pytest.mark.parametrize("T", [1000, 250])
def test_linear_schedule(T):
    d = make(schedule="linear", timesteps=T, beta_start=2e-4, beta_end=0.03)
    scale = 1000 / T
    assert d.betas[0].item() == pytest.approx(2e-4 * scale, rel=1e-5)
    assert d.betas[-1].item() == pytest.approx(0.03 * scale, rel=1e-5)
    expected = math.prod(1 - (2e-4 + (0.03 - 2e-4) * i / (T - 1)) * scale for i in range(T))
    assert d.alphas_cumprod[-1].item() == pytest.approx(expected, rel=1e-4)


def test_buffers_are_float32_from_float64():
    d = make()
    for name in ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "snr"):
        assert getattr(d, name).dtype == torch.float32 and getattr(d, name).shape == (1000,)
    # sigma_0 = sqrt(1 - alpha_bar_0) computed in float64 (float32 1 - alpha_bar_0 would lose ~3 digits)
    T, s = 1000, 0.008
    f = [math.cos((u + s) / (1 + s) * math.pi / 2) ** 2 for u in (0, 1 / T)]
    assert d.sqrt_one_minus_alphas_cumprod[0].item() == pytest.approx(math.sqrt(1 - f[1] / f[0]), rel=1e-6)


# --- forward process and parameterizations -------------------------------------------------


def cosine_alpha_bar64(T: int, s: float = 0.008) -> torch.Tensor:
    """alpha_bar_t, t = 0..T-1, in float64 straight from Nichol & Dhariwal's f (betas clipped at 0.999)."""
    f = [math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2 for u in range(T + 1)]
    betas = [min(1 - f[i + 1] / f[i], 0.999) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float64).neg().add(1).cumprod(0)


def test_q_sample_closed_form():
    d = make()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 1, 8, generator=g), torch.randn(3, 1, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    abar = cosine_alpha_bar64(1000)[t].view(3, 1, 1)
    expected = abar.sqrt() * x0.double() + (1 - abar).sqrt() * eps.double()
    torch.testing.assert_close(d.q_sample(x0, t, eps).double(), expected, rtol=1e-5, atol=1e-6)


def test_v_target_pinned():
    # alpha_bar = 1/2 (pick a schedule index, then compare against the index's own value)
    d = make(prediction="v")
    t = torch.tensor([int((d.alphas_cumprod - 0.5).abs().argmin())])
    a = d.alphas_cumprod[t].item()
    x0, eps = torch.ones(1, 1, 1), torch.full((1, 1, 1), 2.0)
    assert d.target(x0, eps, t).item() == pytest.approx(math.sqrt(a) * 2 - math.sqrt(1 - a) * 1, rel=1e-6)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_target_and_predict_x0_eps_round_trip(prediction):
    d = make(prediction=prediction)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 1, 50, generator=g), torch.randn(6, 1, 50, generator=g)
    # eps-prediction is ill-conditioned at t = T-1 (x0 = (x_t - sigma eps)/alpha, alpha = 5e-5)
    last = 999 if prediction != "eps" else 900
    t = torch.tensor([0, 1, 250, 500, 750, last])
    x_t = d.q_sample(x0, t, eps)
    x0_hat, eps_hat = d.predict_x0_eps(d.target(x0, eps, t), x_t, t)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-3, atol=2e-3)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-3, atol=2e-3)


def test_v_eps_x0_identities():
    d = make(prediction="v")
    x0, eps = torch.randn(4, 1, 10), torch.randn(4, 1, 10)
    t = torch.tensor([3, 100, 600, 990])
    a = d.sqrt_alphas_cumprod[t].view(-1, 1, 1)
    s = d.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1)
    v, x_t = d.target(x0, eps, t), d.q_sample(x0, t, eps)
    torch.testing.assert_close(a * x_t - s * v, x0, rtol=1e-4, atol=1e-5)  # Salimans & Ho, sec. 4
    torch.testing.assert_close(s * x_t + a * v, eps, rtol=1e-4, atol=1e-5)


# --- Min-SNR loss --------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_min_snr_weight_closed_form(prediction):
    d = make(prediction=prediction, min_snr_gamma=5.0)
    t = torch.tensor([0, 300, 600, 900])
    # SNR = alpha^2 / sigma^2 from the two square-root buffers (1 - alpha_bar in float32 loses digits at t=0)
    snr = (d.sqrt_alphas_cumprod.double()[t] / d.sqrt_one_minus_alphas_cumprod.double()[t]) ** 2
    base = torch.minimum(snr, torch.full_like(snr, 5.0))
    expected = {"x0": base, "eps": base / snr, "v": base / (snr + 1)}[prediction]
    torch.testing.assert_close(d.loss_weight(t).double(), expected, rtol=1e-5, atol=0)
    # the loss: per-sample MSE times the weight, mean over the batch
    x0, eps = torch.zeros(4, 1, 10), torch.zeros(4, 1, 10)
    delta = torch.tensor([0.5, 1.0, 2.0, 3.0]).view(4, 1, 1)
    pred = d.target(x0, eps, t) + delta
    expected_loss = (expected * delta.flatten().double() ** 2).mean()
    assert d.signal_loss(pred, x0, eps, t).item() == pytest.approx(expected_loss.item(), rel=1e-5)


def test_min_snr_is_the_same_x0_weighting_in_every_parameterization():
    """An x0 error Delta costs min(SNR, gamma) * mean(Delta^2) whatever the network predicts."""
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(5, 1, 20, generator=g), torch.randn(5, 1, 20, generator=g)
    delta = 0.1 * torch.randn(5, 1, 20, generator=g)
    t = torch.tensor([0, 50, 400, 700, 950])
    losses = {}
    for p in PREDICTIONS:
        d = make(prediction=p, min_snr_gamma=5.0)
        x_t = d.q_sample(x0, t, eps)
        x0_hat = x0 + delta
        a, s = d.sqrt_alphas_cumprod[t].view(-1, 1, 1), d.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1)
        eps_hat = (x_t - a * x0_hat) / s
        out = {"x0": x0_hat, "eps": eps_hat, "v": a * eps_hat - s * x0_hat}[p]
        losses[p] = d.signal_loss(out, x0, eps, t).item()
    snr = d.snr[t].double()
    expected = (snr.clamp(max=5.0) * delta.double().pow(2).flatten(1).mean(1)).mean().item()
    for p in PREDICTIONS:
        assert losses[p] == pytest.approx(expected, rel=1e-3), p


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_gamma_zero_is_plain_mse(prediction):
    d = make(prediction=prediction, min_snr_gamma=0.0)
    x0, eps = torch.randn(3, 1, 7), torch.randn(3, 1, 7)
    t = torch.tensor([1, 500, 998])
    pred = torch.randn(3, 1, 7)
    expected = (pred - d.target(x0, eps, t)).pow(2).mean()
    assert d.signal_loss(pred, x0, eps, t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_signal_loss_sample_weights_are_a_weighted_mean():
    """loss.signal_class_weights' mean: sum(w l) / sum(w); equal weights give the plain mean, a zero weight
    drops its row, and doubling every weight changes nothing."""
    d = make(min_snr_gamma=0.0)
    x0, eps, pred = torch.randn(3, 1, 7), torch.randn(3, 1, 7), torch.randn(3, 1, 7)
    t = torch.tensor([1, 500, 998])
    per_row = (pred - d.target(x0, eps, t)).pow(2).flatten(1).mean(1)
    plain = d.signal_loss(pred, x0, eps, t).item()
    assert d.signal_loss(pred, x0, eps, t, torch.full((3,), 4.0)).item() == pytest.approx(plain, rel=1e-6)
    w = torch.tensor([2.0, 0.0, 6.0])
    expected = ((2 * per_row[0] + 6 * per_row[2]) / 8).item()
    assert d.signal_loss(pred, x0, eps, t, w).item() == pytest.approx(expected, rel=1e-6)
    assert d.signal_loss(pred, x0, eps, t, 2 * w).item() == pytest.approx(expected, rel=1e-6)


def test_signal_loss_rejects_wrong_shape():
    d = make()
    with pytest.raises(ValueError, match=r"signal prediction: expected shape \(2, 1, 5\), found \(2, 5\)"):
        d.signal_loss(torch.zeros(2, 5), torch.zeros(2, 1, 5), torch.zeros(2, 1, 5), torch.tensor([0, 1]))


# --- timesteps and config ------------------------------------------------------------------


def test_sample_timesteps_uniform_and_seeded():
    d = make(timesteps=10, sampling_steps=10)
    t = d.sample_timesteps(20000, "cpu", torch.Generator().manual_seed(3))
    assert t.dtype == torch.int64 and t.shape == (20000,)
    assert t.min().item() == 0 and t.max().item() == 9
    counts = torch.bincount(t, minlength=10).double() / 20000
    assert (counts - 0.1).abs().max().item() < 0.01
    again = d.sample_timesteps(20000, "cpu", torch.Generator().manual_seed(3))
    assert torch.equal(t, again)


def test_config_keys_validated():
    with pytest.raises(ConfigError, match="diffusion.sampler"):
        load_config(None, ["diffusion.sampler=euler"])
    with pytest.raises(ConfigError, match=r"diffusion.sampling_steps: expected <= diffusion.timesteps \(100\)"):
        load_config(None, ["diffusion.timesteps=100", "diffusion.sampling_steps=200"])
    with pytest.raises(ConfigError, match="diffusion.beta_start: expected < diffusion.beta_end"):
        load_config(None, ["diffusion.schedule=linear", "diffusion.beta_start=0.05"])
    cfg = load_config(None, ["diffusion.sampler=dpmpp2m", "diffusion.sampling_steps=20", "diffusion.clip_x0=3"])
    kw = GaussianDiffusion(cfg.diffusion).sampling_kwargs()
    assert kw == {"sampler": "dpmpp2m", "steps": 20, "eta": 0.0, "guidance": 1.0, "clip": 3.0, "lowpass_hz": 0.0,
                  "guidance_sigma_min": 0.0}
    with pytest.raises(ConfigError, match="diffusion.lowpass_hz"):
        load_config(None, ["diffusion.lowpass_hz=10000"])  # the Nyquist frequency of 20 kHz sampling
    assert GaussianDiffusion(DiffusionConfig()).sampling_kwargs()["clip"] is None  # no clamping by default


def test_config_eta_is_the_sampling_default():
    """diffusion.eta reaches the sampler: eta = 1 adds the DDPM posterior noise to DDIM's steps."""
    def zero(x_t, t, drop_cond):
        return torch.zeros_like(x_t)

    out = {}
    for eta in (0.0, 1.0):
        d = make(timesteps=100, sampling_steps=10, eta=eta)
        assert d.sampling_kwargs()["eta"] == eta
        out[eta] = d.sample(zero, (4, 1, 8), generator=torch.Generator().manual_seed(0), **d.sampling_kwargs())
    assert not torch.allclose(out[0.0], out[1.0])


def test_lowpass_hz_filters_the_samples_after_the_last_step():
    """diffusion.lowpass_hz (or the call's lowpass_hz) is the zero-phase low-pass of the finished samples and
    nothing else: the same draw, filtered; 0 leaves the samples as they were."""
    from data.waveform import lowpass_zero_phase

    def noisy(x_t, t, drop_cond):  # eps-ish output with power up to the Nyquist frequency
        return torch.sin(3.0 * x_t) + 0.5 * x_t

    def draw(d, **kw):
        return d.sample(noisy, (3, 1, 200), sampler="ddim", steps=5, eta=1.0,
                        generator=torch.Generator().manual_seed(0), **kw)

    plain, filtered = make(timesteps=100), make(timesteps=100, lowpass_hz=3000.0)
    raw = draw(plain)
    assert torch.equal(draw(filtered, lowpass_hz=0.0), raw)
    want = torch.from_numpy(lowpass_zero_phase(raw.numpy(), 3000.0)).float()
    torch.testing.assert_close(draw(filtered), want)  # the config's cutoff
    torch.testing.assert_close(draw(plain, lowpass_hz=3000.0), want)  # the call's
    def high(x):  # power above 5 kHz (bins of 100 Hz), Hann-windowed against the window's edges
        return torch.fft.rfft(x * torch.hann_window(200, dtype=x.dtype), dim=-1)[..., 50:].abs().pow(2).sum()

    assert high(want) < 1e-3 * high(raw)


def test_guidance_sigma_min_guides_only_the_steps_above_it():
    """diffusion.guidance_sigma_min (or the call's): guidance's second, unconditional evaluation happens at the
    steps whose sigma_t / alpha_t exceeds it and nowhere else; a bound above every step's noise level is the
    conditional model alone (w = 1), 0 guides every step."""
    def counting(calls):
        def denoise(x_t, t, drop_cond):  # the guided branch differs from the plain one
            calls.append((int(t[0]), bool(drop_cond.all())))
            return 0.3 * x_t + torch.where(drop_cond[:, None, None], 0.0, 0.2)
        return denoise

    def draw(d, **kw):
        calls = []
        x = d.sample(counting(calls), (2, 1, 16), sampler="dpmpp2m", steps=8, guidance=3.0,
                     generator=torch.Generator().manual_seed(0), **kw)
        return x, calls

    plain, bounded = make(timesteps=100), make(timesteps=100, guidance_sigma_min=1.0)
    x_all, calls_all = draw(plain)
    x_cut, calls_cut = draw(bounded)
    ratio = {t: plain.level(t).sigma / plain.level(t).alpha for t, _ in calls_all}  # every step's noise level
    guided = sorted({t for t, dropped in calls_cut if dropped})
    assert guided and guided == sorted(t for t in ratio if ratio[t] > 1.0)  # the config's bound
    assert len({t for t, _ in calls_cut}) == len(guided) + sum(r <= 1.0 for r in ratio.values())
    assert sum(dropped for _, dropped in calls_all) == len(ratio)  # 0: every step guided
    assert not torch.equal(x_all, x_cut)
    x_none, calls_none = draw(plain, guidance_sigma_min=1e9)  # the call's bound, above every step
    assert not any(dropped for _, dropped in calls_none)
    x_w1 = plain.sample(counting([]), (2, 1, 16), sampler="dpmpp2m", steps=8, guidance=1.0,
                        generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x_none, x_w1)
