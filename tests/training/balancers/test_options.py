"""Every option of `loss.balancer` changes what its strategy does (issue 18: no option is ignored).

The formulas are pinned in test_strategies.py; here each option is flipped away from its default on
the shared toy (conftest.py) and the weights must move. An option the code ignored would give the
same weights twice. The config weights are checked per strategy: honoured, or refused in one line.
"""

from __future__ import annotations

import pytest
import torch

from training.balancers import BalanceContext, BalancerConfig, build_balancer, weights_dict
from training.components import COMPONENTS

NAMES = ["alpha", "beta", "gamma"]
SCALES = {"alpha": 1e-2, "beta": 1.0, "gamma": 1e2}

# (strategy, config block, key, a value far from the default)
OPTIONS = [
    ("scale_norm", "scale_norm", "eps", 10.0),  # floors the running means of alpha and beta
    ("gradnorm", "gradnorm", "alpha", 0.0),
    ("gradnorm", "gradnorm", "lr", 0.5),
    ("gradnorm", "gradnorm", "min_weight", 0.9),
    ("dwa", "dwa", "temperature", 0.05),
    ("equal_init", "inverse_loss", "eps", 1.0),
    ("famo", "famo", "lr", 0.5),
    ("famo", "famo", "gamma", 5.0),
    ("famo", "famo", "eps", 1.0),
    ("stch", "stch", "mu", 0.05),
    ("stch", "stch", "inputs", "raw"),
]


def _weights_after(toy_run, cfg: BalancerConfig, steps: int = 9) -> dict[str, float]:
    run = toy_run(cfg, NAMES, SCALES, per_epoch=3, lr=1e-2)
    run.steps(steps)
    return run.weights()


@pytest.mark.parametrize(("strategy", "block", "key", "value"), OPTIONS, ids=[f"{o[1]}.{o[2]}" for o in OPTIONS])
def test_each_option_changes_the_weights(strategy, block, key, value, toy_run, toy_cfg):
    base = _weights_after(toy_run, toy_cfg(strategy, NAMES))
    flipped = _weights_after(toy_run, toy_cfg(strategy, NAMES, **{block: {key: value}}))
    assert getattr(toy_cfg(strategy, NAMES).__getattribute__(block), key) != value  # really a change
    assert flipped != pytest.approx(base, rel=1e-3), (key, base, flipped)


def test_gradnorm_layer_chooses_the_parameters_it_measures():
    W = torch.nn.Parameter(torch.eye(2))
    losses = {n: (i + 1.0) * (W @ torch.ones(2)).square().sum() for i, n in enumerate(("a", "b"))}
    ctx = BalanceContext(shared_params=[W], last_shared_params=[])  # only "all" finds parameters
    cfg = BalancerConfig(strategy="gradnorm", weights={"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match=r"expected BalanceContext.last_shared_params for gradnorm \(layer: last\)"):
        build_balancer(cfg, ["a", "b"]).backward(losses, ctx)
    cfg.gradnorm.layer = "all"
    build_balancer(cfg, ["a", "b"]).backward(losses, ctx)
    assert W.grad is not None


def _leaf(values: dict[str, float]) -> dict[str, torch.Tensor]:
    return {n: torch.tensor(v, requires_grad=True) for n, v in values.items()}


# -- loss.balancer.weights, strategy by strategy ---------------------------------------------------


def test_dwa_config_weights_are_a_constant_prior():
    """They used to be ignored: w_i = K c_i lambda_i / L_i(0) / sum_j (...), sum K."""
    c = {"a": 1.0, "b": 2.0, "c": 0.5}
    b = build_balancer(BalancerConfig(strategy="dwa", weights=c), list(c))
    L0 = torch.tensor([100.0, 0.01, 1.0])
    b.combine(_leaf(dict(zip(c, L0.tolist(), strict=True))))
    w = torch.tensor(list(c.values())) / L0
    assert b.get_loss_weights() == pytest.approx((3 * w / w.sum()).tolist(), rel=1e-6)
    e1, e2 = [80.0, 0.008, 0.9], [40.0, 0.0076, 0.9]
    b.on_epoch_end(1, dict(zip(c, e1, strict=True)))
    b.on_epoch_end(2, dict(zip(c, e2, strict=True)))
    lam = 3 * torch.softmax((torch.tensor(e2) / torch.tensor(e1)) / 2.0, dim=0)
    w = torch.tensor(list(c.values())) * lam / L0
    assert b.get_loss_weights() == pytest.approx((3 * w / w.sum()).tolist(), rel=1e-5)
    assert "c" not in b.state_dict()  # rebuilt from the config: checkpoints of earlier runs still load


def test_grouping_honours_the_configured_weights():
    """Singleton groups under an outer scale_norm are plain scale_norm: a weight of 3 counts 3 times.
    The outer strategy used to start every group at 1, and its normalization then cancelled the weight."""
    weights = {**dict.fromkeys(COMPONENTS, 1.0), "threshold": 3.0, "class": 0.5}
    grouped = BalancerConfig(strategy="scale_norm", weights=weights)
    grouped.grouping.enabled = True
    grouped.grouping.groups = {n: [n] for n in COMPONENTS}
    grouped.grouping.inner = {}
    a, b = build_balancer(grouped), build_balancer(BalancerConfig(strategy="scale_norm", weights=weights))
    for step in range(3):
        values = {n: float(1 + i + step) * 10.0 ** (i - 3) for i, n in enumerate(COMPONENTS)}
        oa, _ = a.combine(_leaf(values))
        ob, _ = b.combine(_leaf(values))
        assert oa.item() == pytest.approx(ob.item(), rel=1e-6)
    assert weights_dict(a) == pytest.approx(weights_dict(b), rel=1e-6)
    assert a.weight_names() == [[n] for n in COMPONENTS]  # grouping.groups is the partition used


def test_grouping_keeps_uniform_weights_at_one():
    """With the default weights every group starts at 1 and every member at 1, as before the fix."""
    cfg = BalancerConfig(strategy="fixed")
    cfg.grouping.enabled = True
    b = build_balancer(cfg)
    assert b.outer.get_loss_weights() == [1.0] * len(cfg.grouping.groups)
    assert all(w == 1.0 for ws in b.get_loss_weights() for w in ws)


@pytest.mark.parametrize("aggregator", ["pcgrad", "mgda", "mean", "sum"])
def test_jacobian_aggregators_that_take_no_weights_refuse_unequal_ones(aggregator):
    cfg = BalancerConfig(strategy="jacobian", weights={"a": 1.0, "b": 3.0})
    cfg.jacobian.aggregator = aggregator
    with pytest.raises(ValueError, match=rf"^expected equal loss.balancer.weights for jacobian.aggregator="
                                         rf"{aggregator}, which takes no weights \(only upgrad and dualproj use them, "
                                         r"as a preference vector\), found \{'a': 1.0, 'b': 3.0\}$"):
        build_balancer(cfg, ["a", "b"])
    cfg.weights = {"a": 2.0, "b": 2.0}
    build_balancer(cfg, ["a", "b"])


def test_jacobian_aggregator_is_the_one_configured():
    """`sum` adds the two conflicting gradients; the default upgrad projects the conflict away."""
    def problem():
        W = torch.nn.Parameter(torch.eye(2))
        f = torch.eye(2) @ W.T  # [2,2] shared features
        return W, f, {"a": f[:, 0].sum(), "b": -f[:, 0].sum() + 2 * f[:, 1].sum()}

    grads = {}
    for aggregator in ("sum", "upgrad"):
        cfg = BalancerConfig(strategy="jacobian", weights={"a": 1.0, "b": 1.0})
        cfg.jacobian.aggregator, cfg.jacobian.normalize = aggregator, "none"
        W, f, losses = problem()
        build_balancer(cfg, ["a", "b"]).backward(losses, BalanceContext(shared_params=[W], features=[f]))
        grads[aggregator] = W.grad.clone()
    W, _, losses = problem()
    (losses["a"] + losses["b"]).backward()
    torch.testing.assert_close(grads["sum"], W.grad)
    assert not torch.allclose(grads["upgrad"], W.grad, atol=1e-3)


def test_jacobian_under_ddp_is_refused_when_built(monkeypatch):
    """It used to be refused at the first step, after the run directory was made."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    with pytest.raises(ValueError, match=r"^expected a single process for loss.balancer.strategy=jacobian, "
                                         r"found a DDP run$"):
        build_balancer(BalancerConfig(strategy="jacobian"))
