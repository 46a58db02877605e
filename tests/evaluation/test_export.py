"""evaluation.export (issue 19): safetensors weights that rebuild the run's model exactly, the
config, the statistics, a model card; never an overwrite without --overwrite."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from data.cli import OUTPUTS_MANIFEST
from evaluation.export import CARD_FILE, WEIGHTS_FILE, export_run, load_exported, main


def _outputs(model, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 200, generator=g)  # (B 1 L)
    t = torch.tensor([0, 10, 90])
    static = torch.tensor([[0.5, 80.0, 21.1, 300.0], [2.0, 40.0, 11.1, 100.0], [30.0, 100.0, 49.1, 1500.0]])
    with torch.no_grad():
        return model.eval()(x, t, static, drop_cond=torch.tensor([False, True, False]))


def test_exported_weights_rebuild_the_checkpoint_model_exactly(tiny_run, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from data.stats import DataStats
    from models import build_model
    from training.checkpoint import load_run
    from training.config import load_config

    out = tmp_path / "export"
    assert main(["--run", str(tiny_run), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS_FILE, "config.yaml", "normalization.json",
                                                            CARD_FILE, OUTPUTS_MANIFEST])
    # by hand, from the files alone: a freshly built model with the exported weights
    cfg = load_config(out / "config.yaml")
    stats = DataStats.from_dict(json.loads((out / "normalization.json").read_text(encoding="utf-8")))
    fresh = build_model(cfg.model, stats)
    fresh.load_state_dict(load_file(str(out / WEIGHTS_FILE)), strict=True)
    reference = load_run(tiny_run, "best").model  # the checkpoint's model, EMA weights
    ema = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)["ema"]
    assert ema and all(torch.equal(ema[k], v) for k, v in load_file(str(out / WEIGHTS_FILE)).items())
    expected, got = _outputs(reference), _outputs(fresh)
    assert expected.keys() == got.keys() and len(got) == 6
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    # and with the module's own loader
    model, cfg2, _stats = load_exported(out)
    assert cfg2 == cfg and all(torch.equal(expected[k], v) for k, v in _outputs(model).items())
    with safe_open(str(out / WEIGHTS_FILE), framework="pt") as f:
        meta = f.metadata()
    assert meta["weights"] == "ema" and meta["checkpoint"] == "best" and meta["run"] == tiny_run.name


def test_model_card_without_and_with_evaluation(tiny_run, tmp_path):
    export_run(tiny_run, tmp_path / "a")
    card = (tmp_path / "a" / CARD_FILE).read_text(encoding="utf-8")
    for text in ("## Training data", "synthetic ABR generator (`data/synthetic.py`): 6 patients",
                 "split seed 0", "## Intended use", "**Not a medical device**", "## Limits",
                 "Trained on synthetic recordings only", "had not been evaluated"):
        assert text in card, text
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # the shared run stays as it is
    (run / "eval").mkdir()
    ev = {"meta": {"split": "test", "n": 25, "checkpoint": "best"}, "flags": ["class SNİK (n=2): recall 0"],
          "patient": {"threshold_within_10db": {"value": 0.931, "ci": [0.9, 0.95]}},
          "threshold": {"model": {"mae": 9.5, "r2": 0.41}}}
    (run / "eval" / "metrics.json").write_text(json.dumps(ev), encoding="utf-8")
    (run / "run.json").write_text('{"git": {"commit": "abc"}}', encoding="utf-8")
    files = export_run(run, tmp_path / "b")
    assert tmp_path / "b" / "run.json" in files and (tmp_path / "b" / "run.json").read_text() == (run / "run.json"
                                                                                                  ).read_text()
    card = (tmp_path / "b" / CARD_FILE).read_text(encoding="utf-8")
    assert "split `test`, 25 recordings" in card
    assert "| patient/threshold_within_10db | 0.931 | 0.9 – 0.95 |" in card
    assert "| threshold MAE (dB) (lower is better) | 9.5 | — |" in card
    assert card.index("patient/threshold_within_10db") < card.index("threshold MAE (dB)")
    assert "- class SNİK (n=2): recall 0" in card


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_never_overwrites_without_overwrite(tiny_run, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / CARD_FILE).write_text("my card", encoding="utf-8")
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    # a file the export did not write is never replaced, --overwrite or not (issue 32)
    for extra in ([], ["--overwrite"]):
        assert main(["--run", str(tiny_run), "--out", str(out), *extra]) == 2
        assert re.search(r"^error: --out: '.*MODEL_CARD.md' already exists and was not written by python -m "
                         r"evaluation.export", _one_error_line(capsys))
    assert sorted(p.name for p in out.iterdir()) == [CARD_FILE, "notes.txt"]
    assert (out / CARD_FILE).read_text(encoding="utf-8") == "my card"
    (out / CARD_FILE).unlink()
    assert main(["--run", str(tiny_run), "--out", str(out)]) == 0
    (out / CARD_FILE).write_text("edited", encoding="utf-8")
    assert main(["--run", str(tiny_run), "--out", str(out)]) == 2  # the export's own files: only with --overwrite
    assert re.search(r"^error: --out: '.*' \(and \d more\) already exists: choose another --out, or replace it with "
                     r"--overwrite$", _one_error_line(capsys))
    assert main(["--run", str(tiny_run), "--out", str(out), "--overwrite"]) == 0
    assert (out / CARD_FILE).read_text(encoding="utf-8").startswith("# Model card")
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"  # files it does not write are left alone


def test_cli_errors_are_one_line(tiny_run, tmp_path, capsys):
    assert main(["--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert re.search(r"^error: run directory '.*nowhere': not found$", _one_error_line(capsys))
    assert main(["--run", str(tiny_run), "--out", str(tiny_run)]) == 2
    assert "--out: expected a folder other than the run directory" in _one_error_line(capsys)
    (tmp_path / "file").write_text("x")
    assert main(["--run", str(tiny_run), "--out", str(tmp_path / "file")]) == 2
    assert "is a file, expected a folder" in _one_error_line(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["--run", str(tiny_run)])
    assert exc.value.code == 2 and "the following arguments are required: --out" in _one_error_line(capsys)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / WEIGHTS_FILE).write_bytes(b"not safetensors")
    shutil.copy(tiny_run / "config.yaml", tmp_path / "bad")
    shutil.copy(tiny_run / "normalization.json", tmp_path / "bad")
    with pytest.raises(ValueError, match=r"export '.*model.safetensors': unreadable"):
        load_exported(tmp_path / "bad")
    assert not (tmp_path / "x").exists()
