"""S4D: a diagonal state-space layer.

Gu, Goel, Gupta, Ré, "On the Parameterization and Initialization of Diagonal State Space Models"
(NeurIPS 2022). Per channel h the continuous system x'(t) = A x(t) + B u(t), y(t) = C x(t) + D u(t)
has a diagonal complex A (N/2 modes; their conjugates are implied, hence the factor 2 Re below).

- S4D-Lin initialization (Sec. 4.2):  A_n = -1/2 + i pi n,  n = 0 .. N/2-1;  B = 1;  C ~ N(0, 1) complex.
- Zero-order hold (Sec. 3.1):          dA = exp(dt A),  dB = (exp(dt A) - 1) / A * B.
- Vandermonde kernel (Eq. 5):          K_l = 2 Re( sum_n C_n dB_n dA_n^l ),  l = 0 .. L-1.
- Convolution:                          y = K * u + D u, by FFT with n = 2L (no circular wrap-around).

Bidirectional (the denoiser sees the whole signal): two kernels; the second is flipped and shifted
by one so it covers lags -1 .. -(L-1) while the first covers 0 .. L-1.

The kernel and the FFT run in float32 even under bf16 autocast: torch has no bf16 FFT, and the
Vandermonde powers lose all precision in bf16. ``log_dt`` and ``A`` carry ``_optim`` (smaller learning
rate, no weight decay), read by :func:`models.optim.param_groups`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _tag(p: nn.Parameter, lr: float) -> nn.Parameter:
    p._optim = {"lr": lr, "weight_decay": 0.0}
    return p


class S4DKernel(nn.Module):
    """Generates the convolution kernel K of shape (S H L), S = 1 (causal) or 2 (bidirectional)."""

    def __init__(self, H: int, N: int = 64, S: int = 1, dt_min: float = 1e-3, dt_max: float = 1e-1, lr: float = 1e-3):
        super().__init__()
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H)
        C = torch.randn(S, H, N // 2, dtype=torch.cfloat)  # (S H N/2)
        self.C = nn.Parameter(torch.view_as_real(C))  # (S H N/2 2)
        self.log_dt = _tag(nn.Parameter(log_dt), lr)
        self.log_A_real = _tag(nn.Parameter(torch.log(0.5 * torch.ones(H, N // 2))), lr)  # Re A = -1/2
        self.A_imag = _tag(nn.Parameter(math.pi * torch.arange(N // 2).float().repeat(H, 1)), lr)  # Im A = pi n

    def discretize(self) -> tuple[Tensor, Tensor]:
        """ZOH: C dB (S H N/2) and dt A (H N/2), so that dA = exp(dt A)."""
        dt = torch.exp(self.log_dt.float())  # (H)
        A = -torch.exp(self.log_A_real.float()) + 1j * self.A_imag.float()  # (H N/2)
        dtA = A * dt[:, None]  # (H N/2)
        dB = (torch.exp(dtA) - 1.0) / A  # (H N/2), B = 1
        C = torch.view_as_complex(self.C.float())  # (S H N/2)
        return C * dB, dtA

    def forward(self, L: int) -> Tensor:
        CdB, dtA = self.discretize()
        # dA^l = exp(dt A l): the Vandermonde matrix, from the exponent (accurate; no repeated products),
        # as modulus and angle (torch's complex exp is about 2x slower on CPU than real exp + cos/sin).
        steps = torch.arange(L, device=dtA.device, dtype=torch.float32)  # (L) = l
        powers = torch.polar(torch.exp(dtA.real.unsqueeze(-1) * steps), dtA.imag.unsqueeze(-1) * steps)  # (H N/2 L)
        return 2 * torch.einsum("shn,hnl->shl", CdB, powers).real  # (S H L)


class S4D(nn.Module):
    """S4D layer: SSM convolution + D skip, GELU, dropout, GLU output mixing.

    Input and output (B L H), channel-last like the rest of the network.
    """

    def __init__(
        self,
        H: int,
        N: int = 64,
        bidirectional: bool = True,
        dropout: float = 0.0,
        lr: float = 1e-3,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ):
        super().__init__()
        self.H, self.N, self.bidirectional = H, N, bidirectional
        self.kernel = S4DKernel(H, N, S=2 if bidirectional else 1, dt_min=dt_min, dt_max=dt_max, lr=lr)
        self.D = nn.Parameter(torch.randn(H))  # (H)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Sequential(nn.Linear(H, 2 * H), nn.GLU(dim=-1))

    def convolve(self, u: Tensor) -> Tensor:
        """y = K * u + D u in float32, before activation and mixing. u (B L H) -> y (B L H) float32."""
        L = u.shape[1]
        with torch.autocast(device_type=u.device.type, enabled=False):
            u = u.float()
            k = self.kernel(L)  # (S H L)
            if self.bidirectional:
                k_fwd, k_bwd = k[0], k[1]  # (H L) each
                k = nn.functional.pad(k_fwd, (0, L)) + nn.functional.pad(k_bwd.flip(-1), (L, 0))  # (H 2L)
            else:
                k = k[0]  # (H L); rfft pads it to 2L
            u = u.transpose(1, 2)  # (B H L): FFT along the last, contiguous axis
            k_f = torch.fft.rfft(k, n=2 * L)  # (H L+1)
            u_f = torch.fft.rfft(u, n=2 * L)  # (B H L+1)
            y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]  # (B H L)
            y = y + u * self.D.float()[:, None]  # (B H L)
            return y.transpose(1, 2)  # (B L H)

    def forward(self, u: Tensor) -> Tensor:
        y = self.dropout(self.activation(self.convolve(u)))  # (B L H) float32
        return self.output_linear(y)  # (B L H), autocast dtype under autocast
