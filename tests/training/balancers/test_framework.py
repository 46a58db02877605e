"""Registry, grouping, DDP reduction, MetaLoss and the config blocks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from data.schema import ConfigError, from_dict
from training.balancers import REGISTRY, BalanceContext, BalancerConfig, build_balancer, weights_dict
from training.balancers.config import STRATEGIES
from training.balancers.grouped import GroupedBalancer
from training.balancers.meta_loss import MetaLoss
from training.components import COMPONENTS

ROOT = Path(__file__).resolve().parents[3]


def losses_of(values) -> dict[str, torch.Tensor]:
    return {n: torch.tensor(float(v), requires_grad=True) for n, v in zip(COMPONENTS, values, strict=True)}


def test_registry_covers_every_configurable_strategy():
    assert sorted(REGISTRY) == sorted(STRATEGIES)


def test_unknown_weight_key_is_a_clear_error():
    cfg = BalancerConfig(weights={"signal": 1.0, "thresh": 2.0})
    with pytest.raises(ValueError, match=r"expected loss.balancer.weights keys among .*, found \['thresh'\]"):
        build_balancer(cfg)


def test_only_fixed_accepts_a_zero_weight():
    cfg = from_dict(BalancerConfig, {"weights": {"a": 1.0, "b": 0.0}}, "loss.balancer")
    objective, _ = build_balancer(cfg, ["a", "b"]).combine({"a": torch.tensor(2.0), "b": torch.tensor(5.0)})
    assert float(objective) == 2.0


def test_unknown_strategy_and_block_key_are_config_errors():
    with pytest.raises(ConfigError, match=r"loss.balancer.strategy': expected one of"):
        from_dict(BalancerConfig, {"strategy": "gradnrom"}, "loss.balancer")
    with pytest.raises(ConfigError, match=r"unknown key \(did you mean 'alpha'\?\)"):
        from_dict(BalancerConfig, {"gradnorm": {"alpah": 1.0}}, "loss.balancer")
    with pytest.raises(ConfigError, match=r"expected weights.class > 0 \(only `fixed` accepts 0\), found 0.0"):
        from_dict(BalancerConfig, {"strategy": "uncertainty", "weights": {"class": 0.0}}, "loss.balancer")


@pytest.mark.parametrize(("block", "message"), [
    ({"strategy": "stch", "stch": {"mu": 0.0}}, r"loss.balancer.stch.mu"),
    ({"strategy": "stch", "stch": {"inputs": "log"}}, r"loss.balancer.stch.inputs': expected one of"),
    ({"strategy": "imtl-l"}, r"loss.balancer.strategy': expected one of"),
    ({"strategy": "jacobian", "jacobian": {"aggregator": "fair_grad"}}, r"balancer.jacobian.aggregator': expected"),
])
def test_new_strategy_values_are_config_errors(block, message):
    with pytest.raises(ConfigError, match=message) as info:
        from_dict(BalancerConfig, block, "loss.balancer")
    assert "\n" not in str(info.value)  # one line


def grouped_cfg(outer: str, inner: dict[str, str]) -> BalancerConfig:
    cfg = BalancerConfig(strategy=outer, weights={**dict.fromkeys(COMPONENTS, 1.0), "peak_exist": 2.0})
    cfg.grouping.enabled = True
    cfg.grouping.inner = inner
    return cfg


def test_grouping_fixed_in_fixed_reproduces_fixed_and_reports_per_head():
    b = build_balancer(grouped_cfg("fixed", {"peak": "fixed"}))
    assert isinstance(b, GroupedBalancer)
    assert b.weight_names() == [["signal"], ["class"], ["peak_exist", "peak_latency", "peak_amplitude"], ["threshold"]]
    assert b.get_loss_weights() == [[1.0], [1.0], [2.0, 1.0, 1.0], [1.0]]
    objective, weighted = b.combine(losses_of([1, 2, 3, 4, 5, 6]))
    assert objective.item() == pytest.approx(1 + 2 + 2 * 3 + 4 + 5 + 6)
    assert weighted.item() == pytest.approx(objective.item())


def test_grouping_effective_weight_is_outer_times_inner():
    b = build_balancer(grouped_cfg("uncertainty", {"peak": "scale_norm"}))
    L = [1.0, 2.0, 4.0, 0.5, 8.0, 3.0]
    with torch.no_grad():
        b.outer.s.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0]))  # group "peak" precision e^-1
    b.backward(losses_of(L), BalanceContext())
    # scale_norm after one observation: c_i / L_i, with the inner c_i = configured weight / group mean (4/3)
    inner = [1.5 / 4.0, 0.75 / 0.5, 0.75 / 8.0]
    w = weights_dict(b)
    for n, wi in zip(("peak_exist", "peak_latency", "peak_amplitude"), inner, strict=True):
        assert w[n] == pytest.approx(torch.exp(torch.tensor(-1.0)).item() * wi, rel=1e-5)
    assert b.trainable_parameters() == [b.outer.s]
    assert b.can_be_negative  # the outer uncertainty (log) may go below 0


def test_grouping_rejects_gradient_inner_and_bad_partitions():
    with pytest.raises(ValueError, match=r"expected a loss-value strategy for loss.balancer.grouping.inner.peak"):
        build_balancer(grouped_cfg("fixed", {"peak": "gradnorm"}))
    cfg = grouped_cfg("fixed", {})
    cfg.grouping.groups = {"a": ["signal", "class"], "b": ["class"]}
    with pytest.raises(ValueError, match=r"expected loss.balancer.grouping.groups to hold each of"):
        build_balancer(cfg)
    with pytest.raises(ValueError, match=r"expected loss.balancer.grouping.inner keys among"):
        build_balancer(grouped_cfg("fixed", {"pk": "fixed"}))


def test_grouped_epoch_hooks_reach_inner_and_outer():
    b = build_balancer(grouped_cfg("dwa", {"peak": "equal_init"}))
    means = dict(zip(COMPONENTS, [1.0, 2.0, 0.5, 0.25, 4.0, 1.0], strict=True))
    b.on_epoch_end(1, means)
    c = [1.5, 0.75, 0.75]  # the inner prior: configured weights [2, 1, 1] over their group mean 4/3
    assert b.inner["peak"].get_loss_weights() == pytest.approx([c[0] / 0.5, c[1] / 0.25, c[2] / 4.0], rel=1e-6)
    b.on_epoch_end(2, {**means, "signal": 0.5})
    outer = b.outer.get_loss_weights()
    assert sum(outer) == pytest.approx(4.0) and outer[0] < outer[1]  # signal improved: it loses weight


@pytest.mark.parametrize("strategy", ["scale_norm", "famo", "gradnorm", "dwa"])
def test_ddp_ranks_with_different_local_losses_get_identical_weights(strategy):
    """Two simulated ranks: different local losses, reduce_mean returns the global mean."""
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(3, 3))
    x = [torch.randn(4, 3), torch.randn(4, 3)]  # rank 0 and rank 1 data
    cfg = BalancerConfig(strategy=strategy, weights={n: 1.0 for n in ("a", "b", "c")})
    cfg.dwa.normalize = "initial"
    ranks = [build_balancer(cfg, ["a", "b", "c"]) for _ in range(2)]

    def local(r):
        f = x[r] @ W.T  # [4,3]
        return {n: (i + 1.0) * f[:, i].pow(2).mean() for i, n in enumerate("abc")}

    for _step in range(3):
        with torch.no_grad():
            values = [torch.stack(list(local(r).values())) for r in range(2)]
        norms = []
        for r in range(2):  # per-rank gradient norms, for gradnorm's reduce
            L = local(r)
            norms.append(torch.stack([torch.autograd.grad(v, W, retain_graph=True)[0].norm() for v in L.values()]))
        calls = {"n": 0}

        def reduce_mean(t, calls=calls, values=values, norms=norms):
            calls["n"] += 1
            return ((values[0] + values[1]) / 2) if calls["n"] == 1 else ((norms[0] + norms[1]) / 2)

        for r in range(2):
            calls["n"] = 0
            ranks[r].backward(local(r), BalanceContext(last_shared_params=[W], reduce_mean=reduce_mean))
            ranks[r].after_optimizer_step()
            W.grad = None
    w0, w1 = ranks[0].weights_tensor(), ranks[1].weights_tensor()
    if strategy == "famo":  # famo reports the weights applied to the last *local* batch; compare its logits
        w0, w1 = ranks[0].xi, ranks[1].xi
    assert torch.equal(w0, w1)


def test_meta_loss_delegates_weights_and_negativity():
    class Components(torch.nn.Module):
        def forward(self, outputs, batch):
            return {"class": outputs["x"].sum()}

    cfg = BalancerConfig(strategy="uncertainty")
    meta = MetaLoss(Components(), build_balancer(cfg))
    assert meta.get_loss_weights() == meta.balancer.get_loss_weights()
    assert meta.weight_names() == list(COMPONENTS)
    assert meta.can_be_negative
    assert meta.components({"x": torch.ones(2)}, {})["class"].item() == 2.0
    assert any(k.endswith("s") for k in meta.state_dict())  # the balancer's state is in the checkpoint
    cfg.uncertainty.regularizer = "log1p"
    assert not MetaLoss(Components(), build_balancer(cfg)).can_be_negative


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_preset_exists_and_its_block_parses(strategy):
    path = ROOT / "configs" / "balancers" / f"{strategy}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data["extends"] == "../quickstart.yaml"
    cfg = from_dict(BalancerConfig, data["loss"]["balancer"], "loss.balancer")
    assert cfg.strategy == strategy
    build_balancer(cfg)
    from training.config import load_config

    assert load_config(path).loss.balancer == cfg  # resolved through `extends`


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_declares_its_registry_name(strategy):
    assert build_balancer(BalancerConfig(strategy=strategy)).strategy == strategy
    assert build_balancer(grouped_cfg(strategy, {"peak": "fixed"})).strategy == strategy
