"""param_groups: SSM parameters get their own settings; no weight decay on biases and norms."""

from __future__ import annotations

import torch

from models import build_model, param_groups


def test_groups_cover_every_parameter_once(tiny_cfg, make_stats):
    model = build_model(tiny_cfg(ssm_lr=5e-4), make_stats())
    groups = param_groups(model, lr=2e-3, weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"decay", "no_decay", "ssm"}
    assert by_name["ssm"]["lr"] == 5e-4 and by_name["ssm"]["weight_decay"] == 0.0
    assert by_name["decay"]["lr"] == 2e-3 and by_name["decay"]["weight_decay"] == 0.05
    assert by_name["no_decay"]["weight_decay"] == 0.0
    ssm = {id(p) for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] in ("log_dt", "log_A_real", "A_imag")}
    assert {id(p) for p in by_name["ssm"]["params"]} == ssm
    assert all(p.dim() >= 2 for p in by_name["decay"]["params"])
    assert all(p.dim() < 2 for p in by_name["no_decay"]["params"])


def test_groups_drive_an_optimizer(tiny_cfg, make_stats, make_inputs):
    model = build_model(tiny_cfg(), make_stats())
    opt = torch.optim.AdamW(param_groups(model, lr=1e-3, weight_decay=0.01))
    before = model.encoder[0][0].s4d.kernel.log_dt.detach().clone()
    model(*make_inputs(2))["signal"].square().mean().backward()
    opt.step()
    assert not torch.equal(before, model.encoder[0][0].s4d.kernel.log_dt)
    assert [g["name"] for g in opt.param_groups] == ["decay", "no_decay", "ssm"]


def test_frozen_parameters_are_left_out(tiny_cfg, make_stats):
    model = build_model(tiny_cfg(), make_stats())
    model.stem.weight.requires_grad_(False)
    ids = {id(p) for g in param_groups(model, 1e-3, 0.0) for p in g["params"]}
    assert id(model.stem.weight) not in ids
