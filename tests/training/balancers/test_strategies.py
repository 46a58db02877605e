"""Each strategy against its paper's formula, on small fixed inputs (values derived here)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from training.balancers import BalanceContext, BalancerConfig, build_balancer
from training.balancers.gradnorm import gradnorm_weight_grad
from training.balancers.jacobian import build_aggregator

NAMES = ["a", "b", "c"]


def cfg_for(strategy: str, **blocks: dict) -> BalancerConfig:
    cfg = BalancerConfig(strategy=strategy, weights={"a": 1.0, "b": 2.0, "c": 0.5})
    for block, values in blocks.items():
        for k, v in values.items():
            setattr(getattr(cfg, block), k, v)
    return cfg


def uniform(cfg: BalancerConfig) -> BalancerConfig:
    """The paper's setting: no prior (weights all 1)."""
    cfg.weights = dict.fromkeys(NAMES, 1.0)
    return cfg


def leaf_losses(values) -> dict[str, torch.Tensor]:
    return {n: torch.tensor(float(v), requires_grad=True) for n, v in zip(NAMES, values, strict=True)}


# -- fixed ---------------------------------------------------------------------------------------


def test_fixed_is_the_weighted_sum():
    b = build_balancer(cfg_for("fixed"), NAMES)
    objective, weighted = b.combine(leaf_losses([1.0, 3.0, 8.0]))
    assert objective.item() == pytest.approx(1 * 1 + 2 * 3 + 0.5 * 8)
    assert weighted.item() == objective.item()
    assert b.get_loss_weights() == [1.0, 2.0, 0.5]


# -- scale_norm ----------------------------------------------------------------------------------


def test_scale_norm_warmup_average_then_momentum_and_gradient_kept():
    b = build_balancer(cfg_for("scale_norm", scale_norm={"warmup_steps": 2, "momentum": 0.9}), NAMES)
    b.combine(leaf_losses([2.0, 2.0, 2.0]))
    b.combine(leaf_losses([4.0, 6.0, 2.0]))  # warm-up: plain average
    m = torch.tensor([3.0, 4.0, 2.0])
    assert torch.allclose(b.m, m)
    losses = leaf_losses([10.0, 1.0, 2.0])
    objective, _ = b.combine(losses)  # third observation: momentum
    m = 0.9 * m + 0.1 * torch.tensor([10.0, 1.0, 2.0])
    c = torch.tensor([1.0, 2.0, 0.5])
    assert torch.allclose(b.m, m)
    assert objective.item() == pytest.approx(float((c * torch.tensor([10.0, 1.0, 2.0]) / m).sum()), rel=1e-6)
    objective.backward()
    for i, n in enumerate(NAMES):  # d objective / d L_i = c_i / m_i: the gradient is rescaled, not dropped
        assert losses[n].grad.item() == pytest.approx(float(c[i] / m[i]), rel=1e-6)
    assert b.get_loss_weights() == pytest.approx((c / m).tolist(), rel=1e-6)


def test_scale_norm_batch_statistic_keeps_the_gradient():
    # Seed 001's "fix 4" divided Python floats: the result carried no gradient at all.
    b = build_balancer(cfg_for("scale_norm", scale_norm={"statistic": "batch"}), NAMES)
    losses = leaf_losses([10.0, 0.1, 4.0])
    objective, _ = b.combine(losses)
    assert objective.item() == pytest.approx(1.0 + 2.0 + 0.5)  # each term is worth its weight
    objective.backward()
    for n, v, c in zip(NAMES, [10.0, 0.1, 4.0], [1.0, 2.0, 0.5], strict=True):
        assert losses[n].grad.item() == pytest.approx(c / v, rel=1e-6)  # c * d log L


def test_scale_norm_sqrt_output_correction():
    block = {"sqrt_output_correction": True, "output_elements": {"a": 200, "b": 5, "c": 1}}
    b = build_balancer(cfg_for("scale_norm", scale_norm=block), NAMES)
    b.combine(leaf_losses([2.0, 2.0, 2.0]))
    expected = [1.0 * math.sqrt(200) / 2, 2.0 * math.sqrt(5) / 2, 0.5 / 2]
    assert b.get_loss_weights() == pytest.approx(expected, rel=1e-6)
    missing = cfg_for("scale_norm", scale_norm={"sqrt_output_correction": True, "output_elements": {"a": 1}})
    with pytest.raises(ValueError, match=r"expected scale_norm.output_elements for every component, found none"):
        build_balancer(missing, NAMES)


# -- gradnorm ------------------------------------------------------------------------------------


def test_gradnorm_weight_gradient_matches_the_paper_on_three_tasks():
    w = torch.tensor([0.5, 1.0, 1.5])
    grad_norms = torch.tensor([2.0, 1.0, 4.0])  # ||grad_W L_i||
    ratios = torch.tensor([0.9, 0.5, 0.7])  # L_i(t) / L_i(0)
    alpha = 1.5
    # Paper, eq. 2: L_grad = sum_i |G_i - sg(G_bar r_i^alpha)|, G_i = ||grad_W w_i L_i|| = w_i n_i.
    w_var = w.clone().requires_grad_(True)
    G = w_var * grad_norms
    r = ratios / ratios.mean()
    target = (G.mean() * r**alpha).detach()
    (G - target).abs().sum().backward()
    assert torch.allclose(gradnorm_weight_grad(w, grad_norms, ratios, alpha), w_var.grad)
    # By hand for task 0: G = [1, 1, 6], G_bar = 8/3, r_0 = 0.9/0.7 -> target_0 = 3.886 > 1: gradient -n_0.
    assert w_var.grad[0].item() == pytest.approx(-2.0)


def test_gradnorm_step_renormalizes_and_moves_toward_the_slow_task():
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(2, 3))
    b = build_balancer(cfg_for("gradnorm", gradnorm={"lr": 0.1}), NAMES)
    x = torch.randn(8, 3)
    scales = torch.tensor([1.0, 1.0, 1.0])
    for step in range(2):
        f = x @ W.T  # [8,2]
        losses = {n: scales[i] * f[:, 0].pow(2).mean() + 0.1 * i * f[:, 1].pow(2).mean() for i, n in enumerate(NAMES)}
        if step == 1:  # task a got worse relative to its start: the slowest learner
            losses = {n: v * (3.0 if n == "a" else 1.0) for n, v in losses.items()}
        b.backward(losses, BalanceContext(last_shared_params=[W]))
        b.after_optimizer_step()
        W.grad = None
    w = b.weights_tensor()
    assert w.sum().item() == pytest.approx(3.0, rel=1e-6)
    assert (w > 0).all()
    w0 = torch.tensor([1.0, 2.0, 0.5]) * 3 / 3.5
    assert w[0] > w0[0]  # the lagging task gained weight


def test_gradnorm_without_shared_params_is_a_clear_error():
    b = build_balancer(cfg_for("gradnorm"), NAMES)
    with pytest.raises(ValueError, match=r"expected BalanceContext.last_shared_params for gradnorm"):
        b.backward(leaf_losses([1, 2, 3]), BalanceContext())


# -- uncertainty ---------------------------------------------------------------------------------


def test_uncertainty_optimum_is_log_L_and_objective_may_be_negative_under_log():
    b = build_balancer(cfg_for("uncertainty"), NAMES)
    L = torch.tensor([0.05, 0.2, 3.0])
    with torch.no_grad():
        b.s.copy_(torch.log(L))  # s* = log L
    objective, weighted = b.combine({n: L[i] for i, n in enumerate(NAMES)})
    objective.backward()
    assert torch.allclose(b.s.grad, torch.zeros(3), atol=1e-6)  # stationary at s* = log L
    assert objective.item() == pytest.approx(float((0.5 * (1 + torch.log(L))).sum()), rel=1e-6)
    assert objective.item() < 0 and b.can_be_negative  # a legitimate NLL below zero, flagged as such
    assert weighted.item() == pytest.approx(3.0, rel=1e-6)  # sum exp(-s) L = K at the optimum
    assert b.get_loss_weights() == pytest.approx((1 / L).tolist(), rel=1e-5)  # precisions exp(-s)


def test_uncertainty_log1p_stays_nonnegative_with_its_own_optimum():
    b = build_balancer(cfg_for("uncertainty", uncertainty={"regularizer": "log1p"}), NAMES)
    assert not b.can_be_negative
    sigma2 = torch.tensor([0.01, 0.5, 4.0])
    L = 2 * sigma2**2 / (1 + sigma2)  # d/ds [1/2 e^-s L + log(1 + e^s)] = 0  <=>  L = 2 sigma^4 / (1 + sigma^2)
    with torch.no_grad():
        b.s.copy_(torch.log(sigma2))
    objective, _ = b.combine({n: L[i] for i, n in enumerate(NAMES)})
    objective.backward()
    assert torch.allclose(b.s.grad, torch.zeros(3), atol=1e-6)
    for s in (-30.0, -3.0, 0.0, 5.0):
        with torch.no_grad():
            b.s.fill_(s)
        assert b.combine(leaf_losses([0.0, 1e-6, 2.0]))[0].item() >= 0


def test_uncertainty_init_and_trainable_parameters():
    b = build_balancer(cfg_for("uncertainty", uncertainty={"init_log_var": 1.0}), NAMES)
    assert b.trainable_parameters() == [b.s]
    # initial precision = config weight * exp(-init_log_var)
    assert b.get_loss_weights() == pytest.approx([math.exp(-1) * w for w in (1.0, 2.0, 0.5)], rel=1e-6)


# -- dwa -----------------------------------------------------------------------------------------


def test_dwa_weights_from_two_epoch_means():
    b = build_balancer(uniform(cfg_for("dwa", dwa={"normalize": "none"})), NAMES)  # the paper's raw losses
    e1, e2 = [4.0, 2.0, 1.0], [2.0, 1.8, 1.0]
    b.on_epoch_end(1, dict(zip(NAMES, e1, strict=True)))
    assert b.get_loss_weights() == [1.0, 1.0, 1.0]  # uniform for the first two epochs
    b.on_epoch_end(2, dict(zip(NAMES, e2, strict=True)))
    r = torch.tensor(e2) / torch.tensor(e1)
    expected = 3 * torch.exp(r / 2.0) / torch.exp(r / 2.0).sum()  # T = 2
    assert b.get_loss_weights() == pytest.approx(expected.tolist(), rel=1e-6)
    assert sum(b.get_loss_weights()) == pytest.approx(3.0)
    assert b.get_loss_weights()[2] > b.get_loss_weights()[0]  # the stalled task gains weight


def test_dwa_normalize_initial_divides_by_first_loss():
    b = build_balancer(uniform(cfg_for("dwa")), NAMES)  # normalize: initial is the default
    L0 = torch.tensor([100.0, 0.01, 1.0])
    objective, _ = b.combine(leaf_losses(L0.tolist()))
    inv = 1 / L0
    w = 3 * inv / inv.sum()  # uniform lambda: w_i = K (1/L_i(0)) / sum_j 1/L_j(0)
    assert b.get_loss_weights() == pytest.approx(w.tolist(), rel=1e-6)
    assert objective.item() == pytest.approx(float((w * L0).sum()), rel=1e-6)  # equal contributions
    # later epochs: the paper's lambda from the rates (L_i(0) cancels in them), over L_i(0), sum K
    e1, e2 = [80.0, 0.008, 0.9], [40.0, 0.0076, 0.9]
    b.on_epoch_end(1, dict(zip(NAMES, e1, strict=True)))
    b.on_epoch_end(2, dict(zip(NAMES, e2, strict=True)))
    r = torch.tensor(e2) / torch.tensor(e1)
    lam = 3 * torch.softmax(r / 2.0, dim=0)
    w = 3 * (lam / L0) / (lam / L0).sum()
    assert b.get_loss_weights() == pytest.approx(w.tolist(), rel=1e-5)
    assert sum(b.get_loss_weights()) == pytest.approx(3.0)


# -- equal_init, equal_init_ema, ema -------------------------------------------------------------


def test_equal_init_equalizes_after_epoch_one_then_stays(caplog):
    b = build_balancer(cfg_for("equal_init"), NAMES)
    with caplog.at_level(logging.INFO, logger="abr.balancer"):
        b.on_epoch_end(1, {"a": 1e-3, "b": 0.5, "c": 20.0})
    w = [1.0 / (1e-3 + 1e-8), 2.0 / (0.5 + 1e-8), 0.5 / (20.0 + 1e-8)]  # w0 / (L + eps): w_i L_i = w0_i
    assert b.get_loss_weights() == pytest.approx(w, rel=1e-6)
    assert "a: loss=1.000e-03, weight=1.000e+03, weighted=1.000e+00" in caplog.text
    b.on_epoch_end(2, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert b.get_loss_weights() == pytest.approx(w, rel=1e-6)


def test_equal_init_ema_and_ema_follow_the_moving_average():
    blocks = {"inverse_loss": {"ema_alpha": 0.8, "update_frequency": 2, "min_weight": 0.1, "max_weight": 50.0}}
    e1, e2, e3, e4 = ({"a": 1e-3, "b": 0.5, "c": 20.0}, {"a": 0.01, "b": 0.4, "c": 10.0},
                      {"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 0.5, "b": 0.5, "c": 0.5})
    w0 = torch.tensor([1.0, 2.0, 0.5])

    def target(e):
        return (w0 / (torch.tensor([e[n] for n in NAMES]) + 1e-8)).clamp(0.1, 50.0)

    b = build_balancer(cfg_for("equal_init_ema", **blocks), NAMES)
    b.on_epoch_end(1, e1)
    w = target(e1)
    assert b.get_loss_weights() == pytest.approx(w.tolist(), rel=1e-6)
    assert max(b.get_loss_weights()) == 50.0  # clamped at max_weight
    b.on_epoch_end(2, e2)  # 2 % update_frequency == 0: update
    w = 0.8 * w + 0.2 * target(e2)
    assert b.get_loss_weights() == pytest.approx(w.tolist(), rel=1e-6)
    b.on_epoch_end(3, e3)  # not an update epoch
    assert b.get_loss_weights() == pytest.approx(w.tolist(), rel=1e-6)

    e = build_balancer(cfg_for("ema", **blocks), NAMES)
    e.on_epoch_end(1, e1)  # 1 % 2 != 0: ema keeps the config weights (no equalization)
    assert e.get_loss_weights() == pytest.approx(w0.tolist())
    e.on_epoch_end(2, e2)
    assert e.get_loss_weights() == pytest.approx((0.8 * w0 + 0.2 * target(e2)).tolist(), rel=1e-6)
    e.on_epoch_end(4, e4)
    w_ema = (0.8 * (0.8 * w0 + 0.2 * target(e2)) + 0.2 * target(e4)).clamp(0.1, 50.0)
    assert e.get_loss_weights() == pytest.approx(w_ema.tolist(), rel=1e-6)


def test_inverse_loss_config_rejects_inverted_clamps():
    from data.schema import ConfigError, from_dict
    from training.balancers.config import InverseLossConfig

    with pytest.raises(ConfigError, match=r"expected min_weight <= max_weight, found 10.0 > 1.0"):
        from_dict(InverseLossConfig, {"min_weight": 10.0, "max_weight": 1.0})


# -- famo ----------------------------------------------------------------------------------------


def test_famo_weights_and_logit_update_follow_the_paper():
    b = build_balancer(cfg_for("famo", famo={"lr": 0.1, "gamma": 0.0}), NAMES)
    xi0 = b.xi.detach().clone()
    z = b.z().detach()
    assert torch.allclose(z, torch.tensor([1.0, 2.0, 0.5]) / 3.5)  # z starts proportional to the weights
    L1 = torch.tensor([1.0, 4.0, 0.5])
    losses = {n: L1[i].clone().requires_grad_(True) for i, n in enumerate(NAMES)}
    b.backward(losses, BalanceContext())
    q = z / (L1 + 1e-8)
    w = 3 * q / q.sum()  # gradient of K sum_i z_i log L_i / c, c = sum_j z_j / L_j
    assert b.get_loss_weights() == pytest.approx(w.tolist(), rel=1e-6)
    for i, n in enumerate(NAMES):
        assert losses[n].grad.item() == pytest.approx(float(w[i]), rel=1e-6)
    b.after_optimizer_step()  # first step: nothing to compare with yet
    assert torch.equal(b.xi.detach(), xi0)

    L2 = torch.tensor([0.5, 3.9, 0.5])  # task a improved most
    b.backward({n: L2[i].clone().requires_grad_(True) for i, n in enumerate(NAMES)}, BalanceContext())
    b.after_optimizer_step()
    delta = torch.log(L1 + 1e-8) - torch.log(L2 + 1e-8)
    jac = torch.diag(z) - torch.outer(z, z)  # d softmax / d xi
    g = jac.T @ delta
    expected = xi0 - 0.1 * torch.sign(g)  # Adam's first step is lr * sign(g)
    assert torch.allclose(b.xi.detach(), expected, atol=1e-6)
    assert b.z()[0] < z[0]  # the fastest-improving task loses weight


# -- stch, imtl_l, geometric_mean (TorchJD scalarizers) ---------------------------------------------


def test_stch_weights_are_the_gradient_of_the_smooth_max_of_log_ratios():
    b = build_balancer(cfg_for("stch", stch={"mu": 0.5}), NAMES)
    lam = torch.tensor([1.0, 2.0, 0.5]) / (3.5 / 3)  # config weights over their mean
    L0, L1 = torch.tensor([2.0, 1.0, 4.0]), torch.tensor([1.0, 0.9, 2.0])
    b.combine(leaf_losses(L0.tolist()))
    assert b.get_loss_weights() == pytest.approx((3 * lam * torch.softmax(torch.zeros(3), 0) / L0).tolist(), rel=1e-5)
    losses = leaf_losses(L1.tolist())
    objective = b.backward(losses, BalanceContext()).objective
    f = torch.log(L1 / L0)  # b fell least relative to its start: it gets the largest share
    p = torch.softmax(lam * f / 0.5, 0)
    w = 3 * lam * p / L1
    assert b.get_loss_weights() == pytest.approx(w.tolist(), rel=1e-5)
    assert [losses[n].grad.item() for n in NAMES] == pytest.approx(w.tolist(), rel=1e-5)
    assert objective.item() == pytest.approx(float(3 * 0.5 * torch.logsumexp(lam * f / 0.5, 0)), rel=1e-5)


def test_stch_inputs_raw_and_ratio():
    L0, L1 = torch.tensor([2.0, 1.0, 4.0]), torch.tensor([1.0, 0.9, 2.0])
    for inputs, f, df in (("raw", L1, torch.ones(3)), ("ratio", L1 / L0, 1 / L0)):
        b = build_balancer(uniform(cfg_for("stch", stch={"inputs": inputs})), NAMES)
        b.combine(leaf_losses(L0.tolist()))
        b.combine(leaf_losses(L1.tolist()))
        expected = 3 * torch.softmax(f / 1.0, 0) * df
        assert b.get_loss_weights() == pytest.approx(expected.tolist(), rel=1e-5), inputs


def test_geometric_mean_weights_and_a_zero_loss_left_out():
    b = build_balancer(cfg_for("geometric_mean"), NAMES)
    c = torch.tensor([1.0, 2.0, 0.5]) / 3.5  # exponents of the weighted geometric mean
    L = torch.tensor([0.5, 2.0, 8.0])
    losses = leaf_losses(L.tolist())
    out = b.backward(losses, BalanceContext())
    G = torch.exp((c * torch.log(L)).sum())
    assert out.objective.item() == pytest.approx(float(3 * G), rel=1e-5)
    w = 3 * c * G / L
    assert b.get_loss_weights() == pytest.approx(w.tolist(), rel=1e-5)
    assert [losses[n].grad.item() for n in NAMES] == pytest.approx(w.tolist(), rel=1e-5)
    b.combine(leaf_losses([1.0, 0.0, 4.0]))  # no target for b: left out, its weight kept
    c2 = torch.tensor([1.0, 0.5]) / 1.5
    G2 = torch.exp((c2 * torch.log(torch.tensor([1.0, 4.0]))).sum())
    expected = [float(3 * c2[0] * G2 / 1.0), float(w[1]), float(3 * c2[1] * G2 / 4.0)]
    assert b.get_loss_weights() == pytest.approx(expected, rel=1e-5)


def test_imtl_l_is_the_papers_objective_with_scales_from_the_config():
    b = build_balancer(cfg_for("imtl_l"), NAMES)
    assert b.get_loss_weights() == pytest.approx([1.0, 2.0, 0.5], rel=1e-6)  # e^s starts at the config weights
    assert b.trainable_parameters() == [b.imtl.log_scale] and b.can_be_negative
    s = [0.3, -1.0, 0.0]
    with torch.no_grad():
        b.imtl.log_scale.copy_(torch.tensor(s))
    L = [0.2, 1.5, 3.0]
    objective, weighted = b.combine(leaf_losses(L))
    assert objective.item() == pytest.approx(sum(math.exp(s[i]) * L[i] - s[i] for i in range(3)), rel=1e-6)
    assert weighted.item() == pytest.approx(sum(math.exp(s[i]) * L[i] for i in range(3)), rel=1e-6)
    opt = torch.optim.SGD(b.trainable_parameters(), lr=0.2)
    for _ in range(300):  # the minimum over s: e^s_i L_i = 1
        objective, _ = b.combine(leaf_losses(L))
        opt.zero_grad()
        objective.backward()
        opt.step()
    assert b.get_loss_weights() == pytest.approx([1 / v for v in L], rel=1e-3)


# -- jacobian ------------------------------------------------------------------------------------


def _two_task_problem(conflict: bool):
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f = x @ W.T  # [2,2] shared features
    y1 = f[:, 0].sum()
    y2 = (-f[:, 0].sum() + 2 * f[:, 1].sum()) if conflict else f[:, 1].sum()
    return W, f, {"a": y1, "b": y2}


def test_jacobian_upgrad_equals_fixed_without_conflict():
    cfg = BalancerConfig(strategy="jacobian", weights={"a": 1.0, "b": 3.0})
    W, f, losses = _two_task_problem(conflict=False)
    b = build_balancer(cfg, ["a", "b"])
    b.backward(losses, BalanceContext(shared_params=[W], features=[f]))
    W2, _, losses2 = _two_task_problem(conflict=False)
    (1.0 * losses2["a"] + 3.0 * losses2["b"]).backward()
    assert torch.allclose(W.grad, W2.grad, atol=1e-4)
    assert b.get_loss_weights() == pytest.approx([1.0, 3.0], rel=1e-4)


def test_jacobian_normalize_initial_aggregates_loss_ratios():
    """Default normalize: initial: TorchJD sees L_i / L_i(0); reported weights apply to the raw L_i."""
    cfg = BalancerConfig(strategy="jacobian", weights={"a": 1.0, "b": 3.0})
    W, f, losses = _two_task_problem(conflict=False)
    scaled = {"a": 100.0 * losses["a"], "b": 0.01 * losses["b"]}  # L(0) = [100, 0.01]
    b = build_balancer(cfg, ["a", "b"])
    b.backward(scaled, BalanceContext(shared_params=[W], features=[f]))
    W2, _, losses2 = _two_task_problem(conflict=False)
    (1.0 * losses2["a"] + 3.0 * losses2["b"]).backward()  # = 1 * a/100 + 3 * b/0.01 of the scaled
    assert torch.allclose(W.grad, W2.grad, atol=1e-4)
    assert b.get_loss_weights() == pytest.approx([1.0 / 100.0, 3.0 / 0.01], rel=1e-4)

    cfg.jacobian.normalize = "none"
    raw = build_balancer(cfg, ["a", "b"])
    W3, f3, losses3 = _two_task_problem(conflict=False)
    raw.backward({"a": 100.0 * losses3["a"], "b": 0.01 * losses3["b"]}, BalanceContext(shared_params=[W3],
                                                                                       features=[f3]))
    assert raw.get_loss_weights() == pytest.approx([1.0, 3.0], rel=1e-4)  # TorchJD as is: fixed


def test_jacobian_upgrad_resolves_a_conflict():
    W, f, losses = _two_task_problem(conflict=True)
    g1 = torch.autograd.grad(losses["a"], W, retain_graph=True)[0].flatten()
    g2 = torch.autograd.grad(losses["b"], W, retain_graph=True)[0].flatten()
    assert g1 @ g2 < 0  # the two tasks conflict
    b = build_balancer(BalancerConfig(strategy="jacobian", weights={"a": 1.0, "b": 1.0}), ["a", "b"])
    b.backward(losses, BalanceContext(shared_params=[W], features=[f]))
    g = W.grad.flatten()
    assert g @ g1 >= -1e-5 and g @ g2 >= -1e-5  # UPGrad's update conflicts with no task
    assert all(w > 0 for w in b.get_loss_weights())


@pytest.mark.parametrize("name", ["upgrad", "dualproj", "pcgrad", "mgda", "imtl_g", "aligned_mtl", "graddrop",
                                  "gradvac", "config", "fairgrad", "random", "mean", "sum", "cagrad", "nash_mtl"])
def test_jacobian_aggregators_build_from_torchjd(name):
    from torchjd.aggregation import Aggregator

    assert isinstance(build_aggregator(name, torch.ones(3)), Aggregator)


def test_jacobian_optional_solver_missing_is_a_clear_error():
    try:
        import cvxpy  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"expected the optional dependencies of jacobian.aggregator 'cagrad'"):
            build_aggregator("cagrad", torch.ones(3))
    else:
        assert build_aggregator("cagrad", torch.ones(3)) is not None


def test_jacobian_needs_features():
    b = build_balancer(cfg_for("jacobian"), NAMES)
    with pytest.raises(ValueError, match=r"expected BalanceContext.features"):
        b.backward(leaf_losses([1, 2, 3]), BalanceContext())


# -- audit (issue 17) ----------------------------------------------------------------------------


def test_dwa_epoch_mean_of_zero_gives_no_rate_and_a_neutral_weight():
    b = build_balancer(uniform(cfg_for("dwa", dwa={"normalize": "none"})), NAMES)
    e1, e2 = [1.0, 0.0, 2.0], [0.5, 0.3, 1.8]  # b had no target in epoch 1: mean 0
    b.on_epoch_end(1, dict(zip(NAMES, e1, strict=True)))
    b.on_epoch_end(2, dict(zip(NAMES, e2, strict=True)))
    r = torch.tensor([0.5, (0.5 + 0.9) / 2, 0.9])  # b: the mean of the other rates
    expected = 3 * torch.softmax(r / 2.0, dim=0)
    assert b.get_loss_weights() == pytest.approx(expected.tolist(), rel=1e-6)
    b.on_epoch_end(3, dict(zip(NAMES, [0.25, 0.0, 1.8], strict=True)))  # a mean falling to 0 is a rate of 0
    r = torch.tensor([0.5, 0.0, 1.0])
    assert b.get_loss_weights() == pytest.approx((3 * torch.softmax(r / 2.0, dim=0)).tolist(), rel=1e-6)
    b.on_epoch_end(4, dict(zip(NAMES, [0.0, 0.0, 0.0], strict=True)))  # no rate at all: lambda kept
    assert sum(b.get_loss_weights()) == pytest.approx(3.0) and min(b.get_loss_weights()) > 0.5


@pytest.mark.parametrize("strategy", ["dwa", "famo", "uncertainty", "gradnorm", "scale_norm", "equal_init",
                                      "equal_init_ema", "ema", "stch", "imtl_l", "geometric_mean"])
def test_a_negative_epoch_mean_is_refused_where_the_strategy_needs_losses_above_zero(strategy):
    b = build_balancer(cfg_for(strategy), NAMES)
    with pytest.raises(ValueError, match=rf"expected loss 'b' >= 0 for loss.balancer.strategy={strategy} \(.+\), "
                                         r"found -0.5; strategies that accept negative losses: fixed, jacobian"):
        b.on_epoch_end(1, {"a": 1.0, "b": -0.5, "c": 2.0})


@pytest.mark.parametrize("strategy", ["fixed", "jacobian"])
def test_strategies_that_accept_negative_losses(strategy):
    b = build_balancer(cfg_for(strategy), NAMES)
    assert b.needs_nonnegative == ""
    b.on_epoch_end(1, {"a": 1.0, "b": -0.5, "c": 2.0})


def test_uncertainty_diverges_on_a_negative_loss_which_is_why_it_is_refused():
    b = build_balancer(cfg_for("uncertainty"), NAMES)
    opt = torch.optim.SGD(b.trainable_parameters(), lr=0.1)
    for _ in range(200):
        objective, _ = b.combine(leaf_losses([1.0, -0.5, 2.0]))  # a Gaussian NLL below 0
        opt.zero_grad()
        objective.backward()
        assert b.s.grad[1].item() > 0.5  # d/ds [1/2 e^-s L + s/2] = (1 - e^-s L) / 2 > 1/2 for every s
        opt.step()
    assert b.s[1].item() < -10 and b.s[0].item() == pytest.approx(0.0, abs=1e-3)


def test_uncertainty_log1p_is_the_papers_regularizer():
    """Liebel & Koerner 2018, eq. 3: sum_i 1/(2 sigma_i^2) L_i + ln(1 + sigma_i^2), s = log sigma^2."""
    b = build_balancer(cfg_for("uncertainty", uncertainty={"regularizer": "log1p"}), NAMES)
    s = torch.tensor([-1.0, 0.5, 2.0])
    L = [0.3, 1.7, 4.0]
    with torch.no_grad():
        b.s.copy_(s)
    objective, weighted = b.combine(leaf_losses(L))
    sigma2 = torch.exp(s)
    expected = sum(L[i] / (2 * sigma2[i]) + math.log(1 + sigma2[i]) for i in range(3))
    assert objective.item() == pytest.approx(float(expected), rel=1e-6)
    assert weighted.item() == pytest.approx(float(sum(L[i] / sigma2[i] for i in range(3))), rel=1e-6)


class ReferenceFAMO:
    """The paper's code (github.com/Cranial-XIX/FAMO, ``FAMO``), transcribed with min_losses = 0."""

    def __init__(self, n_tasks: int, gamma: float = 0.01, w_lr: float = 0.025) -> None:
        self.w = torch.tensor([0.0] * n_tasks, requires_grad=True)
        self.w_opt = torch.optim.Adam([self.w], lr=w_lr, weight_decay=gamma)

    def loss_weights(self, losses):  # d/dL of (log(L + 1e-8) * z / c).sum(), c = (z / (L + 1e-8)).sum()
        z = torch.softmax(self.w, -1).detach()
        D = losses + 1e-8
        return z / D / (z / D).sum()

    def update(self, prev_loss, curr_loss):
        delta = (prev_loss + 1e-8).log() - (curr_loss + 1e-8).log()
        with torch.enable_grad():
            d = torch.autograd.grad(torch.softmax(self.w, -1), self.w, grad_outputs=delta.detach())[0]
        self.w_opt.zero_grad()
        self.w.grad = d
        self.w_opt.step()


def test_famo_follows_the_papers_code_from_the_first_step():
    """Same loss sequence: same logits (ours update one step later, on the same pairs) and weights K x."""
    cfg = BalancerConfig(strategy="famo", weights=dict.fromkeys(NAMES, 1.0))  # defaults: lr 0.025, gamma 0.01
    b, ref = build_balancer(cfg, NAMES), ReferenceFAMO(3)
    t = torch.arange(60, dtype=torch.float32)[:, None]
    seq = torch.tensor([3.0, 1.0, 0.2]) * torch.exp(-t * torch.tensor([0.05, 0.01, 0.002]))  # [T,3] a falls fastest
    for i in range(len(seq)):
        b.backward({n: seq[i, j].clone().requires_grad_(True) for j, n in enumerate(NAMES)}, BalanceContext())
        b.after_optimizer_step()
        if i >= 1:
            ref.update(seq[i - 1], seq[i])
    assert torch.allclose(b.xi.detach(), ref.w.detach(), atol=1e-6)
    z = torch.softmax(ref.w.detach(), -1)
    assert z[0] < 0.31 and z[2] > 0.35  # the fastest task lost share within 60 steps, as in the paper's code
    b.backward({n: seq[-1, j].clone().requires_grad_(True) for j, n in enumerate(NAMES)}, BalanceContext())
    assert b.weights_tensor() == pytest.approx((3 * ref.loss_weights(seq[-1])).tolist(), rel=1e-5)


def test_famo_zero_loss_neither_takes_the_step_nor_wrecks_the_logit_optimizer():
    b = build_balancer(BalancerConfig(strategy="famo", weights=dict.fromkeys(NAMES, 1.0)), NAMES)
    for L in ([1.0, 1.0, 1.0], [0.9, 0.0, 0.9]):  # step 2: no wave V target for b
        losses = leaf_losses(L)
        b.backward(losses, BalanceContext())
        b.after_optimizer_step()
    # step 2's weights: b keeps its share K z_b = 1; a and c share the other 2 as FAMO would: 1/L each
    assert b.get_loss_weights() == pytest.approx([1.0, 1.0, 1.0], rel=1e-6)
    assert losses["a"].grad.item() == pytest.approx(1.0, rel=1e-6)
    # the update saw a and c fall alike and b without a log-loss: no signal, Adam's second moment stays
    # ~0 (log(0 + eps) gave b a delta of ~18 and a second moment of ~0.03, which muted the logits)
    assert b.opt.state[b.xi]["exp_avg_sq"].max().item() < 1e-12
    b.backward(leaf_losses([0.8, 0.5, 0.4]), BalanceContext())
    w = b.get_loss_weights()
    q = b.z().detach() / torch.tensor([0.8, 0.5, 0.4])  # every component present again: FAMO's w
    assert w == pytest.approx((3 * q / q.sum()).tolist(), rel=1e-5)


def test_famo_config_weights_are_a_prior_and_the_logits_start_at_zero():
    b = build_balancer(cfg_for("famo"), NAMES)
    assert torch.equal(b.xi.detach(), torch.zeros(3))
    assert torch.allclose(b.z(), torch.tensor([1.0, 2.0, 0.5]) / 3.5)


# -- DDP: weights from the reduced losses (issue 31) ------------------------------------------------


@pytest.mark.parametrize("strategy,block", [("scale_norm", {"scale_norm": {"statistic": "batch"}}), ("famo", {}),
                                            ("stch", {"stch": {"inputs": "raw"}}), ("geometric_mean", {})])
def test_batch_weights_read_the_reduced_losses_not_the_ranks_own(strategy, block):
    """Under DDP backward() weights with ctx.reduce_mean's values: a rank whose own losses differ from the
    global mean gets the global mean's weights (the same on every rank), and its gradient is w_i dL_i."""
    global_mean = torch.tensor([2.0, 4.0, 1.0])
    ranks = []
    for own in ([1.0, 3.0, 0.5], [3.0, 5.0, 1.5]):  # two ranks whose mean is global_mean
        b = build_balancer(cfg_for(strategy, **block), NAMES)
        losses = leaf_losses(own)
        b.backward(losses, BalanceContext(reduce_mean=lambda x: global_mean.clone()))
        w = b.weights_tensor().clone()
        assert torch.allclose(torch.stack([losses[n].grad for n in NAMES]), w)
        ranks.append(w)
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)
    alone = build_balancer(cfg_for(strategy, **block), NAMES)
    alone.backward(leaf_losses(global_mean.tolist()), BalanceContext())
    torch.testing.assert_close(ranks[0], alone.weights_tensor(), rtol=0, atol=0)  # what one process would use
