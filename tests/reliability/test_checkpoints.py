"""Bad checkpoints: truncated, of another config, of a newer format, not a dict, or carrying a
malicious pickle. Each is a one-line ``CheckpointError`` naming the file; nothing is half-loaded
and nothing in the file runs."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from tests.reliability.procs import TINY, in_process_args, train_in_process
from tests.runs import over
from training.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from training.config import load_config
from training.setup import build_trainer


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run (one epoch), made once for the module."""
    root = tmp_path_factory.mktemp("ckpt")
    assert train_in_process(in_process_args(root, "run", "training.epochs=1", "logging.use_tensorboard=false")) == 0
    return root / "run"


class Payload:
    """Unpickling this runs ``touch <target>``: the file must never appear."""

    def __init__(self, target) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_truncated(tmp_path, finished_run):
    data = (finished_run / "checkpoints" / "last.pt").read_bytes()
    for size in (0, 100, len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{size}.pt"
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=rf"^checkpoint '{path}': unreadable \([^\n]+\)$"):
            load_checkpoint(path)


def test_newer_format_version_missing_keys_and_not_a_dict(tmp_path, finished_run):
    state = load_checkpoint(finished_run / "checkpoints" / "last.pt")
    torch.save({**state, "format_version": FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=rf"format version {FORMAT_VERSION + 1} is newer than this code reads"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({k: v for k, v in state.items() if k != "model"}, tmp_path / "nomodel.pt")
    with pytest.raises(CheckpointError, match=r"nomodel\.pt': missing keys \['model'\]"):
        load_checkpoint(tmp_path / "nomodel.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt': expected a dict, found list"):
        load_checkpoint(tmp_path / "list.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(("container", "refused"), [("torch zip", r"'(posix|os|nt)\.system'"),
                                                    ("pickle protocol 2", r"'(posix|os|nt)\.system'"),
                                                    ("pickle protocol 4", "it")])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, container, refused):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    obj = {"format_version": 1, "model": Payload(marker)}
    if container == "torch zip":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(container[-1])))
    with pytest.raises(CheckpointError, match=rf"^checkpoint '{path}': refusing to load {refused} "
                                              r"\(only tensors and plain containers are allowed; nothing in the file"):
        load_checkpoint(path)
    assert not marker.exists()


def test_weights_of_another_config_are_never_half_loaded(tmp_path, finished_run):
    # other head width only (the run trained from configs/quickstart.yaml, whose peak head is the map head)
    cfg = load_config(None, [*over(TINY, "model.head_dim=16", "model.peak_head=map"), f"logging.log_dir={tmp_path}"])
    model = build_trainer(cfg, tmp_path / "other").model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = load_checkpoint(finished_run / "checkpoints" / "last.pt")["model"]
    with pytest.raises(CheckpointError, match=r"weights do not fit this model config \(shape mismatch in \d+ "
                                              r"\(e\.g\. [\w.]+: expected \(\d+(, \d+)*\), found"):
        load_model_state(model, weights, "last.pt")
    for k, v in model.state_dict().items():  # not one tensor copied, although most of them fit
        assert torch.equal(v, before[k]), k


def test_resume_with_a_truncated_checkpoint_is_one_line(tmp_path, finished_run, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    assert train_in_process(["--resume", str(run), "training.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: checkpoint '{last}': unreadable (") and "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("override", ["model.head_dim=16", "loss.balancer.strategy=famo"])
def test_resume_with_another_config_is_one_line(tmp_path, finished_run, capsys, override):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    rc = train_in_process(["--resume", str(run), "training.epochs=2", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err[-5:]
    assert err[-1].startswith(f"error: checkpoint '{run / 'checkpoints' / 'last.pt'}': ") and "not fit this" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_saved_checkpoints_round_trip_with_weights_only(tmp_path):
    save_checkpoint({"model": {"w": torch.ones(2)}, "config": {}, "stats": {}, "step": 3, "epoch": 1},
                    tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["format_version"] == FORMAT_VERSION and state["step"] == 3
