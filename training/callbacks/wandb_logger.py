"""Weights & Biases sink (``logging.use_wandb``, ``logging.wandb.*``).

- Offline by default (``logging.wandb.mode``); run files land in ``trainer.run_dir/wandb``
  (``wandb sync logs/<experiment>/wandb/offline-run-*`` uploads them later).
- The resolved config is the run's config, plus ``hparams`` (the curated hyperparameters of the
  start ``hparams`` record, swept keys first) and ``loss_weight_index``. The run is named like its
  TensorBoard HParams row (the experiment; ``sweep/strategy=fixed`` for a sweep run); runs of one
  ``-m`` sweep share ``logging.wandb.group`` (train.py fills it in for a sweep).
- Metric names are the record names, the same tags as TensorBoard. Every metric is plotted
  against the optimizer step (``define_metric(..., step_metric="step")``), so train and val
  curves share one x axis like in TensorBoard; "epoch" is logged too, to switch axes in the UI.
  Validation metrics keep their minimum *and* their last value in the summary
  (``summary="min,last"``); the end-of-run ``hparams`` record adds ``best/<metric>``,
  ``best/epoch`` and ``status``.
- Alerts are logged as rows, so they survive an offline run and ``wandb sync``: a table
  ``health/alerts`` (step, epoch, alert, message; every alert so far) and a ``health/<alert>``
  point at the step it fired. Online, they also become ``run.alert`` (e-mail/Slack; W&B
  rate-limits them).
- W&B never stops training: if an online init fails (no login, no network), one warning, then
  the same run offline; if even that fails, W&B logging is off for the run. A resumed run
  continues the same W&B run (its id is kept in ``run_dir/wandb/run_id``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from training.callbacks.base import Callback, Record, TrainerView

log = logging.getLogger("abr")


def _first_line(exc: BaseException) -> str:
    """W&B errors run over several lines (hints, code samples); a warning is one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class WandbCallback(Callback):
    def __init__(self) -> None:
        self.run: Any = None
        self._failed = False
        self.alerts: list[list[Any]] = []  # [step, epoch, alert, message] of every alert so far
        # {"val/x": {"min": m, "last": l}}: written into the summary at the end by this process too, so
        # the run file's last summary record always holds both (the service's own min,last summary can
        # be overtaken by the client's plain snapshot when the end-of-run summary update is sent)
        self.val_summary: dict[str, dict[str, float]] = {}

    # -- init --------------------------------------------------------------------------------------
    def _init(self, trainer: TrainerView, mode: str) -> Any:
        import wandb

        from training.callbacks.run_summary import run_names
        from training.config import config_to_dict

        cfg = trainer.cfg.logging.wandb
        wdir = Path(trainer.run_dir) / "wandb"
        wdir.mkdir(parents=True, exist_ok=True)
        id_file = wdir / "run_id"
        run_id = id_file.read_text().strip() if trainer.resumed and id_file.exists() else None
        run = wandb.init(
            project=cfg.project, entity=cfg.entity or None, group=cfg.group or None, tags=list(cfg.tags),
            name=run_names(trainer.cfg, Path(trainer.run_dir))[0], dir=str(Path(trainer.run_dir)), mode=mode,
            config=config_to_dict(trainer.cfg), id=run_id, resume="allow" if run_id else None,
            settings=wandb.Settings(init_timeout=cfg.init_timeout, console="off"),
            reinit="create_new",
        )
        id_file.write_text(run.id)
        run.define_metric("step")
        run.define_metric("epoch", step_metric="step")
        run.define_metric("val/*", step_metric="step", summary="min,last")
        run.define_metric("*", step_metric="step")
        return run

    def _open(self, trainer: TrainerView) -> Any:
        if self.run is not None or self._failed or not trainer.is_main:
            return self.run
        mode = trainer.cfg.logging.wandb.mode
        if mode == "disabled":
            self._failed = True
            return None
        try:
            self.run = self._init(trainer, mode)
        except Exception as exc:  # noqa: BLE001 (W&B must never stop training)
            if mode == "online":
                log.warning("W&B online init failed (%s: %s); logging offline to %s/wandb instead "
                            "(upload later with `wandb sync`)", type(exc).__name__, _first_line(exc), trainer.run_dir)
                try:
                    self.run = self._init(trainer, "offline")
                except Exception as exc2:  # noqa: BLE001
                    log.warning("W&B offline init failed too (%s); W&B logging is off for this run",
                                _first_line(exc2))
            else:
                log.warning("W&B init failed (%s: %s); W&B logging is off for this run", type(exc).__name__,
                            _first_line(exc))
        self._failed = self.run is None
        return self.run

    @property
    def online(self) -> bool:
        return self.run is not None and not getattr(self.run, "offline", True)

    # -- hooks ---------------------------------------------------------------------------------------
    def on_train_start(self, trainer: TrainerView) -> None:
        self._open(trainer)

    def on_record(self, trainer: TrainerView, record: Record) -> None:
        run = self._open(trainer)
        if run is None:
            return
        try:
            self._log(run, record)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B logging failed (%s); W&B logging is off for the rest of this run", exc)
            self.run, self._failed = None, True

    def _log(self, run: Any, record: Record) -> None:
        import wandb

        payload: dict[str, Any] = dict(record.scalars)
        for k, v in record.scalars.items():
            if k.startswith("val/") and isinstance(v, (int, float)) and v == v:  # v == v: not NaN
                old = self.val_summary.get(k)
                self.val_summary[k] = {"min": min(v, old["min"]) if old else v, "last": v}
        if record.kind == "figure" and record.figure is not None:
            payload[record.data.get("tag", "figures")] = wandb.Image(record.figure)
        elif record.kind == "alert":
            name = str(record.data.get("alert", "health"))
            self.alerts.append([record.step, record.epoch, name, record.text])
            payload[f"health/{name}"] = 1
            payload["health/alerts"] = wandb.Table(columns=["step", "epoch", "alert", "message"],
                                                   data=[list(row) for row in self.alerts])
            if self.online:
                run.alert(title=name, text=record.text, level=wandb.AlertLevel.WARN)
        elif record.kind == "hparams":
            payload = {}  # a summary, not a history point (the val/ values are in the history already)
            if record.data.get("status") == "running":
                run.config.update({"hparams": record.data.get("hparams", {})}, allow_val_change=True)
            else:
                run.summary.update({**{k: dict(v) for k, v in self.val_summary.items()},
                                    **{k: v for k, v in record.scalars.items() if k.startswith("best/")},
                                    "status": record.data.get("status")})
        elif record.kind == "text" and record.data.get("tag") == "weights/index":
            run.config.update({"loss_weight_index": record.data.get("mapping", {})}, allow_val_change=True)
        if payload:
            run.log({**payload, "step": record.step, "epoch": record.epoch})

    def on_train_end(self, trainer: TrainerView) -> None:
        self._finish(0)

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        from training.rundir import exit_code

        self._finish(exit_code(exc))  # the code the process exits with: 130 for Ctrl-C

    def state_dict(self) -> dict[str, Any]:
        return {"alerts": [list(row) for row in self.alerts], "val_summary": {k: dict(v) for k, v in
                                                                               self.val_summary.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alerts = [list(row) for row in state.get("alerts", [])]
        self.val_summary = {k: dict(v) for k, v in state.get("val_summary", {}).items()}

    def _finish(self, exit_code: int) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as exc:  # noqa: BLE001
                log.warning("W&B finish failed (%s)", exc)
            self.run = None


def log_evaluation(run_dir: str | Path, cfg: Any, scalars: dict[str, float], step: int) -> str | None:
    """Log an evaluation's scalars into the run's own W&B run (its id in ``run_dir/wandb/run_id``), in
    the run's mode (offline by default: a new offline-run folder with the same id, which ``wandb sync``
    merges), at the checkpoint's ``step``; also into the run summary. ``cfg``: the run's
    ``logging.wandb`` section. Returns the run id, or None when the run has no W&B run."""
    id_file = Path(run_dir) / "wandb" / "run_id"
    if cfg.mode == "disabled" or not id_file.is_file():
        return None
    import wandb

    run_id = id_file.read_text().strip()
    run = wandb.init(project=cfg.project, entity=cfg.entity or None, dir=str(Path(run_dir)), mode=cfg.mode,
                     id=run_id, resume="allow", settings=wandb.Settings(init_timeout=cfg.init_timeout, console="off"),
                     reinit="create_new")
    try:
        run.define_metric("*", step_metric="step")
        run.log({**scalars, "step": step})
        run.summary.update(scalars)
    finally:
        run.finish()
    return run_id
