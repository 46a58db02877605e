"""Every strategy trains the clinical recipe to the end (issue 30): ``python train.py --config configs/clinical.yaml``
with each strategy, shrunk to seconds (a dozen patients, one epoch, one series epoch) but with everything the
recipe adds to a quickstart run (catch rows, the static input it hides from the answers, the wave map head, the
series stage, the input check and calibration fitted at the end). Slow: about a minute a strategy on one core.
The quick resume-and-property coverage of every strategy is test_every_strategy_trains.py."""

from __future__ import annotations

import json
import math
import sys

import pytest

from tests.reliability.procs import ROOT, run_train
from training.balancers.config import STRATEGIES

SHRUNK = ["data.synthetic.patients=12", "training.epochs=1", "training.batch_size=16", "series.epochs=1",
          "series.extra_patients=20", "diffusion.timesteps=100", "logging.figures=false", "logging.use_wandb=false",
          "device=cpu"]
CASES = [(s, None) for s in STRATEGIES] + [("jacobian", "jacobian.aggregator=nash_mtl"),
                                            ("jacobian", "jacobian.update_every=8")]


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "option"), CASES, ids=[s if o is None else f"{s}-{o}" for s, o in CASES])
def test_strategy_trains_the_clinical_recipe_to_the_end(tmp_path, strategy, option):
    extra = [f"loss.balancer.strategy={strategy}", *([f"loss.balancer.{option}"] if option else [])]
    args = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "clinical.yaml"),
            "--experiment", "clin", *SHRUNK, f"logging.log_dir={tmp_path}", *extra]
    proc = run_train(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "clin"
    for name in ("checkpoints/last.pt", "checkpoints/series.pt", "familiarity.json", "calibration.json"):
        assert (run / name).is_file(), name
    scalars = [json.loads(line)["scalars"] for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    weights = [v for r in scalars for k, v in r.items() if k.startswith("train/weight_")]
    assert len({k for r in scalars for k in r if k.startswith("train/weight_")}) == 6
    assert all(math.isfinite(w) for w in weights)
    assert any(k.startswith("val/series/") for r in scalars for k in r)  # the series stage validated
