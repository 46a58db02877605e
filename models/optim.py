"""Optimizer parameter groups, built from settings that travel on the parameters themselves.

A parameter with ``p._optim = {"lr": ..., "weight_decay": ...}`` (S4D ``log_dt``, ``A``) gets a group
with those settings; biases, norm weights and other 1-D parameters (embeddings of one vector, D skips)
get no weight decay; every other parameter gets ``weight_decay``. Groups carry a ``name`` so logs and
schedulers can tell them apart (torch optimizers keep extra keys in a group).
"""

from __future__ import annotations

from torch import nn


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Groups for ``torch.optim.AdamW(param_groups(model, lr, wd))``; empty groups are left out."""
    decay, no_decay, tagged = [], [], {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        hp = getattr(p, "_optim", None)
        if hp is not None:
            key = tuple(sorted(hp.items()))
            tagged.setdefault(key, []).append(p)
        elif p.dim() < 2:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    for i, (key, params) in enumerate(tagged.items()):
        groups.append({"name": f"ssm{i}" if i else "ssm", "params": params, "lr": lr, "weight_decay": weight_decay}
                      | dict(key))
    return [g for g in groups if g["params"]]
