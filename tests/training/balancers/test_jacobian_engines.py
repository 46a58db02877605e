"""`jacobian`'s two engines (jacobian.engine): the Gramian route against TorchJD's autojac.

The Gramian engine takes the aggregator's weights from G = J J^T and does one ordinary backward;
autojac builds J in ``.jac`` and aggregates it (mtl_backward + jac_to_grad). Same weights, same
``.grad`` on every parameter (heads: their own losses' gradients; trunk: the aggregation).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from training.balancers import BalanceContext, BalancerConfig, build_balancer
from training.balancers.jacobian import PREFERENCE_AGGREGATORS, ROW_AGGREGATORS, ROW_COUNT_AGGREGATORS

NAMES = ["sig", "cls", "exist", "latency", "amplitude", "thr"]
PEAK = ("exist", "latency", "amplitude")  # three components of one head, as in the pipeline

# The aggregators the Gramian engine serves.
GRAMIAN = ["upgrad", "dualproj", "pcgrad", "mgda", "imtl_g", "aligned_mtl", "gradvac", "fairgrad", "cagrad",
           *ROW_COUNT_AGGREGATORS]
JACOBIAN_ONLY = ["graddrop", "config", "nash_mtl"]


class Toy6(nn.Module):
    """x [B,5] -> trunk [B,8] -> two shared features h [B,4], z [B,3] (neither computed from the other,
    like ABRNet's) -> six components; the peak head [B,3] serves three of them. Targets drawn so that
    the components' gradients conflict."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # the layers' initialization: the same network for both engines
        g = torch.Generator().manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh())
        self.to_h, self.to_z = nn.Linear(8, 4), nn.Linear(8, 3)
        self.heads = nn.ModuleDict({"sig": nn.Linear(4, 1), "cls": nn.Linear(7, 1), "peak": nn.Linear(7, 3),
                                    "thr": nn.Linear(3, 1)})
        self.register_buffer("x", torch.randn(16, 5, generator=g))  # buffers: .to(dtype) converts them
        self.register_buffer("y", torch.randn(16, 6, generator=g) * torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.1]))

    def forward(self) -> tuple[dict[str, Tensor], list[Tensor]]:
        t = self.trunk(self.x)
        h, z = torch.tanh(self.to_h(t)), self.to_z(t)  # [B,4], [B,3]
        hz = torch.cat([h, z], dim=1)
        out = {"sig": self.heads["sig"](h)[:, 0], "cls": self.heads["cls"](hz)[:, 0], "thr": self.heads["thr"](z)[:, 0]}
        out |= dict(zip(PEAK, self.heads["peak"](hz).unbind(1), strict=True))
        losses = {n: (out[n] - self.y[:, i]).pow(2).mean() for i, n in enumerate(NAMES)}
        return losses, [h, z]


def jacobian_cfg(aggregator: str, engine: str, update_every: int = 1) -> BalancerConfig:
    prefer = aggregator in PREFERENCE_AGGREGATORS  # unequal config weights: the preference vector is used
    cfg = BalancerConfig(strategy="jacobian", weights={n: 1.0 + 0.5 * i * prefer for i, n in enumerate(NAMES)})
    cfg.jacobian.aggregator, cfg.jacobian.engine, cfg.jacobian.update_every = aggregator, engine, update_every
    return cfg


def steps(aggregator: str, engine: str, n: int = 3, dtype=torch.float64, update_every: int = 1,
          losses_seen: list | None = None) -> list[tuple[Tensor, dict[str, Tensor]]]:
    """(reported weights [K], every parameter's .grad) after each of ``n`` SGD steps (loss_scale 0.5,
    as with grad_accum_steps 2; normalize: initial). ``losses_seen``: each step's (model copy, raw losses)
    appended before the balancer's backward."""
    model = Toy6().to(dtype)
    balancer = build_balancer(jacobian_cfg(aggregator, engine, update_every), NAMES)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    record = []
    for step in range(n):
        if losses_seen is not None:
            losses_seen.append(copy.deepcopy(model))
        losses, features = model()
        torch.manual_seed(step)  # random, pcgrad and gradvac draw from the global RNG
        balancer.backward(losses, BalanceContext(shared_params=[*model.trunk.parameters(), *model.to_h.parameters(),
                                                               *model.to_z.parameters()],
                                                 features=features, loss_scale=0.5))
        record.append((balancer.weights_tensor().clone(), {k: p.grad.clone() for k, p in model.named_parameters()}))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return record


@pytest.mark.parametrize("aggregator", GRAMIAN)
def test_gramian_engine_gives_the_weights_and_gradients_of_autojac(aggregator):
    """In float64, so that what is compared is the algorithm, not float32 rounding (see the next test):
    the weights agree to the last float32 digit reported, the gradients within 2e-12 (fairgrad's solver)."""
    gramian, autojac = steps(aggregator, "gramian"), steps(aggregator, "autojac")
    for (w_g, grads_g), (w_a, grads_a) in zip(gramian, autojac, strict=True):
        torch.testing.assert_close(w_g, w_a, rtol=1e-7, atol=0.0)
        assert grads_g.keys() == grads_a.keys()
        for k in grads_a:
            torch.testing.assert_close(grads_g[k], grads_a[k], rtol=1e-9, atol=1e-11, msg=k)
    w0 = gramian[0][0]
    if aggregator not in ROW_COUNT_AGGREGATORS:  # the weights do resolve a conflict here (not all equal)
        assert (w0 / w0.mean() - 1).abs().max() > 1e-3, w0


def test_gramian_engine_on_the_quickstart_network():
    """The bench's network (h and z from one forward over the noisy and the clean half), float32, one
    step. Tolerance 2e-4: TorchJD's own float32 Gramian of this J (one [6, 125k] product) is within
    4e-5 of float64; the Gramian engine sums it per parameter, a different rounding."""
    from bench.balancers import Setup, make_batch

    for aggregator in ("upgrad", "mgda", "dualproj"):
        result = {}
        for engine in ("gramian", "autojac"):
            s = Setup("fixed")  # the network, identically seeded for both engines
            cfg = BalancerConfig(strategy="jacobian")
            cfg.jacobian.aggregator, cfg.jacobian.engine = aggregator, engine
            balancer = build_balancer(cfg)
            torch.manual_seed(1)  # dropout
            out = s.objective(s.model, make_batch(4, torch.Generator().manual_seed(2)), s.gen, train=True)
            balancer.backward(out.losses, BalanceContext(shared_params=s.shared, features=out.features))
            result[engine] = (balancer.weights_tensor(), {k: p.grad for k, p in s.model.named_parameters()
                                                          if p.grad is not None})
        (w_g, grads_g), (w_a, grads_a) = result["gramian"], result["autojac"]
        torch.testing.assert_close(w_g, w_a, rtol=2e-4, atol=1e-6, msg=aggregator)
        assert grads_g.keys() == grads_a.keys()
        for k in grads_a:
            scale = grads_a[k].abs().max().item()
            torch.testing.assert_close(grads_g[k], grads_a[k], rtol=2e-4, atol=2e-4 * scale, msg=f"{aggregator} {k}")


@pytest.fixture
def batched_calls(monkeypatch) -> list[bool]:
    """Whether each torch.autograd.grad call of the test was a batched vector-Jacobian product."""
    batched: list[bool] = []
    grad = torch.autograd.grad

    def counting(*args, **kwargs):
        batched.append(kwargs.get("is_grads_batched", False))
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    return batched


def test_row_count_aggregators_skip_the_jacobian(batched_calls):
    """mean, sum, random read only the number of rows: no batched vector-Jacobian product is made."""
    batched = batched_calls
    steps("random", "gramian", n=1)
    assert batched and not any(batched)
    batched.clear()
    steps("upgrad", "gramian", n=1)
    assert batched.count(True) == 1


@pytest.mark.parametrize("engine", ["gramian", "autojac", "features"])
def test_update_every_applies_the_last_weights_in_between_without_a_jacobian(engine, batched_calls):
    """jacobian.update_every 3: steps 0 and 3 compute the weights (step 0 as update_every 1 does), steps 1, 2, 4,
    5 apply the last ones: reported weights unchanged, no batched vector-Jacobian product, and .grad the heads'
    own gradients plus w^T J on the trunk (checked against per-component gradients of the same model)."""
    models: list = []
    every3 = steps("upgrad", engine, n=6, update_every=3, losses_seen=models)
    vjps = batched_calls.count(True)
    assert vjps == (2 if engine == "gramian" else 0)  # autojac's own passes are not torch.autograd.grad calls
    every1 = steps("upgrad", engine, n=1)
    torch.testing.assert_close(every3[0][0], every1[0][0], rtol=0, atol=0)
    for k, g in every1[0][1].items():
        torch.testing.assert_close(every3[0][1][k], g, rtol=0, atol=0)
    w = [rec[0] for rec in every3]
    assert torch.equal(w[1], w[0]) and torch.equal(w[2], w[0]) and torch.equal(w[4], w[3]) and torch.equal(w[5], w[3])
    assert (w[3] - w[0]).abs().max() > 1e-6  # step 3 computed new weights
    # step 4 by hand: the trunk gets 0.5 sum_i w_i dL_i/dtheta (w: the reported raw-loss weights, loss_scale 0.5),
    # each head 0.5 sum_i dL_i/dtheta / L_i(0), its own components' gradients unweighted (normalize: initial)
    first, _ = models[0]()
    model = models[4]
    losses, _ = model()
    expected = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for i, n in enumerate(NAMES):
        grads = torch.autograd.grad(losses[n], list(model.parameters()), retain_graph=True, allow_unused=True)
        for (k, _), g in zip(model.named_parameters(), grads, strict=True):
            if g is not None:
                expected[k] += 0.5 * g * (1 / first[n].detach() if k.startswith("heads.") else w[4][i])
    for k, g in expected.items():
        # the reported weights and L_i(0) are kept in float32: agreement to float32 precision
        torch.testing.assert_close(every3[4][1][k], g, rtol=1e-6, atol=1e-6 * g.abs().max().item(), msg=k)


def test_update_every_is_refused_for_aggregators_that_are_no_weighting():
    for aggregator in ROW_AGGREGATORS:
        with pytest.raises(ValueError, match=rf"expected jacobian.update_every 1 for jacobian.aggregator={aggregator}"):
            build_balancer(jacobian_cfg(aggregator, "autojac", update_every=2), NAMES)
    assert build_balancer(jacobian_cfg("nash_mtl", "autojac", update_every=2), NAMES).update_every == 2  # weights


def test_engine_auto_is_gramian_where_it_applies_and_gramian_is_refused_elsewhere(monkeypatch):
    import torchjd.autojac

    calls = []
    mtl_backward = torchjd.autojac.mtl_backward
    monkeypatch.setattr(torchjd.autojac, "mtl_backward", lambda *a, **k: calls.append(1) or mtl_backward(*a, **k))
    steps("upgrad", "auto", n=1)
    assert calls == []  # auto: upgrad's weights come from the Gramian
    steps("upgrad", "autojac", n=1)
    assert calls == [1]
    for aggregator in JACOBIAN_ONLY:
        calls.clear()
        steps(aggregator, "auto", n=1)
        assert calls == [1]  # auto: graddrop, config and nash_mtl need J's rows
        with pytest.raises(ValueError, match=rf"^expected jacobian.engine auto or autojac for jacobian.aggregator="
                                             rf"{aggregator}, whose aggregation reads the Jacobian's rows, not only "
                                             r"their Gramian, found gramian$"):
            build_balancer(jacobian_cfg(aggregator, "gramian"), NAMES)


def test_gramian_engine_shares_gradvacs_state_with_the_aggregator():
    """gradvac's EMA lives in the aggregator's weighting, which the Gramian engine calls: the same state."""
    model = Toy6().double()
    b = build_balancer(jacobian_cfg("gradvac", "gramian"), NAMES)
    losses, features = model()
    b.backward(losses, BalanceContext(shared_params=list(model.trunk.parameters()), features=features))
    assert b.aggregator.gramian_weighting._phi_t.abs().sum() > 0
    assert set(b.state_dict()) == set(build_balancer(jacobian_cfg("gradvac", "gramian"), NAMES).state_dict())


# -- engine: features (MGDA-UB's Gramian at the shared features) ------------------------------------------


class SameFeatures(nn.Module):
    """x [B,5] -> shared features f [B,4] -> one linear head per component, every head reading all of f.
    ``identity``: f IS the shared parameter [B,4] (the trunk is the identity, Z = parameters)."""

    def __init__(self, k: int, identity: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        self.identity = identity
        self.trunk = nn.Linear(5, 4)
        self.z = nn.Parameter(torch.randn(16, 4, generator=g))
        self.heads = nn.ModuleList(nn.Linear(4, 1) for _ in range(k))
        self.register_buffer("x", torch.randn(16, 5, generator=g))
        self.register_buffer("y", torch.randn(16, k, generator=g) * torch.linspace(-2.0, 3.0, k))

    def shared(self) -> list[nn.Parameter]:
        return [self.z] if self.identity else list(self.trunk.parameters())

    def forward(self, names: list[str]) -> tuple[dict[str, Tensor], list[Tensor]]:
        f = self.z * 1.0 if self.identity else torch.tanh(self.trunk(self.x))  # [B,4]
        pred = {n: head(f)[:, 0] for n, head in zip(names, self.heads, strict=True)}  # one head per component
        return {n: (pred[n] - self.y[:, i]).pow(2).mean() for i, n in enumerate(names)}, [f]


def one_step(model: SameFeatures, names: list[str], aggregator: str, engine: str):
    """One balancer step on ``model``: (the balancer, the losses, the features)."""
    if names == NAMES:
        cfg = jacobian_cfg(aggregator, engine)  # unequal weights (the preference) for upgrad and dualproj
    else:
        cfg = BalancerConfig(strategy="jacobian", weights=dict.fromkeys(names, 1.0))
        cfg.jacobian.aggregator, cfg.jacobian.engine = aggregator, engine
    balancer = build_balancer(cfg, names)
    losses, features = model(names)
    torch.manual_seed(0)  # random, pcgrad and gradvac draw from the global RNG
    balancer.backward(losses, BalanceContext(shared_params=model.shared(), features=features))
    return balancer, losses, features


@pytest.mark.parametrize("aggregator", ["upgrad", "dualproj", "mgda", "imtl_g"])
def test_features_engine_weights_are_the_weighting_of_the_feature_gradients_gramian(aggregator):
    """Every component reads the same features f: the bound's Gramian is that of the rows d(L_i / L_i(0))/df.
    Built by hand from those rows, weighted by a fresh TorchJD weighting of the aggregator (preference: the
    config weights), over L_i(0) (normalize: initial; on the first step L_i(0) = L_i)."""
    from torchjd import aggregation as A

    model = SameFeatures(len(NAMES)).double()
    balancer, losses, _ = one_step(model, NAMES, aggregator, "features")
    L0 = torch.stack([losses[n] for n in NAMES]).detach()
    losses, (f,) = model(NAMES)  # the same forward again (the balancer's backward freed its graph)
    rows = torch.stack([torch.autograd.grad(losses[n] / L0[i], f)[0].flatten() for i, n in enumerate(NAMES)])
    G = rows @ rows.T  # [K, K]
    pref = torch.tensor([jacobian_cfg(aggregator, "features").weights[n] for n in NAMES], dtype=G.dtype)
    weighting = {"upgrad": lambda: A.UPGradWeighting(pref_vector=pref), "dualproj": lambda: A.DualProjWeighting(
        pref_vector=pref), "mgda": A.MGDAWeighting, "imtl_g": A.IMTLGWeighting}[aggregator]()
    expected = weighting(G) / L0
    assert (expected * L0 / (expected * L0).mean() - 1).abs().max() > 1e-3  # not all equal: a conflict resolved
    torch.testing.assert_close(balancer.weights_tensor(), expected.to(balancer.w), rtol=1e-6, atol=0.0)


def test_features_engine_mgda_is_the_closed_form_min_norm_of_two_feature_gradients():
    """MGDA-UB with two components, by hand: alpha = clip(<g2 - g1, g2> / |g1 - g2|^2, 0, 1) on the feature
    gradients g_i = d(L_i / L_i(0))/df (Sener & Koltun 2018, Algorithm 1)."""
    names = ["a", "b"]
    model = SameFeatures(2).double()
    balancer, losses, _ = one_step(model, names, "mgda", "features")
    L0 = torch.stack([losses[n] for n in names]).detach()
    losses, (f,) = model(names)
    g1, g2 = (torch.autograd.grad(losses[n] / L0[i], f)[0].flatten() for i, n in enumerate(names))
    alpha = ((g2 - g1) @ g2 / (g1 - g2).pow(2).sum()).clamp(0, 1)
    expected = torch.stack([alpha, 1 - alpha]) / L0
    assert 0.05 < alpha < 0.95  # a real conflict between the two, not a vertex
    torch.testing.assert_close(balancer.weights_tensor(), expected.to(balancer.w), rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("aggregator", GRAMIAN)
def test_features_engine_is_the_gramian_engine_where_the_trunk_is_the_identity(aggregator):
    """Z = the shared parameters: the feature gradients are J's rows, so both engines give the same weights and
    the same .grad on every parameter."""
    result = {}
    for engine in ("gramian", "features"):
        model = SameFeatures(len(NAMES), identity=True).double()
        balancer, _, _ = one_step(model, NAMES, aggregator, engine)
        grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        result[engine] = balancer.weights_tensor(), grads
    (w_g, grads_g), (w_f, grads_f) = result["gramian"], result["features"]
    torch.testing.assert_close(w_f, w_g, rtol=1e-7, atol=0.0)
    assert grads_f.keys() == grads_g.keys() and "z" in grads_f
    for k in grads_g:
        torch.testing.assert_close(grads_f[k], grads_g[k], rtol=1e-9, atol=1e-12, msg=k)


def test_features_engine_differs_from_gramian_through_a_trunk_and_skips_the_vjp(batched_calls):
    """Through a real trunk the bound's weights are not J's (a surrogate); and no batched vector-Jacobian
    product is made: the rows are the cotangents at the features."""
    batched = batched_calls
    features = steps("upgrad", "features", n=1)
    assert batched and not any(batched)
    gramian = steps("upgrad", "gramian", n=1)
    assert not torch.allclose(features[0][0], gramian[0][0], rtol=1e-3)
    for k in ("heads.sig.weight", "heads.peak.bias", "heads.thr.weight"):  # heads: their own gradients, unweighted
        torch.testing.assert_close(features[0][1][k], gramian[0][1][k], rtol=1e-12, atol=0.0, msg=k)


def test_features_engine_signal_is_orthogonal_to_the_heads_on_the_quickstart_network():
    """What the features engine cannot see: the signal loss reaches the features on the noisy rows, the heads
    on the clean rows, so the bound's Gramian has G[signal, head] = 0 exactly (docs/balancing.md)."""
    from bench.balancers import Setup, make_batch

    s = Setup("fixed")
    out = s.objective(s.model, make_batch(4, torch.Generator().manual_seed(2)), s.gen, train=True)
    rows = [torch.autograd.grad(out.losses[n], out.features, retain_graph=True, allow_unused=True,
                                materialize_grads=True) for n in out.losses]
    G = sum(torch.stack([r[j] for r in rows]).flatten(1) @ torch.stack([r[j] for r in rows]).flatten(1).T
            for j in range(len(out.features)))
    assert list(out.losses)[0] == "signal" and G[0, 0] > 0
    assert torch.equal(G[0, 1:], torch.zeros(5)) and G[1:, 1:].abs().sum() > 0


@pytest.mark.parametrize("aggregator", JACOBIAN_ONLY)
def test_features_engine_is_refused_for_aggregators_that_need_the_rows(aggregator):
    with pytest.raises(ValueError, match=rf"^expected jacobian.engine auto or autojac for jacobian.aggregator="
                                         rf"{aggregator}, whose aggregation reads the Jacobian's rows, not only "
                                         r"their Gramian, found features$"):
        build_balancer(jacobian_cfg(aggregator, "features"), NAMES)
