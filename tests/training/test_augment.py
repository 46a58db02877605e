"""training/augment.py and the keys training.intensity_dropout / training.intensity_jitter_db (issue 33)."""

from __future__ import annotations

import pytest
import torch

from tests.runs import tiny_config
from training.augment import perturb_intensity
from training.setup import build_trainer

SMALL = ["data.synthetic.patients=3", "training.epochs=1", "training.clinical_validation=false",
         "logging.use_tensorboard=false"]


def _static(n: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    level = 5.0 * torch.randint(0, 21, (n,), generator=g).float()
    return torch.stack([torch.full((n,), 1.0), level, torch.full((n,), 31.1), torch.full((n,), 2.0)], dim=1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_off_is_the_same_tensor_and_draws_nothing():
    static, g = _static(), torch.Generator().manual_seed(1)
    state = g.get_state()
    assert perturb_intensity(static, dropout=0.0, jitter_db=0.0, fill_db=50.0, generator=g) is static
    assert torch.equal(g.get_state(), state)  # a run without the options draws the same noise as before


def test_dropout_fills_the_share_asked_and_touches_nothing_else():
    static = _static()
    out = perturb_intensity(static, dropout=0.3, jitter_db=0.0, fill_db=47.5, generator=_gen(2))
    dropped = out[:, 1] != static[:, 1]
    assert abs(dropped.float().mean().item() - 0.3) < 0.03  # 47.5 is off the 5 dB grid: every fill shows
    assert bool((out[dropped, 1] == 47.5).all())
    assert torch.equal(out[:, [0, 2, 3]], static[:, [0, 2, 3]]) and static[:, 1].remainder(5).eq(0).all()


def test_jitter_has_the_spread_asked_within_the_clinical_range():
    static = _static()
    static[:, 1] = 50.0
    out = perturb_intensity(static, dropout=0.0, jitter_db=10.0, fill_db=0.0, generator=_gen(3))
    assert abs((out[:, 1] - 50.0).std().item() - 10.0) < 0.5
    edge = _static()
    edge[:, 1] = 100.0
    out = perturb_intensity(edge, dropout=0.0, jitter_db=20.0, fill_db=0.0, generator=_gen(4))
    assert out[:, 1].max().item() == 100.0 and out[:, 1].min().item() < 90.0


class StaticSeen:
    """The stated intensities the network is called with in training mode."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.levels: list[torch.Tensor] = []
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if module.training:
            self.levels.append(args[2][:, 1].detach().clone())


@pytest.mark.parametrize("key", ["intensity_dropout", "intensity_jitter_db"])
def test_the_trainer_perturbs_the_stated_intensity_of_training_batches(tmp_path, key):
    seen = {}
    for value in (0, {"intensity_dropout": 1.0, "intensity_jitter_db": 10.0}[key]):
        trainer = build_trainer(tiny_config(tmp_path, *SMALL, f"training.{key}={value}"), tmp_path / f"{key}{value}",
                                callbacks=[])
        hook = StaticSeen(trainer.model)
        trainer.fit()
        seen[value] = torch.cat(hook.levels)
        mean = trainer.data.stats.static_mean[1]
    stated = seen[0]
    assert bool(stated.remainder(5).eq(0).all())  # off: the stated grid levels, as recorded
    changed = seen[max(seen)]
    if key == "intensity_dropout":
        assert torch.allclose(changed, torch.full_like(changed, mean))  # p = 1: every level is the training mean
    else:
        assert changed.remainder(5).ne(0).float().mean() > 0.9 and bool(((changed >= 0) & (changed <= 100)).all())
