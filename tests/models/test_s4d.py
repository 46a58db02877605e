"""S4D against the discretized system it claims to compute (Gu et al. 2022, S4D-Lin + ZOH)."""

from __future__ import annotations

import math

import pytest
import torch

from models.s4d import S4D

L = 200


def _layer(H: int = 4, N: int = 16, bidirectional: bool = False, seed: int = 0) -> S4D:
    torch.manual_seed(seed)
    return S4D(H, N, bidirectional=bidirectional)


def _recurrence(layer: S4D, u: torch.Tensor, s: int = 0) -> torch.Tensor:
    """y_k = 2 Re(C x_k), x_k = dA x_{k-1} + dB u_k, step by step in float64 from the paper's formulas."""
    k = layer.kernel
    dt = torch.exp(k.log_dt.double())  # (H)
    A = -torch.exp(k.log_A_real.double()) + 1j * k.A_imag.double()  # (H N/2)
    dA = torch.exp(dt[:, None] * A)  # (H N/2)
    dB = (dA - 1) / A  # (H N/2)
    C = torch.view_as_complex(k.C.double())[s]  # (H N/2)
    B_, L_, H = u.shape
    x = torch.zeros(B_, H, A.shape[1], dtype=torch.complex128)
    ys = []
    for step in range(L_):
        x = dA * x + dB * u[:, step, :, None].double()  # (B H N/2)
        ys.append(2 * (C * x).sum(-1).real)  # (B H)
    return torch.stack(ys, dim=1)  # (B L H)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_s4d_lin_initialization():
    layer = _layer(H=3, N=8)
    A_real = -torch.exp(layer.kernel.log_A_real)
    assert torch.allclose(A_real, torch.full((3, 4), -0.5))
    assert torch.allclose(layer.kernel.A_imag, math.pi * torch.arange(4.0).expand(3, 4))
    dt = torch.exp(layer.kernel.log_dt)
    assert dt.min() >= 1e-3 - 1e-9 and dt.max() <= 1e-1 + 1e-9


def test_fft_path_equals_recurrence_causal():
    layer = _layer(H=4, N=16, bidirectional=False)
    u = torch.randn(2, L, 4)
    with torch.no_grad():
        y = layer.convolve(u)  # (B L H)
        ref = _recurrence(layer, u) + u.double() * layer.D.double()
    assert _rel(y, ref) < 1e-5


def test_fft_path_equals_recurrence_bidirectional():
    """The second kernel runs over the reversed signal, one step shifted (lags -1 .. -(L-1))."""
    layer = _layer(H=4, N=16, bidirectional=True, seed=1)
    u = torch.randn(2, L, 4)
    with torch.no_grad():
        y = layer.convolve(u)
        fwd = _recurrence(layer, u, s=0)
        bwd = _recurrence(layer, u.flip(1), s=1).flip(1)  # bwd[t] = sum_{s >= t} k1[s - t] u_s
        bwd = torch.cat([bwd[:, 1:], torch.zeros_like(bwd[:, :1])], dim=1)  # strictly future: s > t
        ref = fwd + bwd + u.double() * layer.D.double()
    assert _rel(y, ref) < 1e-5


def test_unidirectional_layer_is_causal():
    layer = _layer(H=6, N=8, bidirectional=False).eval()
    u = torch.randn(3, L, 6)
    t = 120
    v = u.clone()
    v[:, t + 1 :] += torch.randn_like(v[:, t + 1 :])
    with torch.no_grad():
        y, y2 = layer(u), layer(v)
    assert torch.allclose(y[:, : t + 1], y2[:, : t + 1], atol=1e-5)
    assert not torch.allclose(y[:, t + 1 :], y2[:, t + 1 :], atol=1e-3)


def test_bidirectional_layer_sees_the_future():
    layer = _layer(H=6, N=8, bidirectional=True).eval()
    u = torch.randn(1, L, 6)
    v = u.clone()
    v[:, 150:] += 1.0
    with torch.no_grad():
        assert not torch.allclose(layer(u)[:, :150], layer(v)[:, :150], atol=1e-4)


def test_bf16_autocast_matches_fp32():
    layer = _layer(H=16, N=16, bidirectional=True).eval()
    u = torch.randn(4, L, 16)
    with torch.no_grad():
        ref = layer(u)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv = layer.convolve(u.bfloat16())
            y = layer(u.bfloat16())
    assert conv.dtype == torch.float32  # kernel + FFT ran in float32
    assert y.dtype == torch.bfloat16  # the output mixing ran under autocast
    assert torch.isfinite(y).all()
    assert _rel(y.float(), ref) < 3e-2  # bf16 has an 8-bit mantissa (~4e-3 per rounding)


@pytest.mark.parametrize("name", ["log_dt", "log_A_real", "A_imag"])
def test_ssm_parameters_are_tagged(name):
    layer = S4D(4, 8, lr=5e-4)
    p = getattr(layer.kernel, name)
    assert p._optim == {"lr": 5e-4, "weight_decay": 0.0}
    assert not hasattr(layer.kernel.C, "_optim")


def test_gradients_reach_every_parameter():
    layer = _layer(H=4, N=8, bidirectional=True)
    layer(torch.randn(2, 50, 4)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
