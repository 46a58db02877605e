"""ModelConfig: validation, every key read by the network, and the full-size parameter count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data.schema import ConfigError, from_dict, read_yaml
from models import ModelConfig, build_model
from models.config import FULL_SIZE

ROOT = Path(__file__).resolve().parents[2]


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_quickstart_default_is_well_under_one_million(make_stats):
    n = _count(build_model(ModelConfig(), make_stats()))
    assert 50_000 < n < 500_000


def test_full_size_is_10_to_30_million(make_stats):
    n = _count(build_model(ModelConfig(**FULL_SIZE), make_stats()))
    assert 10_000_000 <= n <= 30_000_000


def test_configs_config_yaml_model_section_is_10_to_30_million(make_stats):
    path = ROOT / "configs" / "config.yaml"
    cfg = from_dict(ModelConfig, read_yaml(path).get("model", {}), "model")
    assert 10_000_000 <= _count(build_model(cfg, make_stats())) <= 30_000_000


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"down_factors": [2, 5, 2]}, r"model.down_factors: expected 2 factors"),
        ({"down_factors": [1, 5]}, r"model.down_factors: expected integers >= 2"),
        ({"channel_mults": []}, r"model.channel_mults: expected a non-empty list"),
        ({"d_state": 33}, r"model.d_state: expected an even state size"),
        ({"attn_heads": 3}, r"model.attn_heads: expected a divisor of every level width"),
        ({"attn_heads": 2, "head_dim": 33}, r"model.head_dim: expected a multiple of attn_heads=2"),
        ({"dropout": 1.0}, r"model.dropout': expected a value < 1.0"),
    ],
)
def test_bad_values_are_refused(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(ModelConfig, data, "model")


# Each key changes what is built (parameter count) or how it behaves; tested behaviours are named.
SIZE_KEYS = {
    "base_channels": 16,
    "channel_mults": [1, 3],
    "down_factors": [4],
    "blocks_per_level": 2,
    "d_state": 16,
    "bottleneck_attention": True,
    "attn_heads": 4,  # same parameter count: tested by behaviour below
    "mlp_ratio": 3,
    "cond_dim": 24,
    "head_dim": 16,
}
BEHAVIOUR_KEYS = {
    "blind_static": "tests/models/test_network.py::test_blind_static_answers_at_t0_whatever_the_stated_level",
    "bidirectional": "tests/models/test_s4d.py::test_unidirectional_layer_is_causal and test_bidirectional_network",
    "cond_drop_prob": "tests/models/test_network.py::test_cond_drop_prob_applies_in_training_mode_only",
    "ssm_lr": "tests/models/test_optim.py::test_groups_cover_every_parameter_once",
    "dropout": "test_dropout_is_active_in_training_mode_only",
    "peak_head": "tests/models/test_wave_head.py::test_peak_head_key_chooses_the_head",
    "label_conditioning": "tests/models/test_conditioning.py::test_the_label_condition_never_reaches_the_answer_pass",
    "type_drop_prob": "tests/training/test_objective.py::test_label_drops_honour_their_probabilities_independently",
    "threshold_drop_prob": ("tests/training/test_objective.py::"
                            "test_label_drops_honour_their_probabilities_independently"),
    "wave_conditioning": ("tests/models/test_conditioning.py::"
                          "test_the_wave_condition_moves_the_denoiser_and_never_the_answer_pass"),
    "wave_template": ("tests/models/test_conditioning.py::"
                      "test_the_wave_template_is_a_bump_at_the_requested_latency_and_never_reaches_the_answer_pass"),
    "microphonic_conditioning": ("tests/models/test_conditioning.py::"
                                 "test_the_microphonic_column_moves_the_denoiser_and_never_the_answer_pass"),
    "noise_conditioning": ("tests/models/test_conditioning.py::"
                           "test_the_noise_column_moves_the_denoiser_and_never_the_answer_pass"),
    "wave_drop_prob": ("tests/training/test_objective.py::"
                       "test_wave_condition_carries_the_batch_wave_v_and_drops_to_its_null"),
}


def test_every_key_is_covered():
    fields = set(ModelConfig.__dataclass_fields__)
    assert fields == set(SIZE_KEYS) | set(BEHAVIOUR_KEYS)


@pytest.mark.parametrize("key", [k for k in SIZE_KEYS if k != "attn_heads"])
def test_size_keys_change_the_network(key, tiny_cfg, make_stats):
    base = _count(build_model(tiny_cfg(), make_stats()))
    assert _count(build_model(tiny_cfg(**{key: SIZE_KEYS[key]}), make_stats())) != base


def test_attn_heads_changes_the_attention(tiny_cfg, make_stats, make_inputs):
    """Same parameters, different split of the channels: other outputs from the same weights."""
    torch.manual_seed(0)
    a = build_model(tiny_cfg(attn_heads=1), make_stats()).eval()
    b = build_model(tiny_cfg(attn_heads=4), make_stats()).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert not torch.allclose(a(*make_inputs(2))["signal"], b(*make_inputs(2))["signal"])


def test_bidirectional_network(tiny_cfg, make_stats, make_inputs):
    """With causal S4D layers the encoder is causal: early skip features ignore a late perturbation."""
    for bidirectional in (True, False):
        torch.manual_seed(0)
        model = build_model(tiny_cfg(bidirectional=bidirectional), make_stats()).eval()
        x, t, s = make_inputs(1)
        x2 = x.clone()
        x2[..., 150:] += 1.0
        c = model.cond(t, s, torch.zeros(1, dtype=torch.bool))
        with torch.no_grad():
            ea = model.encoder[0][0](model.stem(x.transpose(1, 2)) + model.pos, c)
            eb = model.encoder[0][0](model.stem(x2.transpose(1, 2)) + model.pos, c)
        assert torch.allclose(ea[:, :150], eb[:, :150], atol=1e-5) == (not bidirectional)


def test_dropout_is_active_in_training_mode_only(tiny_cfg, make_stats, make_inputs):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(dropout=0.5), make_stats())
    x, t, s = make_inputs(2)
    drop = torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        assert not torch.equal(model.train()(x, t, s, drop)["signal"], model(x, t, s, drop)["signal"])
        assert torch.equal(model.eval()(x, t, s, drop)["signal"], model(x, t, s, drop)["signal"])
