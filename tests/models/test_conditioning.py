"""models/conditioning.py's label conditioning (issue 28): type and threshold reach the denoiser (t > 0)
only, each with its own null, and never the heads' answer pass at t = 0."""

from __future__ import annotations

import math

import pytest
import torch

from models import build_model
from models.unet import HEAD_OUTPUTS, WAVE_OUTPUTS

NAN = math.nan
# (type, threshold dB) requests: every type, both nulls, no response, and thresholds across the span
REQUESTS = [(0, 20.0), (1, 60.0), (2, 60.0), (3, 105.0), (4, 40.0), (-1, 60.0), (2, NAN), (-1, NAN), (0, 120.0)]


def label_net(tiny_cfg, make_stats, **overrides):
    """A label-conditioned tiny network whose label MLP is not at its zero start (so labels matter at t > 0)."""
    torch.manual_seed(0)
    net = build_model(tiny_cfg(label_conditioning=True, peak_head="map", **overrides), make_stats()).eval()
    with torch.no_grad():
        for p in net.cond.label.mlp[-1].parameters():
            p.normal_(0.0, 0.5)
    return net


def labels(B: int, y: int, h: float) -> dict[str, torch.Tensor]:
    return {"label": torch.full((B,), y, dtype=torch.long), "threshold": torch.full((B,), h)}


def test_the_label_condition_never_reaches_the_answer_pass(make_inputs, make_stats, tiny_cfg):
    """No leakage: at t = 0 every head output (and the signal) is bit-identical whatever type and threshold
    the caller passes, nulls included; at t > 0 the same requests move the denoiser."""
    net = label_net(tiny_cfg, make_stats)
    x, _, static = make_inputs(4)
    t0, t = torch.zeros(4, dtype=torch.long), torch.full((4,), 300)
    keys = ("signal", *HEAD_OUTPUTS, *WAVE_OUTPUTS)
    with torch.no_grad():
        base = net(x, t0, static)  # no labels at all
        for y, h in REQUESTS:
            out = net(x, t0, static, **labels(4, y, h))
            assert all(torch.equal(out[k], base[k]) for k in keys), (y, h)
        noisy = [net(x, t, static, **labels(4, y, h))["signal"] for y, h in REQUESTS[:8]]
    for i in range(len(noisy)):
        for j in range(i):
            assert not torch.allclose(noisy[i], noisy[j], atol=1e-6), (REQUESTS[i], REQUESTS[j])


def test_mixed_rows_answer_at_t0_as_without_labels(make_inputs, make_stats, tiny_cfg):
    """The rule is per row: in one batch of t = 0 and t > 0 rows (the training forward), the t = 0 rows
    answer as without labels, bit for bit, while the t > 0 rows read them."""
    net = label_net(tiny_cfg, make_stats)
    x, _, static = make_inputs(4)
    t = torch.tensor([0, 0, 500, 900])
    with torch.no_grad():
        mixed = net(x, t, static, **labels(4, 2, 60.0))
        without = net(x, t, static)
    assert all(torch.equal(mixed[k][:2], without[k][:2]) for k in ("signal", *HEAD_OUTPUTS))
    assert not torch.allclose(mixed["signal"][2:], without["signal"][2:], atol=1e-6)


def test_the_guidance_drop_drops_the_labels_too(make_inputs, make_stats, tiny_cfg):
    """Guidance's unconditional branch (drop_cond) is the same whatever the labels: everything is dropped."""
    net = label_net(tiny_cfg, make_stats)
    x, _, static = make_inputs(3)
    t, drop = torch.full((3,), 400), torch.ones(3, dtype=torch.bool)
    with torch.no_grad():
        a = net(x, t, static, drop_cond=drop, **labels(3, 1, 60.0))["signal"]
        b = net(x, t, static, drop_cond=drop)["signal"]
    assert torch.equal(a, b)


def test_nulls_and_no_response(make_stats, tiny_cfg):
    """Each label's null is its own input; "no response" (105 dB and above) is one category of its own."""
    net = label_net(tiny_cfg, make_stats)
    e = net.cond.label
    null = torch.zeros(6, dtype=torch.bool)
    y = torch.tensor([-1, 2, 2, 2, 2, 2])
    h = torch.tensor([60.0, NAN, 60.0, 105.0, 130.0, 100.0])
    with torch.no_grad():
        out = e(y, h, null)  # (6 E)
        assert torch.equal(out[3], out[4])  # 105 and 130 dB: both "no response"
        assert not torch.allclose(out[3], out[5])  # 100 dB is a threshold, not "no response"
        assert not torch.allclose(out[1], out[2]) and not torch.allclose(out[0], out[2])  # nulls differ from values
        both = e(y, h, torch.ones(6, dtype=torch.bool))  # null: both nulls whatever is given
        assert torch.equal(both, both[:1].expand_as(both))
        one = e(torch.tensor([-1]), torch.tensor([NAN]), torch.zeros(1, dtype=torch.bool))[0]
        torch.testing.assert_close(both[0], one)  # the same as asking for neither


def test_a_new_label_network_starts_as_the_one_without(make_inputs, make_stats, tiny_cfg):
    """MLP_y's last layer starts at zero: before training the labels change nothing."""
    torch.manual_seed(0)
    net = build_model(tiny_cfg(label_conditioning=True), make_stats()).eval()
    x, t, static = make_inputs(3)
    with torch.no_grad():
        assert torch.equal(net(x, t, static, **labels(3, 3, 105.0))["signal"], net(x, t, static)["signal"])


def test_off_by_default_builds_the_network_as_before(make_inputs, make_stats, tiny_cfg):
    """Without the key the network has no label parameters (checkpoints saved before it load strictly) and
    refuses label inputs with one line."""
    torch.manual_seed(0)
    net = build_model(tiny_cfg(), make_stats()).eval()
    torch.manual_seed(0)
    off = build_model(tiny_cfg(label_conditioning=False), make_stats()).eval()
    assert not net.label_conditioned and net.cond.label is None
    assert not any(k.startswith("cond.label") for k in net.state_dict())
    assert net.state_dict().keys() == off.state_dict().keys()
    assert all(torch.equal(v, off.state_dict()[k]) for k, v in net.state_dict().items())
    x, t, static = make_inputs(2)
    with pytest.raises(ValueError, match=r"^ABRNet input label/threshold: expected None \(the network was built "
                                         r"without model.label_conditioning\), found a tensor$"):
        net(x, t, static, **labels(2, 0, 60.0))
    on = build_model(tiny_cfg(label_conditioning=True), make_stats())
    assert on.label_conditioned and {k for k in on.state_dict() if k.startswith("cond.label")} == {
        "cond.label.mlp.0.weight", "cond.label.mlp.0.bias", "cond.label.mlp.2.weight", "cond.label.mlp.2.bias",
        "cond.label.threshold_mean", "cond.label.threshold_std"}


@pytest.mark.parametrize(("kw", "match"), [
    ({"label": torch.zeros(2, dtype=torch.long)}, r"ABRNet input label: expected an int64 tensor of shape \[3\]"),
    ({"label": torch.zeros(3)}, r"ABRNet input label: expected an int64 tensor of shape \[3\], found torch.float32"),
    ({"threshold": torch.zeros(3, dtype=torch.long)}, r"ABRNet input threshold: expected a float tensor of shape"),
])
def test_bad_label_inputs_are_one_line(kw, match, make_inputs, make_stats, tiny_cfg):
    net = build_model(tiny_cfg(label_conditioning=True), make_stats())
    with pytest.raises(ValueError, match=match):
        net(*make_inputs(3), **kw)


def wave_net(tiny_cfg, make_stats):
    """A wave-conditioned tiny network whose wave MLP is not at its zero start."""
    net = label_net(tiny_cfg, make_stats, wave_conditioning=True)
    with torch.no_grad():
        for p in net.cond.wave.mlp[-1].parameters():
            p.normal_(0.0, 0.5)
    return net


# wave V requests [present, latency ms, amplitude µV]: present at two latencies and amplitudes, absent, unknown
WAVES = [(1.0, 6.0, 0.3), (1.0, 8.0, 0.3), (1.0, 6.0, 0.6), (0.0, NAN, NAN), (NAN, NAN, NAN)]


def test_the_wave_condition_moves_the_denoiser_and_never_the_answer_pass(make_inputs, make_stats, tiny_cfg):
    """model.wave_conditioning: at t > 0 each wave V request gives another denoiser output; at t = 0 (the
    answers) and under the guidance drop nothing changes, bit for bit; absent ignores latency and amplitude."""
    net = wave_net(tiny_cfg, make_stats)
    x, _, static = make_inputs(3)
    t0, t = torch.zeros(3, dtype=torch.long), torch.full((3,), 300)
    keys = ("signal", *HEAD_OUTPUTS, *WAVE_OUTPUTS)
    drop = torch.ones(3, dtype=torch.bool)
    with torch.no_grad():
        base0, base_drop = net(x, t0, static), net(x, t, static, drop_cond=drop)["signal"]
        noisy = []
        for w in WAVES:
            wave = torch.tensor(w).expand(3, 3)
            out = net(x, t0, static, **labels(3, 2, 60.0), wave=wave)
            assert all(torch.equal(out[k], base0[k]) for k in keys), w
            assert torch.equal(net(x, t, static, drop_cond=drop, wave=wave)["signal"], base_drop)
            noisy.append(net(x, t, static, **labels(3, 2, 60.0), wave=wave)["signal"])
        unknown = net(x, t, static, **labels(3, 2, 60.0))["signal"]  # wave None: the null
        absent_elsewhere = net(x, t, static, **labels(3, 2, 60.0), wave=torch.tensor([0.0, 7.0, 0.5]).expand(3, 3))
    torch.testing.assert_close(noisy[4], unknown)
    torch.testing.assert_close(noisy[3], absent_elsewhere["signal"])
    for i in range(4):
        for j in range(i):
            assert not torch.allclose(noisy[i], noisy[j], atol=1e-6), (WAVES[i], WAVES[j])


def test_a_new_wave_network_starts_as_the_one_without(make_inputs, make_stats, tiny_cfg):
    torch.manual_seed(0)
    net = build_model(tiny_cfg(label_conditioning=True, wave_conditioning=True), make_stats()).eval()
    x, t, static = make_inputs(2)
    with torch.no_grad():
        assert torch.equal(net(x, t, static, wave=torch.tensor([[1.0, 6.0, 0.3]] * 2))["signal"],
                           net(x, t, static)["signal"])
    off = build_model(tiny_cfg(label_conditioning=True), make_stats())
    assert not off.wave_conditioned and not any(k.startswith("cond.wave") for k in off.state_dict())
    with pytest.raises(ValueError, match=r"^ABRNet input wave: expected None \(the network was built without "
                                         r"model.wave_conditioning\), found a tensor$"):
        off(x, t, static, wave=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"^ABRNet input wave: expected a float tensor of shape \[2, 3\]"):
        net(x, t, static, wave=torch.zeros(2, 2))


def test_wave_conditioning_needs_label_conditioning(tiny_cfg):
    with pytest.raises(ValueError, match="model.wave_conditioning: expected model.label_conditioning true"):
        tiny_cfg(wave_conditioning=True)



def fourth_column_moves_only_the_denoiser(net: torch.nn.Module, make_inputs, high: float, low: float) -> None:
    """A new ``net`` whose wave condition has a fourth column: at the zero start the column changes nothing; with
    the embeddings' last layers drawn, ``high`` against ``low`` (and NaN, its unknown, against ``low``) moves the
    denoiser's output at t > 0 and no output at t = 0."""
    x, _, static = make_inputs(3)
    t0, t = torch.zeros(3, dtype=torch.long), torch.full((3,), 300)
    one, other, unknown = (torch.tensor([1.0, 6.0, 0.3, v]).expand(3, 4) for v in (high, low, NAN))
    with torch.no_grad():
        assert torch.equal(net(x, t, static, wave=one)["signal"], net(x, t, static)["signal"])  # zero start
        for p in (*net.cond.label.mlp[-1].parameters(), *net.cond.wave.mlp[-1].parameters()):
            p.normal_(0.0, 0.5)
        keys = ("signal", *HEAD_OUTPUTS, *WAVE_OUTPUTS)
        at0 = [net(x, t0, static, **labels(3, 1, 60.0), wave=w) for w in (one, other)]
        assert all(torch.equal(at0[0][k], at0[1][k]) for k in keys)
        a, b, c = (net(x, t, static, **labels(3, 1, 60.0), wave=w)["signal"] for w in (one, other, unknown))
    assert not torch.allclose(a, b, atol=1e-6) and not torch.allclose(c, b, atol=1e-6)


def test_the_microphonic_column_moves_the_denoiser_and_never_the_answer_pass(make_inputs, make_stats, tiny_cfg):
    """model.microphonic_conditioning: the wave condition's fourth column (the microphonic index) gives another
    denoiser output at t > 0, none at t = 0; NaN is its unknown; a new network starts as the one without it, and
    a wave tensor of the wrong width is one line naming the width."""
    torch.manual_seed(0)
    net = build_model(tiny_cfg(label_conditioning=True, wave_conditioning=True, microphonic_conditioning=True,
                               peak_head="map"), make_stats()).eval()
    fourth_column_moves_only_the_denoiser(net, make_inputs, 2.0, 0.0)
    assert net.microphonic_conditioned and net.wave_conditioned
    x, _, static = make_inputs(3)
    with pytest.raises(ValueError, match=r"^ABRNet input wave: expected a float tensor of shape \[3, 4\]"):
        net(x, torch.full((3,), 300), static, wave=torch.zeros(3, 3))


def test_the_noise_column_moves_the_denoiser_and_never_the_answer_pass(make_inputs, make_stats, tiny_cfg):
    """model.noise_conditioning: the wave condition's last column (the residual noise, µV) gives another denoiser
    output at t > 0, none at t = 0, and under guidance's drop too (which nulls the rest); NaN is its unknown; with
    the microphonic index too it comes after it; a new network starts as the one without it."""
    from models.conditioning import NOISE_LOG10_CENTRE, NOISE_LOG10_SCALE, WaveEmbedding

    torch.manual_seed(0)
    net = build_model(tiny_cfg(label_conditioning=True, wave_conditioning=True, noise_conditioning=True,
                               peak_head="map"), make_stats()).eval()
    fourth_column_moves_only_the_denoiser(net, make_inputs, 0.1, 0.01)
    assert net.noise_conditioned and not net.microphonic_conditioned
    # guidance's drop nulls type, threshold and wave V but not the noise level: both branches read it
    x, _, static = make_inputs(3)
    t, dropped = torch.full((3,), 300), torch.ones(3, dtype=torch.bool)
    with torch.no_grad():
        loud, quiet = (net(x, t, static, drop_cond=dropped, **labels(3, 1, 60.0),
                           wave=torch.tensor([1.0, 6.0, 0.3, v]).expand(3, 4))["signal"] for v in (0.1, 0.01))
        other_wave = net(x, t, static, drop_cond=dropped, **labels(3, 2, 30.0),
                         wave=torch.tensor([0.0, NAN, NAN, 0.01]).expand(3, 4))["signal"]
    assert not torch.allclose(loud, quiet, atol=1e-6)
    torch.testing.assert_close(other_wave, quiet)  # the rest of the condition is null under the drop
    both = WaveEmbedding(8, make_stats(), microphonic=True, noise=True)
    assert both.columns == 5 and both.mlp[0].in_features == 9
    # u's last two entries: known, z of log10 µV about the centre; unknown (NaN) and the null read as 0, 0
    both.mlp = torch.nn.Identity()  # read u itself
    u = both(torch.tensor([[1.0, 6.0, 0.3, 0.5, 10 ** NOISE_LOG10_CENTRE * 10 ** NOISE_LOG10_SCALE],
                           [1.0, 6.0, 0.3, 0.5, NAN], [1.0, 6.0, 0.3, 0.5, 0.02]]),
             torch.tensor([False, False, True]))
    seen = u[:, -2:].tolist()
    assert seen[0] == pytest.approx([1.0, 1.0]) and seen[1] == [0.0, 0.0] and seen[2] == [0.0, 0.0]


def test_noise_conditioning_needs_wave_conditioning(tiny_cfg):
    with pytest.raises(ValueError, match="model.noise_conditioning: expected model.wave_conditioning true"):
        tiny_cfg(label_conditioning=True, noise_conditioning=True)


def test_microphonic_conditioning_needs_wave_conditioning(tiny_cfg):
    with pytest.raises(ValueError, match="model.microphonic_conditioning: expected model.wave_conditioning true"):
        tiny_cfg(label_conditioning=True, microphonic_conditioning=True)


def test_the_wave_template_is_a_bump_at_the_requested_latency_and_never_reaches_the_answer_pass(
        make_inputs, make_stats, tiny_cfg):
    """model.wave_template: wave V's condition drawn where it lies (a bump of the requested amplitude, relative to
    the training mean, peaking at the requested latency), zero where wave V is absent, unknown or null (t = 0,
    the guidance drop); the denoiser's output at t > 0 moves with the latency through the template alone (the
    FiLM embedding kept at zero), never the answer pass; a new network starts as the one without it."""
    from models.unet import MS_PER_SAMPLE

    torch.manual_seed(0)
    net = build_model(tiny_cfg(label_conditioning=True, wave_conditioning=True, wave_template=True,
                               peak_head="map"), make_stats()).eval()
    x, _, static = make_inputs(4)
    t0, t = torch.zeros(4, dtype=torch.long), torch.full((4,), 300)
    wave = torch.tensor([[1.0, 6.0, 0.3], [1.0, 8.0, 0.15], [0.0, NAN, NAN], [NAN, NAN, NAN]])
    keep, drop = torch.zeros(4, dtype=torch.bool), torch.tensor([True, False, False, False])
    m = net.cond.wave_template(t, keep, wave, 200, MS_PER_SAMPLE)[:, 0]  # (4 200)
    mean = float(net.cond.wave.amplitude_mean)
    assert m.argmax(1)[:2].tolist() == [round(6.0 / MS_PER_SAMPLE), round(8.0 / MS_PER_SAMPLE)]
    torch.testing.assert_close(m.amax(1)[:2], torch.tensor([0.3, 0.15]) / mean)
    assert not m[2:].any()  # absent, unknown
    assert not net.cond.wave_template(t0, keep, wave, 200, MS_PER_SAMPLE).any()  # the answer pass
    assert not net.cond.wave_template(t, drop, wave, 200, MS_PER_SAMPLE)[0].any()  # the guidance drop
    early, late = wave[:1].expand(4, 3), torch.tensor([[1.0, 8.0, 0.3]]).expand(4, 3)
    with torch.no_grad():
        start = [net(x, t, static, wave=w)["signal"] for w in (early, late)]
        assert torch.equal(*start)  # the template's weights start at zero
        net.template_stem.weight.normal_(0.0, 0.5)
        keys = ("signal", *HEAD_OUTPUTS, *WAVE_OUTPUTS)
        at0 = [net(x, t0, static, **labels(4, 1, 60.0), wave=w) for w in (early, late)]
        assert all(torch.equal(at0[0][k], at0[1][k]) for k in keys)
        a, b = (net(x, t, static, **labels(4, 1, 60.0), wave=w)["signal"] for w in (early, late))
    assert not torch.allclose(a, b, atol=1e-6)
    off = build_model(tiny_cfg(label_conditioning=True, wave_conditioning=True), make_stats())
    assert off.template_stem is None and not any(k.startswith("template_stem") for k in off.state_dict())


def test_wave_template_needs_wave_conditioning(tiny_cfg):
    with pytest.raises(ValueError, match="model.wave_template: expected model.wave_conditioning true"):
        tiny_cfg(label_conditioning=True, wave_template=True)
