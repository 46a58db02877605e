"""Issue 29 point 4: HParams lists val/patient/* and the test metrics; evaluate logs its metrics back into
the run's TensorBoard directory under those names."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from evaluation.evaluate import evaluation_scalars
from training.callbacks.tensorboard_logger import hparams_metrics, log_evaluation


def _est(v: float) -> dict:
    return {"value": v, "ci": [v - 0.1, v + 0.1]}


def test_hparams_columns_start_with_val_patient_and_end_with_test():
    cols = hparams_metrics(clinical_validation=True)
    # TensorBoard shows the first five metric columns: the headline questions, validation beside test
    assert cols[:5] == ("val/patient/threshold/within_10db", "test/patient/threshold/within_10db",
                        "val/patient/type/macro_f1", "test/patient/type/macro_f1", "val/patient/wave_v/detection_f1")
    assert "test/patient/type/macro_f1" in cols and "test/class/macro_f1" in cols
    assert len(cols) == len(set(cols)) and "val/patient/threshold/mae_db" in cols
    assert not any(c.startswith("val/patient/") for c in hparams_metrics(clinical_validation=False))


def test_evaluation_is_logged_back_under_the_hparams_names(tmp_path):
    m = {"class": {"model": {"macro_f1": 0.5, "balanced_accuracy": 0.4}}, "threshold": {"model": {"mae": 7.5,
                                                                                                  "r2": None}},
         "patient": {"threshold": {"rule": {"within_10db": _est(0.8), "mae_db": _est(6.0)}},
                     "type": {"evidence_sum": {"macro_f1": _est(0.3), "balanced_accuracy": _est(0.35),
                                               "support": {"0": 3}}},
                     "wave_v": {"detection_f1": _est(0.9)}, "waves": {}}}
    scalars = evaluation_scalars(m, "test")
    assert scalars == {"test/patient/threshold/within_10db": 0.8, "test/patient/threshold/mae_db": 6.0,
                       "test/patient/type/macro_f1": 0.3, "test/patient/type/balanced_accuracy": 0.35,
                       "test/patient/wave_v/detection_f1": 0.9, "test/class/macro_f1": 0.5,
                       "test/class/balanced_accuracy": 0.4, "test/threshold/mae": 7.5}  # r2 None: left out
    assert {k for k in scalars if k in hparams_metrics(True)} >= {"test/patient/threshold/within_10db",
                                                                  "test/class/macro_f1", "test/threshold/mae"}
    log_dir = log_evaluation(tmp_path, scalars, step=555)
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    (event,) = acc.Scalars("test/patient/threshold/within_10db")
    assert event.step == 555 and abs(event.value - 0.8) < 1e-6
