"""S4D convolution: FFT (what models/s4d.py does) against the recurrence it replaces, at L = 200.

    python bench/s4d.py [--threads 1] [--reps 5] [--batch 32] [--widths 64 128] [--device cpu|cuda]

The S4D layer is a linear recurrence per channel h and mode n (Gu et al. 2022, eq. 2 after ZOH):

    x_k = dA x_{k-1} + dB u_k,      y_k = 2 Re(C x_k) + D u_k

Unrolled, y = K * u + D u with K_l = 2 Re(C dB dA^l): one FFT convolution (models/s4d.py) instead of
L sequential steps. The bidirectional layer adds a second, backward-running recurrence
z_k = dA z_{k+1} + dB u_{k+1} (lags -1 .. -(L-1)). This benchmark times forward+backward of
``S4D.convolve`` against the same map computed by the two recurrences (a Python loop over L, the
way an RNN-mode implementation runs in training), checks they agree, and adds one self-attention
layer of the same width for scale (bench/model.py compares whole blocks).

Prints a table and writes bench/results/s4d.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from bench.common import timed, write_result  # noqa: E402
from data.cli import phase  # noqa: E402
from models.blocks import Attention  # noqa: E402
from models.s4d import S4D  # noqa: E402

L = 200
PROG = "bench/s4d.py"  # the start of its progress lines on stderr


def recurrent_convolve(layer: S4D, u: Tensor) -> Tensor:
    """Same output as ``layer.convolve(u)``, by the recurrences. u (B L H) -> y (B L H) float32."""
    CdB, dtA = layer.kernel.discretize()  # (S H N/2), (H N/2)
    dA = torch.exp(dtA)  # (H N/2)
    dB = (dA - 1.0) / (-torch.exp(layer.kernel.log_A_real.float()) + 1j * layer.kernel.A_imag.float())  # (H N/2)
    C = CdB / dB  # (S H N/2): C itself (discretize folds dB into it)
    u = u.float()
    B_, Lu, H = u.shape
    uc = u.to(torch.cfloat)  # (B L H)
    x = torch.zeros(B_, H, dA.shape[-1], dtype=torch.cfloat, device=u.device)  # (B H N/2)
    ys = []
    for k in range(Lu):  # forward: x_k = dA x_{k-1} + dB u_k
        x = dA * x + dB * uc[:, k, :, None]
        ys.append(2 * torch.einsum("hn,bhn->bh", C[0], x).real)  # (B H)
    y = torch.stack(ys, dim=1)  # (B L H)
    if layer.bidirectional:
        z = torch.zeros_like(x)  # z_{L-1} = 0
        back = [torch.zeros(B_, H, device=u.device)]
        for k in range(Lu - 2, -1, -1):  # backward: z_k = dA z_{k+1} + dB u_{k+1}
            z = dA * z + dB * uc[:, k + 1, :, None]
            back.append(2 * torch.einsum("hn,bhn->bh", C[1], z).real)
        y = y + torch.stack(back[::-1], dim=1)  # (B L H)
    return y + u * layer.D.float()  # (B L H)


def _time_ms(fn, reps: int, device: torch.device) -> float:
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    return 1000 * statistics.median(timed(fn, reps, warmup=1, sync=sync))


def bench_width(H: int, B: int, reps: int, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    layer = S4D(H, 64, bidirectional=True).to(device)
    attn = torch.nn.Sequential(torch.nn.LayerNorm(H), Attention(H, max(1, H // 32), 0.0)).to(device)
    u = torch.randn(B, L, H, device=device, requires_grad=True)
    with torch.no_grad():
        ref, rec = layer.convolve(u), recurrent_convolve(layer, u)
    rel_err = float((ref - rec).norm() / ref.norm())
    cases = {
        "S4D conv, FFT (models/s4d.py)": lambda: layer.convolve(u).square().mean().backward(),
        "S4D conv, recurrence (2 scans)": lambda: recurrent_convolve(layer, u).square().mean().backward(),
        "self-attention layer": lambda: attn(u).square().mean().backward(),
    }
    rows = []
    for name, fn in cases.items():
        rows.append({"layer": name, "width": H, "batch": B, "L": L, "fwd_bwd_ms": _time_ms(fn, reps, device)})
    fft = rows[0]["fwd_bwd_ms"]
    for r in rows:
        r["vs_fft"] = r["fwd_bwd_ms"] / fft
        r["rel_err_vs_fft"] = rel_err if "recurrence" in r["layer"] else None
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "s4d.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for H in args.widths:  # the recurrence is a Python loop over L: a progress line per width on stderr
        with phase(PROG, f"width {H}: FFT, recurrence and attention, {args.reps} timed calls each"):
            rows += bench_width(H, args.batch, args.reps, device)

    print(f"{'layer':<32}{'H':>5}{'B':>5}{'fwd+bwd ms':>12}{'x FFT':>8}{'rel. err':>10}")
    for r in rows:
        err = f"{r['rel_err_vs_fft']:.1e}" if r["rel_err_vs_fft"] is not None else ""
        print(f"{r['layer']:<32}{r['width']:>5}{r['batch']:>5}{r['fwd_bwd_ms']:>12.2f}{r['vs_fft']:>8.1f}{err:>10}")
    result = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads,
                    "device": str(device), "note": "shared, loaded CPU: provisional numbers"},
        "rows": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
