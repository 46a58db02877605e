"""LossWeightLoggerCallback: both weight shapes, detection, cadence, eval weights, index mapping."""

from __future__ import annotations

from tests.training.callbacks.fakes import FakeBalancer, FakeMetaLoss, healthy_losses
from training.callbacks.weights import LossWeightLoggerCallback, flatten_weights
from training.components import COMPONENTS, HEAD_GROUPS


def test_flat_and_grouped_names():
    assert flatten_weights([0.5, 2.0], "train") == {"train/weight_0": 0.5, "train/weight_1": 2.0}
    assert flatten_weights([[1.0], [0.2, 0.3]], "eval") == {
        "eval/head_0_weight_0": 1.0, "eval/head_1_weight_0": 0.2, "eval/head_1_weight_1": 0.3}


def test_flat_weights_every_log_point_and_at_validation(make_trainer):
    weights = [1.0, 2.0, 0.5, 0.25, 0.125, 4.0]
    trainer = make_trainer([LossWeightLoggerCallback()], meta_loss=FakeMetaLoss(FakeBalancer(weights)))
    trainer.start()
    trainer.steps(25, healthy_losses)
    trainer.validate({"val/total": 1.0})
    records = trainer.of_kind("weights")
    assert [(r.step, r.data["split"]) for r in records] == [(0, "train"), (10, "train"), (20, "train"), (25, "val")]
    assert records[1].scalars == {f"train/weight_{i}": w for i, w in enumerate(weights)}
    # seed 000's eval/weight_i, and val/weight_i beside the validation losses (the documented alias)
    assert records[-1].scalars == {f"{p}/weight_{i}": w for p in ("eval", "val") for i, w in enumerate(weights)}
    (mapping,) = trainer.of_kind("text")
    assert mapping.data["mapping"] == {f"weight_{i}": c for i, c in enumerate(COMPONENTS)}
    assert "weight_3 = peak_latency (PeakLat)" in mapping.text


def test_grouped_weights(make_trainer):
    trainer = make_trainer([LossWeightLoggerCallback()], meta_loss=FakeMetaLoss(FakeBalancer(grouped=True)))
    trainer.start()
    trainer.steps(10, healthy_losses)
    r = trainer.of_kind("weights")[-1]
    expected = {f"train/head_{i}_weight_{j}" for i, m in enumerate(HEAD_GROUPS.values()) for j in range(len(m))}
    assert set(r.scalars) == expected
    assert trainer.of_kind("text")[0].data["mapping"]["head_2_weight_1"] == "peak_latency"


def test_any_object_with_get_loss_weights_is_found(make_trainer):
    class Plain:  # no weight_names, not a balancer: indices stand for themselves
        def get_loss_weights(self):
            return [0.3, 0.7]

    trainer = make_trainer([LossWeightLoggerCallback()], meta_loss=Plain())
    trainer.start()
    assert trainer.of_kind("weights")[0].scalars == {"train/weight_0": 0.3, "train/weight_1": 0.7}
    assert trainer.of_kind("text")[0].data["mapping"] == {"weight_0": "weight_0", "weight_1": "weight_1"}


def test_silent_without_weights_and_on_resume(make_trainer):
    trainer = make_trainer([LossWeightLoggerCallback()], meta_loss=object())
    trainer.start()
    trainer.steps(10, healthy_losses)
    assert trainer.records == []
    resumed = make_trainer([LossWeightLoggerCallback()], resumed=True, step=10)
    resumed.start()
    assert resumed.records == []  # mapping and initial weights are already in the run
    resumed.steps(10, healthy_losses)
    assert [r.step for r in resumed.of_kind("weights")] == [20]
