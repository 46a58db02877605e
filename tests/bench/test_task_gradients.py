"""bench/task_gradients.py: the gradient algebra on a toy module, then the command on a tiny run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.task_gradients import (
    component_gradients,
    cosine_matrix,
    main,
    progress_shares,
    shares,
    t_interval,
    value_weights,
)
from tests.progress import finished_phases
from training.components import COMPONENTS


class Toy(nn.Module):
    """A linear trunk read by two linear heads: every gradient has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(3, 4)
        self.a, self.b = nn.Linear(4, 1), nn.Linear(4, 1)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        la, lb = self.a(h).square().mean(), self.b(h).square().mean()
        return {"a": la, "a_again": la, "minus_a": -la, "b": lb, "detached": la.detach()}


def toy_gradients():
    toy = Toy()
    losses = toy.losses(torch.randn(8, 3, generator=torch.Generator().manual_seed(1)))
    heads = {"a": list(toy.a.parameters()), "a_again": list(toy.a.parameters()), "b": list(toy.b.parameters())}
    return toy, losses, component_gradients(losses, list(toy.trunk.parameters()), heads)


def test_each_loss_gets_its_own_gradient_on_the_trunk_and_head():
    toy, losses, (G, head_norms) = toy_gradients()
    assert G.shape == (5, sum(p.numel() for p in toy.trunk.parameters()))
    toy.zero_grad()
    losses["b"].backward(retain_graph=True)
    expected = torch.cat([p.grad.reshape(-1) for p in toy.trunk.parameters()])
    torch.testing.assert_close(G[3], expected)
    torch.testing.assert_close(head_norms[3], torch.cat([p.grad.reshape(-1) for p in toy.b.parameters()]).norm())
    assert torch.equal(G[4], torch.zeros_like(G[4]))  # no graph: zeros, not an error
    assert math.isnan(head_norms[2]) and math.isnan(head_norms[4])  # no head named for them


def test_cosines_of_the_same_opposite_and_unrelated_losses():
    _, _, (G, _) = toy_gradients()
    C = cosine_matrix(G)
    assert C[0, 1] == pytest.approx(1.0) and C[0, 2] == pytest.approx(-1.0)
    expected = float(G[0].double() @ G[3].double() / (G[0].double().norm() * G[3].double().norm()))
    assert C[0, 3] == pytest.approx(expected) and abs(expected) < 0.999
    assert torch.isnan(C[4]).all() and torch.isnan(C[:, 4]).all()  # a zero gradient has no direction


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e6])
def test_cosine_matrix_is_symmetric_with_ones_on_the_diagonal(scale):
    G = scale * torch.randn(6, 50, generator=torch.Generator().manual_seed(2))
    C = cosine_matrix(G)
    assert torch.equal(C, C.T) and torch.equal(C.diagonal(), torch.ones(6, dtype=torch.float64))
    assert (C.abs() <= 1).all()


def test_shares_and_progress_shares_sum_to_one():
    G = torch.randn(6, 50, generator=torch.Generator().manual_seed(3))
    norms = G.double().norm(dim=1)
    assert float(shares(norms).sum()) == pytest.approx(1.0)
    w = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])
    p = progress_shares(G, w)
    assert float(p.sum()) == pytest.approx(1.0)
    g = (w[:, None] * G).sum(0).double()
    assert float(p[4]) == pytest.approx(float(3.0 * G[4].double() @ g / g.dot(g)))
    # two tasks pulling exactly against each other: the stronger one carries more than the whole step
    q = progress_shares(torch.stack([2 * G[0], -G[0]]), torch.ones(2))
    assert q.tolist() == pytest.approx([2.0, -1.0])


def test_t_interval_skips_the_batches_without_a_direction():
    est = t_interval([1.0, 2.0, 3.0, float("nan")])
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2} x s (= 1) / sqrt(n)
    assert est["mean"] == 2.0 and est["n"] == 3
    assert est["ci"] == pytest.approx([2 - half, 2 + half])
    assert t_interval([float("nan")]) == {"mean": None, "ci": None, "n": 0}


def test_value_weights_read_the_balancers_objective():
    from training.balancers import BalancerConfig, build_balancer

    cfg = BalancerConfig(strategy="fixed", weights={c: float(i + 1) for i, c in enumerate(COMPONENTS)})
    losses = {c: torch.tensor(0.5 + i) for i, c in enumerate(COMPONENTS)}
    assert value_weights(build_balancer(cfg), losses).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert value_weights(build_balancer(BalancerConfig(strategy="gradnorm")), losses) is None


# --------------------------------------------------------------------------------------------
# the command


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.runs import tiny_config, train_run

    root = tmp_path_factory.mktemp("tg_run")
    cfg = tiny_config(root, "training.epochs=1", "model.base_channels=4", "data.synthetic.patients=6")
    train_run(cfg, root / "run")
    return root / "run"


def test_command_writes_symmetric_cosines_and_shares_that_sum_to_one(tiny_run, tmp_path, capsys):
    out, doc = tmp_path / "tg.json", tmp_path / "results.md"
    doc.write_text("# Results\n\nkept\n", encoding="utf-8")
    args = ["--run", str(tiny_run), "--batches", "3", "--batch-size", "8", "--out", str(out), "--doc", str(doc)]
    assert main(args) == 0
    r = json.loads(out.read_text(encoding="utf-8"))["runs"][0]
    assert r["batches"] == 3 and r["strategy"] == "fixed" and r["weights"] == "model"
    C = np.array([[r["cosine"][f"{a}|{b}"]["mean"] for b in COMPONENTS] for a in COMPONENTS], dtype=float)
    finite = np.isfinite(C)
    assert np.array_equal(finite, finite.T) and np.allclose(C[finite], C.T[finite])
    assert np.allclose(np.diag(C)[np.isfinite(np.diag(C))], 1.0)
    for key in ("share", "weighted_share", "progress"):
        assert sum(r["tasks"][c][key]["mean"] for c in COMPONENTS) == pytest.approx(1.0)
    frac = r["cosine"]["signal|class"]["negative_fraction"]
    assert 0 <= frac <= 1 and 3 * frac == pytest.approx(round(3 * frac))  # a count of the 3 batches
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Results\n\nkept\n") and "<!-- task-gradients: begin -->" in text
    assert "| PeakLat |" in text
    printed = capsys.readouterr()  # issue 29: progress on stderr, the table on stdout
    assert f"{tiny_run}: 3 batches of 8 (train split)" in finished_phases(printed.err, "bench/task_gradients.py")
    assert "| PeakLat |" in printed.out and "bench/task_gradients.py:" not in printed.out


def test_bad_run_is_one_line(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "nope"), "--out", str(tmp_path / "x.json"), "--no-doc"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: run directory '{tmp_path / 'nope'}': not found"
    assert not (tmp_path / "x.json").exists()


def test_too_many_batches_are_refused_naming_the_flag(tiny_run, tmp_path, capsys):
    assert main(["--run", str(tiny_run), "--batches", "10000", "--out", str(tmp_path / "x.json"), "--no-doc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --batches 10000: run ") and "Traceback" not in err and err.count("\n") == 1


def test_ema_weights_give_other_gradients_than_the_training_weights(tiny_run, tmp_path):
    norms = {}
    for weights in ("model", "ema"):
        out = tmp_path / f"{weights}.json"
        assert main(["--run", str(tiny_run), "--batches", "2", "--batch-size", "8", "--weights", weights,
                     "--out", str(out), "--no-doc"]) == 0
        r = json.loads(out.read_text(encoding="utf-8"))["runs"][0]
        assert r["weights"] == weights
        norms[weights] = [r["tasks"][c]["norm"]["mean"] for c in COMPONENTS]
    assert norms["model"] != norms["ema"]  # same batches and noise (same seed): only the weights differ
