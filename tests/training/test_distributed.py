"""DDP on CPU: two gloo ranks launched by torchrun run the real Trainer on a tiny config.

The test launches this file under ``torchrun --nproc_per_node=2``; each rank (``worker``) trains
the named scenarios in one process group and saves what it ended with to ``<root>/rank<r>_<name>.pt``
(outside the run directory). The parent then checks that

- both ranks hold bit-identical network parameters, EMA weights and balancer state
  (``fixed``; ``scale_norm``, whose running means see globally reduced losses every step;
  ``uncertainty``, whose log-variances live outside the DDP module);
- every StepOutput value (objective and component means) is the same on both ranks: the global mean;
- the ranks trained on different data (their first batches differ);
- rank 0 alone writes: rank 1's run directory stays empty;
- a run interrupted mid-epoch and resumed under DDP ends exactly where the uninterrupted one does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

# name -> (balancer strategy, epochs, stop at step (None: run to the end)); 7 steps per epoch per rank
SCENARIOS = {
    "fixed": ("fixed", 1, None),
    "scale_norm": ("scale_norm", 1, None),  # running means of globally reduced losses, every step
    "scale_norm_cut": ("scale_norm", 1, 4),  # interrupted mid-epoch, resumed: must equal "scale_norm"
    "scale_norm_batch": ("scale_norm", 1, None),  # statistic=batch: this step's reduced losses (issue 31)
    "famo": ("famo", 1, None),  # weights from this step's reduced losses (issue 31)
    "uncertainty": ("uncertainty", 2, None),  # log-variances: optimizer parameters outside the DDP module
    "dwa": ("dwa", 3, None),  # weights from epoch means: they move at the start of epoch 3
}
EXTRA = {"scale_norm_batch": ["loss.balancer.scale_norm.statistic=batch"]}
SHORT = ["fixed", "scale_norm", "scale_norm_cut", "scale_norm_batch", "famo"]
SLOW = ["uncertainty", "dwa"]
VAL_BATCH = 4  # the validation comparison's batch size: several batches (and clinical batches) per rank


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# the worker: runs inside each torchrun process


def record_first_draws(trainer, probe) -> None:
    """Keep the (t, eps) of the first training step's q_sample on ``probe.draws``."""
    q_sample = trainer.diffusion.q_sample

    def recording(x0, t, noise):
        if not hasattr(probe, "draws") and trainer.model.training:
            probe.draws = {"t": t.clone(), "noise": noise.clone()}
        return q_sample(x0, t, noise)

    trainer.diffusion.q_sample = recording


def _worker(root: Path, names: list[str]) -> None:
    import signal

    sys.path.insert(0, str(ROOT))
    from tests.runs import tiny_config
    from training.callbacks.base import Callback
    from training.checkpoint import load_checkpoint
    from training.distributed import barrier, init_distributed, shutdown
    from training.setup import build_trainer, setup_logging, write_run_files
    from training.trainer import TrainingInterrupted

    torch.set_num_threads(1)
    info = init_distributed(torch.device("cpu"))

    class Probe(Callback):
        """Per step: the StepOutput values; first batch's patients (to see the shards differ)."""

        def __init__(self, stop_at: int | None = None) -> None:
            self.values: list[torch.Tensor] = []
            self.weights: list[torch.Tensor] = []
            self.stop_at = stop_at

        def on_step_end(self, trainer, out) -> None:
            self.values.append(torch.stack([out.objective, out.weighted_sum, *out.losses.values()]))
            self.weights.append(trainer.meta_loss.balancer.weights_tensor().detach().clone())
            if out.step == self.stop_at:
                trainer._signal = signal.SIGTERM  # as if SIGTERM arrived during this step

        def on_validation_start(self, trainer, split, batches) -> None:
            self.val_batches = batches

    def build(name: str, stop_at: int | None = None):
        strategy, epochs, _ = SCENARIOS[name]
        cfg = tiny_config(root, f"loss.balancer.strategy={strategy}", f"training.epochs={epochs}",
                          "logging.use_tensorboard=true", *EXTRA.get(name, []))
        run_dir = root / (name if info.is_main else f"{name}_rank1")
        run_dir.mkdir(exist_ok=True)
        setup_logging(run_dir if info.is_main else None, info.is_main)
        trainer = build_trainer(cfg, run_dir, device=torch.device("cpu"), dist_info=info)
        probe = Probe(stop_at)
        trainer.callbacks.append(probe)
        record_first_draws(trainer, probe)
        return trainer, probe

    def save(trainer, probe, name: str) -> None:
        first = next(iter(trainer._loader(trainer.data.train, trainer.sampler)))["patient_id"]
        trainer.cfg.training.batch_size = VAL_BATCH
        torch.save({
            "val": trainer.validate("val"),  # sharded: each rank its block of batches
            "val_batches": probe.val_batches,
            "draws": probe.draws,
            "step_weights": torch.stack(probe.weights),
            "model": trainer.model.state_dict(),
            "ema": trainer.ema.shadow.state_dict() if trainer.ema is not None else {},
            "balancer": trainer.meta_loss.balancer.state_dict(),
            "weights": trainer.meta_loss.balancer.weights_tensor().detach().clone(),
            "values": torch.stack(probe.values),
            "step": trainer.step,
            "first_batch": first,
        }, root / f"rank{info.rank}_{name}.pt")

    try:
        for name in names:
            trainer, probe = build(name, SCENARIOS[name][2])
            write_run_files(trainer)
            try:
                trainer.fit()
            except TrainingInterrupted:
                barrier()  # rank 0 has written last.pt
                trainer, probe = build(name)
                trainer.load_state_dict(load_checkpoint(root / name / "checkpoints" / "last.pt"))
                trainer.fit()
            save(trainer, probe, name)
    finally:
        shutdown()


# ------------------------------------------------------------------------------------------------
# the test


def _launch(root: Path, names: list[str]) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", __file__, str(root), *names]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


@pytest.mark.parametrize("n,batch", [(50, 4), (7, 3), (3, 4), (64, 8)])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shard_blocks_cover_the_batches_once_in_order(n, batch, world):
    """Each batch index on exactly one rank, blocks in rank order, within one batch of equal size."""
    from training.distributed import shard_batches, shard_rows

    blocks = [shard_batches(n, batch, r, world) for r in range(world)]
    assert [i for b in blocks for i in b] == list(range(-(-n // batch)))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert [i for r in range(world) for i in shard_rows(n, batch, r, world)] == list(range(n))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    return _launch(tmp_path_factory.mktemp("ddp"), SHORT)


@pytest.fixture(scope="module")
def ddp_slow_run(tmp_path_factory) -> Path:
    return _launch(tmp_path_factory.mktemp("ddp_slow"), SLOW)


def _assert_ranks_agree(root: Path, name: str) -> None:
    r0, r1 = _load(root, 0, name), _load(root, 1, name)
    assert r0["step"] == r1["step"] > 0
    for part in ("model", "ema", "balancer"):
        assert r0[part].keys() == r1[part].keys()
        for k, v in r0[part].items():
            if isinstance(v, torch.Tensor):
                torch.testing.assert_close(r1[part][k], v, rtol=0, atol=0, equal_nan=True, msg=f"{part}.{k}")
    torch.testing.assert_close(r1["weights"], r0["weights"], rtol=0, atol=0)
    torch.testing.assert_close(r1["values"], r0["values"], rtol=0, atol=0)  # global means on every rank


def _load(root: Path, rank: int, name: str) -> dict:
    return torch.load(root / f"rank{rank}_{name}.pt", weights_only=True)


@pytest.mark.parametrize("name", SHORT)
def test_both_ranks_hold_identical_parameters_and_weights(ddp_run, name):
    _assert_ranks_agree(ddp_run, name)


def test_adaptive_weights_moved(ddp_run):
    """scale_norm did adapt, so 'identical weights' above is not trivially true."""
    assert not torch.allclose(_load(ddp_run, 0, "scale_norm")["weights"], torch.ones(6))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_ranks_agree_for_trainable_and_epoch_level_balancers(ddp_slow_run, name):
    _assert_ranks_agree(ddp_slow_run, name)
    assert not torch.allclose(_load(ddp_slow_run, 0, name)["weights"], torch.ones(6))


def test_ranks_draw_distinct_noise_and_timesteps(ddp_run):
    """Issue 31: a global batch of 2 x B has 2 x B distinct (t, eps), not B pairs seen twice."""
    d0, d1 = _load(ddp_run, 0, "fixed")["draws"], _load(ddp_run, 1, "fixed")["draws"]
    assert d0["noise"].shape == d1["noise"].shape
    assert not torch.equal(d0["t"], d1["t"])
    noise = torch.cat([d0["noise"], d1["noise"]]).flatten(1)  # (2B L)
    assert torch.cdist(noise, noise).add(torch.eye(len(noise)) * 1e9).min() > 1.0  # no pair repeats


@pytest.mark.parametrize("name", ["scale_norm_batch", "famo"])
def test_batch_statistic_weights_identical_on_every_rank(ddp_run, name):
    """famo and scale_norm(batch) weight each step with the reduced losses: the same weights on every
    rank at every step (they used to read the rank's own losses), and the weights did move."""
    r0, r1 = _load(ddp_run, 0, name), _load(ddp_run, 1, name)
    torch.testing.assert_close(r1["step_weights"], r0["step_weights"], rtol=0, atol=0)
    assert not torch.allclose(r0["step_weights"][-1], r0["step_weights"][0])


def test_sharded_validation_equals_single_process(ddp_run, tmp_path):
    """Issue 31: each rank validates its block of batches; the reduced values (per-patient ones included)
    equal one process validating the whole split with the same weights, to 1e-6."""
    from tests.runs import tiny_config
    from training.callbacks.base import Callback
    from training.setup import build_trainer

    r0, r1 = _load(ddp_run, 0, "fixed"), _load(ddp_run, 1, "fixed")
    cfg = tiny_config(tmp_path, "loss.balancer.strategy=fixed", "training.epochs=1")
    trainer = build_trainer(cfg, tmp_path / "single", device=torch.device("cpu"))
    trainer.model.load_state_dict(r0["model"])
    trainer.ema.shadow.load_state_dict(r0["ema"])
    trainer.cfg.training.batch_size = VAL_BATCH
    n_batches = []

    class Count(Callback):
        def on_validation_start(self, trainer, split, batches) -> None:
            n_batches.append(batches)

    trainer.callbacks.append(Count())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks (_worker): the same float summation order inside each matmul
    try:
        single = trainer.validate("val")
    finally:
        torch.set_num_threads(threads)
    assert 0 < r0["val_batches"] < n_batches[0] and r0["val_batches"] + r1["val_batches"] == n_batches[0]
    assert r0["val"] == r1["val"]  # every rank holds the global values
    assert r0["val"].keys() == single.keys() and any(k.startswith("val/patient/") for k in single)
    for k, v in single.items():
        assert abs(r0["val"][k] - v) <= 1e-6 * max(1.0, abs(v)), (k, r0["val"][k], v)


def test_ranks_train_on_different_shards(ddp_run):
    assert not torch.equal(_load(ddp_run, 0, "fixed")["first_batch"], _load(ddp_run, 1, "fixed")["first_batch"])


def test_rank_1_writes_nothing(ddp_run):
    for name in SHORT:
        assert (ddp_run / name / "checkpoints" / "last.pt").is_file()
        assert (ddp_run / name / "metrics.jsonl").is_file()
        assert any((ddp_run / name / "tensorboard").iterdir())
        assert list((ddp_run / f"{name}_rank1").iterdir()) == []


def test_resumed_ddp_run_equals_uninterrupted(ddp_run):
    full, cut = _load(ddp_run, 0, "scale_norm"), _load(ddp_run, 0, "scale_norm_cut")
    assert cut["step"] == full["step"]
    for part in ("model", "balancer"):
        for k, v in full[part].items():
            if isinstance(v, torch.Tensor):
                torch.testing.assert_close(cut[part][k], v, rtol=0, atol=0, msg=f"{part}.{k}")


@pytest.mark.slow
def test_torchrun_cli_sweep_then_resume(tmp_path):
    """train.py under torchrun: a -m sweep keeps one process group for its runs (a re-created group
    hangs under torchrun's store), rank 0 alone prepares the run directories, and --resume continues."""
    tiny = ["data.synthetic.patients=12", "training.batch_size=16", "diffusion.timesteps=100",
            "logging.use_wandb=false", "logging.figures=false", f"logging.log_dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(*args: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "train.py", *args]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    torchrun("--config", "configs/quickstart.yaml", "--experiment", "sw", "training.epochs=1", *tiny,
             "-m", "loss.balancer.strategy=fixed,dwa")
    runs = [tmp_path / "sw" / f"loss.balancer.strategy={s}" for s in ("fixed", "dwa")]
    assert all((r / "checkpoints" / "last.pt").is_file() for r in runs)
    assert (tmp_path / "sw" / "comparison").is_dir()
    torchrun("--resume", str(runs[1]), "training.epochs=2")
    state = torch.load(runs[1] / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 3  # the epoch to train next: both epochs are done


if __name__ == "__main__":  # the torchrun entry point of the fixture above
    _worker(Path(sys.argv[1]), sys.argv[2:])
