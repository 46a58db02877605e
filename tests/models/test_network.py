"""ABRNet: the network contract of DESIGN.md (shapes, conditioning, CFG, parameter views)."""

from __future__ import annotations

import pytest
import torch

from data.stats import DataStats
from models import ABRNet, build_model

KEYS = ("signal", "class_logits", "peak_logit", "peak_latency", "peak_amplitude", "threshold")


def _outputs_differ(a: dict, b: dict, tol: float = 1e-6) -> dict[str, bool]:
    return {k: not torch.allclose(a[k], b[k], atol=tol) for k in KEYS}


@pytest.mark.parametrize("B", [1, 3, 8])
def test_output_shapes(tiny_model, B, make_inputs):
    out = tiny_model(*make_inputs(B), return_features=True)
    assert set(out) == {*KEYS, "features"}
    assert out["signal"].shape == (B, 1, 200)
    assert out["class_logits"].shape == (B, 5)
    for k in ("peak_logit", "peak_latency", "peak_amplitude", "threshold"):
        assert out[k].shape == (B,)
        assert out[k].dtype == torch.float32
    h, z = out["features"]
    assert h.shape == (B, 200, 8) and z.shape == (B, 40, 8)


def test_every_parameter_receives_a_gradient(tiny_model, make_inputs):
    x, t, static = make_inputs(4)
    drop = torch.tensor([True, False, False, True])  # the null embedding is used too
    out = tiny_model(x, t, static, drop_cond=drop)
    sum(out[k].float().square().mean() for k in KEYS).backward()
    missing = [n for n, p in tiny_model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_every_head_reaches_the_trunk(tiny_model, make_inputs):
    """Each head's loss alone moves the last shared layer (GradNorm's W) and the encoder."""
    x, t, static = make_inputs(4)
    for key in KEYS:
        tiny_model.zero_grad()
        tiny_model(x, t, static)[key].float().square().mean().backward()
        for p in [*tiny_model.last_shared_parameters(), *tiny_model.encoder.parameters()]:
            assert p.grad is not None and p.grad.abs().sum() > 0, key


def test_timestep_conditions_every_output(tiny_model, make_inputs):
    x, t, static = make_inputs(3)
    with torch.no_grad():
        a, b = tiny_model(x, t, static), tiny_model(x, t + 37, static)
    assert all(_outputs_differ(a, b).values())


def test_static_parameters_condition_every_output(tiny_model, make_inputs):
    x, t, static = make_inputs(3)
    other = static.clone()
    other[:, 1] += 20.0  # intensity, dB
    with torch.no_grad():
        a, b = tiny_model(x, t, static), tiny_model(x, t, other)
    assert all(_outputs_differ(a, b).values())


def test_drop_cond_selects_the_null_path(tiny_model, make_inputs):
    x, t, static = make_inputs(3)
    other = static + torch.tensor([5.0, 20.0, 10.0, 300.0])
    drop = torch.ones(3, dtype=torch.bool)
    with torch.no_grad():
        a, b = tiny_model(x, t, static, drop_cond=drop), tiny_model(x, t, other, drop_cond=drop)
        c = tiny_model(x, t, static, drop_cond=~drop)
    assert not any(_outputs_differ(a, b).values())  # dropped: static no longer matters
    assert all(_outputs_differ(a, c).values())  # and the null path differs from the conditioned one
    mixed = tiny_model(x, t, static, drop_cond=torch.tensor([True, False, True]))
    assert torch.allclose(mixed["signal"][0], a["signal"][0], atol=1e-6)
    assert torch.allclose(mixed["signal"][1], c["signal"][1], atol=1e-6)


def test_cond_drop_prob_applies_in_training_mode_only(make_inputs, make_stats, tiny_cfg):
    x, t, static = make_inputs(3)
    torch.manual_seed(0)
    model = build_model(tiny_cfg(cond_drop_prob=1.0), make_stats())
    with torch.no_grad():
        dropped = model(x, t, static, drop_cond=torch.ones(3, dtype=torch.bool))["signal"]
        kept = model(x, t, static, drop_cond=torch.zeros(3, dtype=torch.bool))["signal"]
        assert torch.allclose(model.train()(x, t, static)["signal"], dropped)  # p = 1: every sample dropped
        assert torch.allclose(model.eval()(x, t, static)["signal"], kept)  # eval: never dropped


def test_same_seed_same_output(make_inputs, make_stats, tiny_cfg):
    x, t, static = make_inputs(2)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append(build_model(tiny_cfg(), make_stats()).eval()(x, t, static))
    torch.manual_seed(124)
    other = build_model(tiny_cfg(), make_stats()).eval()(x, t, static)
    assert not any(_outputs_differ(outs[0], outs[1], tol=0).values())
    assert all(_outputs_differ(outs[0], other).values())


def test_regression_heads_output_physical_units(make_inputs, make_stats, tiny_cfg):
    """mean + std * raw: the same raw head output maps through the DataStats of the run, unsquashed."""
    x, t, static = make_inputs(4)
    torch.manual_seed(0)
    a = build_model(tiny_cfg(), DataStats.identity()).eval()
    stats = make_stats()
    torch.manual_seed(0)
    b = build_model(tiny_cfg(), stats).eval()
    static_a = (static - torch.tensor(stats.static_mean)) / torch.tensor(stats.static_std)  # what b standardizes to
    with torch.no_grad():
        ra, rb = a(x, t, static_a), b(x, t, static)
    for key, mean, std in (("peak_latency", 7.8, 1.5), ("peak_amplitude", 0.17, 0.25), ("threshold", 30.0, 25.0)):
        assert torch.allclose(rb[key], mean + std * ra[key], atol=1e-4), key
    # no squashing: a large raw value passes through unbounded
    assert b.target_scale(torch.tensor([10.0]), 2).item() == pytest.approx(30.0 + 25.0 * 10.0)


def test_parameter_views_partition_the_model(tiny_model):
    shared = {id(p) for p in tiny_model.shared_parameters()}
    heads = tiny_model.head_parameters()
    assert set(heads) == {"signal", "class", "peak", "threshold"}
    head_ids = [id(p) for ps in heads.values() for p in ps]
    assert len(head_ids) == len(set(head_ids)) and not shared & set(head_ids)
    assert shared | set(head_ids) == {id(p) for p in tiny_model.parameters()}
    assert {id(p) for p in tiny_model.last_shared_parameters()} <= shared


def test_trunk_parameters_are_the_shared_ones_every_output_reaches(tiny_model, make_inputs):
    """As training feeds them: the signal output over x_t with some conditions dropped, the heads over
    a clean pass at t = 0 that never drops the condition."""
    x, t, static = make_inputs(4)
    drop = torch.tensor([True, False, False, True])
    reached = {}
    for key in KEYS:
        tiny_model.zero_grad()
        if key == "signal":
            out = tiny_model(x, t, static, drop_cond=drop)
        else:
            out = tiny_model(x, torch.zeros_like(t), static, drop_cond=torch.zeros_like(drop))
        out[key].float().square().mean().backward()
        reached[key] = {id(p) for p in tiny_model.shared_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trunk = {id(p) for p in tiny_model.trunk_parameters()}
    assert trunk == set.intersection(*reached.values())
    assert id(tiny_model.cond.null) not in trunk and not trunk & {id(p) for p in tiny_model.to_z.parameters()}


def test_features_are_what_the_heads_read(tiny_model, make_inputs):
    """Heads applied to the returned features (and the input, which the wave map head reads values
    from and which no parameter produces) reproduce the outputs (what mtl_backward relies on)."""
    x, t, static = make_inputs(2)
    with torch.no_grad():
        out = tiny_model(x, t, static, return_features=True)
        again = tiny_model.read_heads(*out["features"], x)
    assert all(torch.equal(out[k], again[k]) for k in KEYS)


def test_parameter_table_lists_blocks_and_total(tiny_model):
    table = tiny_model.parameter_table()
    total = sum(p.numel() for p in tiny_model.parameters())
    assert f"{total:,}" in table.splitlines()[-1]
    for name in ("cond", "encoder.0", "bottleneck.0", "decoder.0", "heads.signal", "heads.threshold"):
        assert name in table


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((2, 1, 199), (2,), (2, 4)), r"x_t: expected shape \[B, 1, 200\], found \[2, 1, 199\]"),
        (((2, 1, 200), (3,), (2, 4)), r"t: expected shape \[2\], found \[3\]"),
        (((2, 1, 200), (2,), (2, 3)), r"static: expected shape \[2, 4\], found \[2, 3\]"),
    ],
)
def test_bad_inputs_are_refused(tiny_model, shapes, match):
    x, t, static = shapes
    with pytest.raises(ValueError, match=match):
        tiny_model(torch.randn(x), torch.zeros(t, dtype=torch.long), torch.zeros(static))


def test_bad_drop_cond_is_refused(tiny_model, make_inputs):
    with pytest.raises(ValueError, match="drop_cond: expected a bool tensor"):
        tiny_model(*make_inputs(2), drop_cond=torch.zeros(2))


@pytest.mark.parametrize("factors", [[3], [7], [2, 2, 2, 2]])
def test_down_factors_must_divide_the_signal_length(factors, make_stats, tiny_cfg):
    cfg = tiny_cfg(channel_mults=[1] * (len(factors) + 1), down_factors=factors)
    with pytest.raises(ValueError, match=r"model.down_factors: expected factors whose product divides .* 200"):
        build_model(cfg, make_stats())


def test_deeper_config_builds_and_runs(make_inputs, make_stats, tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(channel_mults=[1, 2, 2, 4], down_factors=[2, 2, 5], blocks_per_level=2), make_stats())
    assert isinstance(model, ABRNet)
    assert len(model.encoder) == 3 and all(len(level) == 2 for level in model.encoder)
    out = model.eval()(*make_inputs(2))
    assert out["signal"].shape == (2, 1, 200)


def test_blind_static_answers_at_t0_whatever_the_stated_level(make_inputs, make_stats, tiny_cfg):
    """model.blind_static (issue 33): at t = 0 the blind column is not read; at t > 0 it still is."""
    torch.manual_seed(0)
    net = build_model(tiny_cfg(blind_static=["intensity"], peak_head="map"), make_stats()).eval()
    x, _, static = make_inputs(4)
    louder = static.clone()
    louder[:, 1] += 40.0  # intensity, dB
    t0, t = torch.zeros(4, dtype=torch.long), torch.full((4,), 300)
    with torch.no_grad():
        a, b = net(x, t0, static), net(x, t0, louder)
        assert all(torch.equal(a[k], b[k]) for k in (*KEYS, "wave_presence", "wave_latency"))
        moved = _outputs_differ(net(x, t, static), net(x, t, louder))  # the map's latency snaps to input peaks
        assert moved["signal"] and moved["class_logits"] and moved["peak_logit"]
        aged = static.clone()
        aged[:, 0] += 5.0  # a column that is not blind still conditions the answers
        assert _outputs_differ(a, net(x, t0, aged))["class_logits"]


@pytest.mark.parametrize(("blind", "match"), [(["level"], "expected distinct names among age, intensity"),
                                              (["rate", "rate"], "expected distinct names")])
def test_bad_blind_static_is_refused(blind, match, tiny_cfg):
    with pytest.raises(ValueError, match=f"model.blind_static: {match}"):
        tiny_cfg(blind_static=blind)
