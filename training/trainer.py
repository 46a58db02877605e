"""The training loop.

It reads top to bottom in phases: build the epoch's batches, forward (one pass over the noisy
*and* the clean signal), let the balancer combine and backpropagate, clip and step, update EMA,
hand a :class:`StepOutput` to the callbacks; per epoch: validate, let the balancer adapt, hand the
summary to the callbacks (which log, checkpoint and decide early stopping).

The trainer knows no balancer, head or logging backend by name: balancers implement
``training.balancers.base.Balancer``; monitoring, checkpoints and health checks are callbacks.

Host syncs: the hot loop reads one value per optimizer step (whether the gradient norm is
finite: the step must be skipped before ``optimizer.step()`` if it is not). Component losses stay
on the device; callbacks read them only at log points.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import signal
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from training.augment import perturb_intensity
from training.balancers.base import BalanceContext
from training.callbacks.base import Callback, CallbackList, Record
from training.components import COMPONENTS
from training.config import Config
from training.distributed import DistInfo, all_reduce_grads, reduce_mean, reduce_sum, shard_rows
from training.ema import EMA
from training.epoch_order import EpochSampler
from training.objective import Objective, noise_scale
from training.optim import build_optimizer, build_scheduler
from training.series import clinical_summary, gathered_evidence
from training.step import StepOutput, TrainingInterrupted  # noqa: F401 (TrainingInterrupted: re-exported)


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. too many non-finite steps in a row); the message says why."""


class Trainer:
    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        *,
        model: nn.Module,
        diffusion: nn.Module,
        meta_loss: nn.Module,
        data: Any,  # data.dataset.DataBundle
        callbacks: Iterable[Callback],
        device: torch.device,
        dist_info: DistInfo | None = None,
        series_stage: Any = None,  # training.series_stage.SeriesStage: trained after the network (rank 0)
    ) -> None:
        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), device
        self.dist = dist_info or DistInfo()
        self.is_main = self.dist.is_main
        self.logger = logging.getLogger("abr")
        self.data, self.diffusion, self.meta_loss = data, diffusion.to(device), meta_loss.to(device)
        self.objective = Objective(self.diffusion, meta_loss.components, cond_drop_prob=cfg.model.cond_drop_prob,
                                   head_input=cfg.loss.head_input, autocast=self._autocast,
                                   noise_catch=cfg.training.noise_catch,
                                   catch_surrogates=cfg.training.catch_surrogates,
                                   catch_band=cfg.training.catch_band,
                                   label_drop=((cfg.model.type_drop_prob, cfg.model.threshold_drop_prob)
                                               if cfg.model.label_conditioning else None),
                                   wave_drop=cfg.model.wave_drop_prob if cfg.model.wave_conditioning else None,
                                   signal_class_weights=cfg.loss.signal_class_weights,
                                   wave_microphonic=cfg.model.microphonic_conditioning,
                                   wave_noise_uv=noise_scale(cfg.model.noise_conditioning, data.stats))
        self.model = model.to(device)  # the bare module: checkpoints, EMA and head lookups use it
        self.net = self.model  # what forward calls go through (the DDP wrapper under torchrun)
        if self.dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.callbacks = CallbackList(callbacks)
        self.stage = "network"  # what callbacks are handed during a later stage says its own (StageView)
        self.series_stage = series_stage
        tc = cfg.training
        self.max_epochs = tc.epochs
        self.use_bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")

        self._build_sampler(data)
        self._build_optimization(meta_loss.balancer)
        self.noise_gen = torch.Generator(device).manual_seed(cfg.seed + 1)

        # -- progress state (all of it goes into checkpoints) -------------------------------------
        self.step = 0  # optimizer steps done
        self.epoch = 1  # the epoch being trained (1-based)
        self.epoch_step = 0  # optimizer steps done inside self.epoch
        self.epoch_sums = torch.zeros(len(COMPONENTS) + 2, device=device)  # total, weighted, components
        self.epoch_count = torch.zeros((), device=device)
        self.nan_streak = 0
        self.skipped_steps = 0
        self.should_stop = False
        self.resumed = False
        self.last_val: dict[str, float] = {}
        self._signal: int | None = None

    def _build_sampler(self, data: Any) -> None:
        """The data order: deterministic, resumable and rank-sharded; and the optimizer steps it gives."""
        cfg, tc = self.cfg, self.cfg.training
        weights = getattr(data, "sample_weights", None) if cfg.data.balanced_sampler else None
        self.sampler = EpochSampler(len(data.train), seed=cfg.seed, rank=self.dist.rank,
                                    world_size=self.dist.world_size, weights=weights)
        micro_per_epoch = self.sampler.per_rank // tc.batch_size
        self.steps_per_epoch = micro_per_epoch // tc.grad_accum_steps
        if self.steps_per_epoch < 1:
            raise TrainingError(
                f"training.batch_size x grad_accum_steps = {tc.batch_size * tc.grad_accum_steps} exceeds the "
                f"{self.sampler.per_rank} training recordings per process: lower them or add data"
            )
        self.total_steps = self.steps_per_epoch * tc.epochs

    def _build_optimization(self, balancer: Any) -> None:
        """Optimizer (the network's groups and the balancer's own parameters), schedule, EMA, and the
        parameter lists the step reads (clipping, the balancers' shared/last-shared/head views)."""
        from models import param_groups

        tc = self.cfg.training
        self.optimizer = build_optimizer(tc, param_groups(self.model, tc.lr, tc.weight_decay),
                                         balancer.trainable_parameters())
        self.scheduler = build_scheduler(self.optimizer, tc, self.total_steps)
        self.ema = EMA(self.model, tc.ema_decay) if tc.ema_decay > 0 else None
        self.clip_params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.balancer_params = list(balancer.trainable_parameters())  # outside DDP: averaged by hand
        self.shared_params = list(self.model.shared_parameters())
        self.last_shared_params = list(self.model.last_shared_parameters())
        self.head_params = self.model.head_parameters()

    # ------------------------------------------------------------------------------------------
    # callbacks and records

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def emit(self, record: Record) -> None:
        self.callbacks.emit(self, record)

    def _call(self, hook: str, *args: Any) -> None:
        self.callbacks.call(hook, self, *args)

    # ------------------------------------------------------------------------------------------
    # the objective

    def _autocast(self):
        if not self.use_bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def to_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        nb = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=nb) for k, v in batch.items()}

    def first_batch(self, split: str, n: int) -> dict[str, Tensor]:
        """The first ``n`` recordings of ``split`` in order, on the device (the figures' examples)."""
        return self.to_device(next(iter(self._loader(getattr(self.data, split), shuffle_free_batch=n))))

    def _augment(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The training batch with its stated intensity perturbed (training/augment.py); unchanged when
        training.intensity_dropout and training.intensity_jitter_db are 0."""
        tc = self.cfg.training
        static = perturb_intensity(batch["static"], dropout=tc.intensity_dropout, jitter_db=tc.intensity_jitter_db,
                                   fill_db=float(self.data.stats.static_mean[1]), generator=self.noise_gen)
        return batch if static is batch["static"] else {**batch, "static": static}

    # ------------------------------------------------------------------------------------------
    # one optimizer step

    def _optimizer_step(self, micro_batches: list[dict[str, Tensor]]) -> StepOutput:
        tc = self.cfg.training
        accum = len(micro_batches)
        comp_sum = torch.zeros(len(COMPONENTS), device=self.device)
        objective = torch.zeros((), device=self.device)
        weighted = torch.zeros((), device=self.device)
        # A skipped step must leave the balancer as it was too: its per-step accumulators (FAMO's
        # loss sums, GradNorm's weight gradient) and reported weights would otherwise carry the NaN on.
        balancer_before = copy.deepcopy(self.meta_loss.balancer.state_dict())
        for i, batch in enumerate(micro_batches):
            sync = i == accum - 1 or not self.dist.enabled
            with nullcontext() if sync else self.net.no_sync():
                out = self.objective(self.net, self._augment(batch), self.noise_gen, train=True, shard=self.dist.shard)
                losses = out.losses
                ctx = BalanceContext(
                    shared_params=self.shared_params, last_shared_params=self.last_shared_params,
                    features=out.features, loss_scale=1.0 / accum, reduce_mean=reduce_mean,
                )
                result = self.meta_loss.balancer.backward(losses, ctx)
            comp_sum += torch.stack([losses[k].detach() for k in COMPONENTS])
            objective += result.objective
            weighted += result.weighted_sum
        comp_mean, objective, weighted = comp_sum / accum, objective / accum, weighted / accum
        if self.dist.enabled:
            # Global means (one small collective, no host sync): what rank 0 logs, and one
            # skip decision below for every rank. DDP already averaged the network's gradients;
            # the balancer's own parameters (e.g. uncertainty's s_i) are averaged here.
            objective, weighted, comp_mean = reduce_mean(
                torch.cat([objective.view(1), weighted.view(1), comp_mean])
            ).split([1, 1, len(COMPONENTS)])
            objective, weighted = objective.squeeze(0), weighted.squeeze(0)
            all_reduce_grads(self.balancer_params)

        # Clip and check: the one host sync of the step (a non-finite step must not be applied).
        max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.clip_params, max_norm)
        finite = bool(torch.isfinite(grad_norm) & torch.isfinite(objective))
        if finite:
            self.optimizer.step()
            self.meta_loss.balancer.after_optimizer_step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.nan_streak = 0
        else:
            self.meta_loss.balancer.load_state_dict(balancer_before)
            self._on_nonfinite(dict(zip(COMPONENTS, comp_mean.unbind(), strict=True)))
        head_norms = self._head_grad_norms() if (self.step + 1) % tc.log_frequency == 0 else {}
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.epoch_step += 1
        if finite:
            self.epoch_sums += torch.cat([objective.view(1), weighted.view(1), comp_mean])
            self.epoch_count += 1
        return StepOutput(
            step=self.step, epoch=self.epoch, losses=dict(zip(COMPONENTS, comp_mean.unbind(), strict=True)),
            objective=objective, weighted_sum=weighted, lr=self.optimizer.param_groups[0]["lr"],
            grad_norm=grad_norm.detach(), head_grad_norms=head_norms, skipped=not finite,
        )

    def _head_grad_norms(self) -> dict[str, Tensor]:
        norms = {}
        for head, params in self.head_params.items():
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                norms[head] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        return norms

    def _on_nonfinite(self, losses: dict[str, Tensor]) -> None:
        """A skipped step (of either stage): counted, said, or the run stopped by training.nan_policy."""
        tc = self.cfg.training
        self.nan_streak += 1
        self.skipped_steps += 1
        bad = [k for k, v in losses.items() if not math.isfinite(float(v))]
        where = f"components {bad}" if bad else "gradients"
        if tc.nan_policy == "raise" or self.nan_streak >= tc.max_consecutive_nan:
            raise TrainingError(
                f"non-finite loss at step {self.step + 1} in {where}; {self.nan_streak} non-finite step(s) in a row "
                f"(training.nan_policy={tc.nan_policy}, training.max_consecutive_nan={tc.max_consecutive_nan}); "
                f"the last checkpoint is intact"
            )
        self.logger.warning(
            "WARNING non-finite loss at step %d in %s: step skipped (%d in a row, %d in total)",
            self.step + 1, where, self.nan_streak, self.skipped_steps,
        )

    # ------------------------------------------------------------------------------------------
    # epochs

    def _loader(self, dataset, sampler=None, shuffle_free_batch: int | None = None) -> DataLoader:
        return DataLoader(
            dataset, batch_size=shuffle_free_batch or self.cfg.training.batch_size, sampler=sampler,
            shuffle=False, drop_last=sampler is not None, num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
        )

    def _train_epoch(self) -> None:
        tc = self.cfg.training
        self.model.train()
        self.sampler.set_epoch(self.epoch, skip=self.epoch_step * tc.grad_accum_steps * tc.batch_size)
        micro: list[dict[str, Tensor]] = []
        for batch in self._loader(self.data.train, self.sampler):
            if self.epoch_step >= self.steps_per_epoch:
                break
            micro.append(self.to_device(batch))
            if len(micro) < tc.grad_accum_steps:
                continue
            out = self._optimizer_step(micro)
            micro = []
            self._call("on_step_end", out)
            if self._signal is not None:
                raise TrainingInterrupted(self._signal)

    @torch.no_grad()
    def validate(self, split: str = "val") -> dict[str, float]:
        """Component means on a split with the EMA weights, at fixed noise (seeded per call) so
        successive validations are comparable. Under DDP each rank runs its block of the split's
        batches (``shard_rows``) and draws, without using them, the noise of the batches before
        its block: every batch then sees the single process's noise, and the reduced sums are the
        single process's values (up to the order of summation)."""
        net = self.ema.shadow if self.ema is not None else self.model
        net.eval()
        gen = torch.Generator(self.device).manual_seed(self.cfg.seed + 7919)
        sums = torch.zeros(len(COMPONENTS) + 1, device=self.device)  # component sums over recordings, count
        dataset, bs = getattr(self.data, split), self.cfg.training.batch_size
        rows = shard_rows(len(dataset), bs, *self.dist.shard)  # this rank's block of whole batches
        loader = self._loader(Subset(dataset, rows), shuffle_free_batch=bs)
        self._call("on_validation_start", split, len(loader))
        signal_shape = tuple(dataset[0]["signal"].shape) if rows.start else ()
        for _ in range(rows.start // bs):  # the other ranks' batches: keep the generator where one process has it
            self.objective.draw((bs, *signal_shape), self.device, gen, train=False)  # full: only the last is short
        for batch in loader:
            batch = self.to_device(batch)
            losses = self.objective(net, batch, gen, train=False).losses
            b = batch["signal"].shape[0]
            sums += torch.cat([torch.stack([losses[k] for k in COMPONENTS]) * b, sums.new_ones(1) * b])
            self._call("on_validation_batch_end", split)
        sums = reduce_sum(sums)
        means = sums[:-1] / sums[-1].clamp_min(1)
        comp = dict(zip(COMPONENTS, means.unbind(), strict=True))
        objective, weighted = self.meta_loss.balancer.combine(comp, update=False)
        values = torch.cat([objective.detach().view(1), weighted.detach().view(1), means]).tolist()
        names = ["total", "weighted", *COMPONENTS]
        out = {f"{split}/{k}": v for k, v in zip(names, values, strict=True)}
        if self.cfg.training.clinical_validation:
            # The clinical questions per series (val/patient/*): comparable across balancers, unlike
            # val/total. One more clean pass over the split (no randomness: the RNG state is untouched).
            evidence = gathered_evidence(net, dataset, batch_size=bs * 4, device=self.device, shard=self.dist.shard)
            out.update(clinical_summary(net, dataset, prefix=split, device=self.device, batch_size=bs * 4,
                                        evidence=evidence))
        return out

    def _epoch_means(self) -> dict[str, float]:
        means = reduce_mean(self.epoch_sums / self.epoch_count.clamp_min(1)).tolist()
        return dict(zip(["train/total", "train/weighted", *(f"train/{c}" for c in COMPONENTS)], means, strict=True))

    def fit(self) -> dict[str, float]:
        """Train to the configured number of epochs (or an early stop); returns the last summary."""
        tc = self.cfg.training
        self._install_signal_handlers()
        summary: dict[str, float] = {}
        try:
            self._call("on_train_start")
            if self.series_stage is not None and self.epoch <= self.max_epochs:
                self.series_stage.reset()  # the network changes: the series stage reads it again afterwards
            while self.epoch <= self.max_epochs and not self.should_stop:
                self._call("on_epoch_start", self.epoch)
                self._train_epoch()
                summary = self._epoch_means()
                if self.epoch % tc.val_every == 0 or self.epoch == self.max_epochs:
                    self.last_val = self.validate("val")
                    summary.update(self.last_val)
                    self._call("on_validation_end", self.last_val)
                summary["lr"] = self.lr
                self.meta_loss.balancer.on_epoch_end(
                    self.epoch, {c: summary[f"train/{c}"] for c in COMPONENTS}
                )
                self._advance_epoch()
                self._call("on_epoch_end", self.epoch - 1, summary)
            if self.series_stage is not None and self.is_main:
                self._fit_stage(self.series_stage)
            self._call("on_train_end")
        except TrainingInterrupted as exc:
            # no "checkpoint saved" here: the checkpoint callback says so once the file is in place
            self.logger.warning("interrupted by %s at step %d", exc.args[0], self.step)
            self._call("on_exception", exc)
            raise
        except BaseException as exc:
            self._call("on_exception", exc)
            raise
        finally:
            self._restore_signal_handlers()
        return summary

    def _fit_stage(self, stage: Any) -> None:
        """A later stage (the series model, training/series_stage.py) on the network of best.pt, through
        the same callbacks, on the same global step, with the same non-finite policy; ``stage`` clips
        and steps itself, like :meth:`_optimizer_step`."""
        from training.checkpoint import load_run

        view = StageView(self, stage)
        if stage.net is None:  # not prepared yet (a fresh stage, or one resumed from a checkpoint)
            stage.prepare(load_run(self.run_dir, "best", self.device).model, self.data, self.device,
                          progress=self._stage_progress)
            self._stage_progress(f"{len(stage.train_set):,} training and {len(stage.val_set):,} val series ready")
        while not stage.finished:
            self.callbacks.call("on_epoch_start", view, stage.epoch)
            for idx in stage.batches():
                losses, grad_norm, finite = stage.train_step(idx)
                if finite:
                    self.nan_streak = 0
                else:
                    self._on_nonfinite(losses)
                self.step += 1
                total = sum(losses.values())
                out = StepOutput(step=self.step, epoch=stage.epoch, losses=losses, objective=total, weighted_sum=total,
                                 lr=stage.lr, grad_norm=grad_norm, skipped=not finite)
                self.callbacks.call("on_step_end", view, out)
                if self._signal is not None:
                    raise TrainingInterrupted(self._signal)
            summary = stage.train_means()
            if stage.validates:
                self.callbacks.call("on_validation_start", view, "val", 1)
                metrics = stage.validate()
                self.callbacks.call("on_validation_batch_end", view, "val")
                self.callbacks.call("on_validation_end", view, metrics)
                summary.update(metrics)
            summary["lr"] = stage.lr
            stage.end_epoch()
            if stage.finished:  # before the checkpoint that records the stage as done
                stage.save(self.run_dir, self.logger)
            self.callbacks.call("on_epoch_end", view, stage.epoch - 1, summary)

    def _stage_progress(self, message: str) -> None:
        """A later stage's preparation, before its first step (minutes of evidence passes in the clinical recipe):
        each part said in the log, and a signal that arrived during the last one honoured here, not after them
        all. The checkpoint then holds the stage as not started, so a resume prepares it again."""
        if self._signal is not None:
            raise TrainingInterrupted(self._signal)
        self.logger.info("series stage: %s", message)

    def _advance_epoch(self) -> None:
        self.epoch += 1
        self.epoch_step = 0
        self.epoch_sums.zero_()
        self.epoch_count.zero_()

    # ------------------------------------------------------------------------------------------
    # signals

    def _install_signal_handlers(self) -> None:
        self._old_handlers = {}

        def handler(signum, _frame):
            if self._signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self._signal = signum
            self.logger.warning("received %s: stopping after this step", signal.Signals(signum).name)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (e.g. a test runner thread)
                self._old_handlers[sig] = signal.signal(sig, handler)

    def _restore_signal_handlers(self) -> None:
        for sig, old in getattr(self, "_old_handlers", {}).items():
            signal.signal(sig, old)

    # ------------------------------------------------------------------------------------------
    # state

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (see training/checkpoint.py)."""
        from data.schema import to_dict

        return {
            "model": self.model.state_dict(),
            "ema": self.ema.shadow.state_dict() if self.ema is not None else None,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "meta_loss": self.meta_loss.state_dict(),
            "callbacks": self.callbacks.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": _numpy_state(),
                "python": _python_state(),
                "noise": self.noise_gen.get_state(),
            },
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "epoch_sums": self.epoch_sums.clone(),
            "epoch_count": self.epoch_count.clone(),
            "skipped_steps": self.skipped_steps,
            "last_val": dict(self.last_val),
            "config": to_dict(self.cfg),
            "stats": self.data.stats.to_dict(),
            "series": self.series_stage.state_dict() if self.series_stage is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any], source: str | Path = "resume") -> None:
        """Continue from ``state``. A state of another config (architecture, balancer, optimizer
        groups) raises ``CheckpointError`` naming ``source``; the trainer is then unusable."""
        from training.checkpoint import CheckpointError, check_ema, load_model_state

        load_model_state(self.model, state["model"], source)  # checked before anything is copied
        check_ema(state, self.cfg, source)
        try:
            self._load_training_state(state)
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise CheckpointError(
                f"checkpoint '{source}': training state does not fit this config ({reason})"
            ) from None

    def _load_training_state(self, state: dict[str, Any]) -> None:
        if self.ema is not None and state.get("ema") is not None:
            self.ema.shadow.load_state_dict(state["ema"])
            self.ema.updates = int(state["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.meta_loss.load_state_dict(state["meta_loss"])
        self.callbacks.load_state_dict(state["callbacks"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        _set_numpy_state(rng["numpy"])
        _set_python_state(rng["python"])
        self.noise_gen.set_state(rng["noise"])
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        self.epoch_sums.copy_(state["epoch_sums"])
        self.epoch_count.copy_(state["epoch_count"])
        self.skipped_steps = state["skipped_steps"]
        self.last_val = dict(state["last_val"])
        if self.series_stage is not None:
            self.series_stage.load_state_dict(state.get("series"))  # absent: a checkpoint from before the stage
        self.resumed = True


class StageView:
    """What the callbacks are handed while a later stage trains (a ``TrainerView``): the run's config,
    directory, callbacks, global step and checkpoint state from the trainer; the epoch counters, model
    and learning rate from the stage, so the bar, the summaries and the checkpoints follow it."""

    def __init__(self, trainer: Trainer, stage: Any) -> None:
        self._trainer, self._stage = trainer, stage
        self.stage = stage.name
        self.cfg, self.run_dir, self.device = trainer.cfg, trainer.run_dir, trainer.device
        self.is_main, self.logger = trainer.is_main, trainer.logger
        self.callbacks, self.data, self.resumed = trainer.callbacks, trainer.data, trainer.resumed
        self.meta_loss = None  # no balancer: the stage's objective is the sum of its two losses
        self.should_stop = False

    step = property(lambda self: self._trainer.step)
    epoch = property(lambda self: self._stage.epoch)
    max_epochs = property(lambda self: self._stage.max_epochs)
    steps_per_epoch = property(lambda self: self._stage.steps_per_epoch)
    epoch_step = property(lambda self: self._stage.epoch_step)
    model = property(lambda self: self._stage.net)
    lr = property(lambda self: self._stage.lr)

    def emit(self, record: Record) -> None:
        self.callbacks.emit(self, record)

    def state_dict(self) -> dict[str, Any]:
        return self._trainer.state_dict()


# RNG states as plain tensors/ints so checkpoints load with weights_only=True.
def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_state(s: dict[str, Any]) -> None:
    np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_state(s: list[Any]) -> None:
    random.setstate((s[0], tuple(s[1]), s[2]))
