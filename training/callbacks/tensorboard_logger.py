"""TensorBoard sink: ``trainer.run_dir/tensorboard``, read live with ``tensorboard --logdir logs/<experiment>``.

What lands where (tags are the record names, so W&B and metrics.jsonl use the same ones):

- Scalars: train/<component> (step-window means), train_epoch/<component> (epoch means),
  val/<component>, lr, grad_norm/total and grad_norm/<head>, train|eval/weight_i or
  train|eval/head_i_weight_j (seed 000's names; val/weight_i and val/head_i_weight_j are their
  aliases), and best/<metric> at the end of the run.
- Component runs ``tensorboard/components/<Name>`` (Total, Signal, ..., Thresh): the same values
  once more, under the tags ``loss/train``, ``loss/val``, ``weight/train`` and ``weight/val``.
  TensorBoard colours a line by its *run* (every chart, Custom Scalars included), so the tags of
  one run all share one colour; one run per component is what gives the loss breakdown one colour
  per component, with the run names as its legend.
- Custom Scalars tab (:func:`custom_scalars_layout`): the loss breakdown and the balancer weights
  (from the component runs), one train-vs-val chart per component, learning rate and gradient norms.
- Text: the weight index -> component mapping ("weights/index"), every alert ("alerts"), the
  epoch summaries ("epoch_summary"), the end-of-run block ("run_summary"): the tags as written,
  without the "/text_summary" suffix ``SummaryWriter.add_text`` appends.
- Images: waveform figures (``kind="figure"`` records, tag from ``record.data["tag"]``).
- HParams: written when the run starts (the ``hparams`` record of
  :class:`~training.callbacks.run_summary.RunSummaryCallback`), into this same run: the curated
  hyperparameters (swept keys first, marked as differing so TensorBoard lists them first) and the
  metrics (:func:`hparams_metrics`: val/patient/*, the validation losses, and the test metrics that
  ``evaluation.evaluate`` logs back into this run), whose values TensorBoard reads from the run's
  scalars as they arrive. The
  row is named after the run (``fixed (sweep)`` for a sweep run: the table shows ~15 characters). A clean end adds the
  session status; an interrupted run keeps "running" (TensorBoard keeps the first status it
  reads, and the run may be resumed).

The writer flushes at each validation, epoch end, alert and checkpoint (``flush``; and every 30 s), so a running
TensorBoard shows the run while it trains. A resumed run purges events past its resume step.

A disk error (a read-only ``tensorboard/``, a full disk) turns TensorBoard off for the rest of the run
with one warning line; training, metrics.jsonl and the checkpoints go on (:meth:`TensorBoardCallback._off`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.callbacks.base import Callback, Record, TrainerView
from training.components import COMPONENTS, DISPLAY_NAMES

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


COMPONENT_RUNS = "components"  # sub-directory of the component runs
NAMES: dict[str, str] = {"total": "Total", **DISPLAY_NAMES}
# HParams metric columns, in this order (TensorBoard shows the first five by default): the
# unweighted components compare across balancing strategies; the totals do not.
HPARAMS_METRICS: tuple[str, ...] = ("val/signal", "val/class", "val/peak_exist", "val/peak_latency", "val/threshold",
                                    "val/peak_amplitude", "val/total", "val/weighted", "train_epoch/total")
# The clinical questions per series (training.clinical_validation: val/patient/*; evaluation.evaluate logs the
# same names as test/patient/*): the columns a reader compares runs on, so they come first.
PATIENT_METRICS: tuple[str, ...] = ("threshold/within_10db", "threshold/mae_db", "type/macro_f1",
                                    "type/balanced_accuracy", "wave_v/detection_f1")
# Per recording, after `python -m evaluation.evaluate` (evaluation.evaluate.evaluation_scalars)
TEST_METRICS: tuple[str, ...] = ("class/macro_f1", "peak_exist/f1", "peak_latency/mae", "threshold/mae")


# The three clinical questions whose validation and test columns stand side by side at the front
HEADLINE_PATIENT_METRICS: tuple[str, ...] = ("threshold/within_10db", "type/macro_f1", "wave_v/detection_f1")


def hparams_metrics(clinical_validation: bool, split: str = "test") -> tuple[str, ...]:
    """HParams metric columns. With validation per patient: the headline questions as pairs,
    val/patient/X beside ``split``/patient/X (TensorBoard shows the first five metric columns by
    default, so both the validation and the test answers are in view), then the other val/patient/*,
    the validation losses and the other ``split`` metrics. Without: the validation losses, then the
    ``split`` metrics. The ``split`` columns fill once ``evaluation.evaluate`` logs them into the run
    (:func:`log_evaluation`)."""
    test = tuple(f"{split}/patient/{k}" for k in PATIENT_METRICS) + tuple(f"{split}/{k}" for k in TEST_METRICS)
    if not clinical_validation:
        return HPARAMS_METRICS + test
    paired = tuple(f"{where}/patient/{k}" for k in HEADLINE_PATIENT_METRICS for where in ("val", split))
    rest_val = tuple(f"val/patient/{k}" for k in PATIENT_METRICS if k not in HEADLINE_PATIENT_METRICS)
    return paired + rest_val + HPARAMS_METRICS + tuple(c for c in test if c not in paired)


def log_evaluation(run_dir: str | Path, scalars: dict[str, float], step: int) -> Path:
    """Write an evaluation's scalars into the run's own TensorBoard directory at the checkpoint's
    ``step`` (a new event file beside the training ones: TensorBoard reads them as one run, so the
    HParams row of the run fills its test columns). Returns the directory."""
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(run_dir) / "tensorboard"
    _quiet_writer_threads()
    writer = SummaryWriter(str(log_dir))
    try:
        for name, value in scalars.items():
            writer.add_scalar(name, value, step)
    finally:
        writer.close()
    return log_dir


def custom_scalars_layout(components: tuple[str, ...] = COMPONENTS) -> dict[str, dict[str, list[Any]]]:
    """The Custom Scalars tab: {category: {chart title: ["Multiline", [tag regex, ...]]}}."""
    return {
        "Loss breakdown (one colour per component run)": {
            "train (window means)": ["Multiline", ["^loss/train$"]],
            "validation": ["Multiline", ["^loss/val$"]],
        },
        "Balancer weights (one colour per component run)": {
            "train weights": ["Multiline", ["^weight/train$"]],
            "validation weights": ["Multiline", ["^weight/val$"]],
        },
        "Train vs val": {
            f"{NAMES[c]}: train vs val": ["Multiline", [f"^train/{c}$", f"^train_epoch/{c}$", f"^val/{c}$"]]
            for c in ["total", *components]
        },
        "Optimization": {
            "learning rate": ["Multiline", ["^lr$"]],
            "gradient norm (pre-clip)": ["Multiline", ["^grad_norm/"]],
        },
    }


def _markdown_block(text: str) -> str:
    """Multi-line text as a Markdown code block (TensorBoard's text tab renders Markdown)."""
    return "\n".join("    " + line for line in text.splitlines()) if "\n" in text else text


def text_summary(tag: str, text: str) -> Any:
    """A text summary under exactly ``tag`` (``add_text`` would write ``tag/text_summary``)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.text.metadata import create_summary_metadata

    tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf-8")],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary(value=[Summary.Value(tag=tag, metadata=create_summary_metadata("", ""), tensor=tensor)])


def _hparams_summary(tag_data: Any) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.plugins.hparams import metadata

    tag = {"experiment": metadata.EXPERIMENT_TAG, "session_start_info": metadata.SESSION_START_INFO_TAG,
           "session_end_info": metadata.SESSION_END_INFO_TAG}[tag_data.WhichOneof("data")]
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(tag_data),
                                        tensor=TensorProto(dtype="DT_FLOAT", float_val=[0.0]))])


def hparam_names(keys: list[str]) -> dict[str, str]:
    """Config key -> the name TensorBoard stores it under: ``"00 loss.balancer.strategy"``.

    TensorBoard sorts the columns by name (after the keys marked ``differs``) and shows the first
    five; the two-digit prefix keeps our order (swept keys, then the researcher's set). The table
    shows the display name, which is the plain key."""
    return {key: f"{i:02d} {key}" for i, key in enumerate(keys)}


def hparams_summaries(hparams: dict[str, bool | int | float | str], swept: list[str], group_name: str,
                      metrics: tuple[str, ...] = HPARAMS_METRICS) -> list[Any]:
    """The experiment and session-start summaries of the HParams plugin.

    Booleans stay booleans (``add_hparams`` turns them into 0.0/1.0: bool is an int in Python);
    strings and booleans get their value as a one-value discrete domain, numbers an interval
    filter; the swept keys are marked ``differs``; names keep ``hparams``' order (:func:`hparam_names`).
    """
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    infos, start = [], plugin_data_pb2.SessionStartInfo(group_name=group_name, start_time_secs=time.time())
    names = hparam_names(list(hparams))
    for key, value in hparams.items():
        name = names[key]
        info = api_pb2.HParamInfo(name=name, display_name=key, differs=key in swept)
        if isinstance(value, bool):
            info.type = api_pb2.DATA_TYPE_BOOL
            info.domain_discrete.extend([False, True])
            start.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            info.type = api_pb2.DATA_TYPE_FLOAT64
            start.hparams[name].number_value = float(value)
        else:
            info.type = api_pb2.DATA_TYPE_STRING
            info.domain_discrete.extend([str(value)])
            start.hparams[name].string_value = str(value)
        infos.append(info)
    metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m), display_name=m) for m in metrics]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metric_infos, time_created_secs=time.time())
    return [_hparams_summary(plugin_data_pb2.HParamsPluginData(experiment=experiment)),
            _hparams_summary(plugin_data_pb2.HParamsPluginData(session_start_info=start))]


def session_end_summary(success: bool) -> Any:
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    status = api_pb2.STATUS_SUCCESS if success else api_pb2.STATUS_FAILURE
    end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return _hparams_summary(plugin_data_pb2.HParamsPluginData(session_end_info=end))


def component_values(record: Record) -> dict[str, dict[str, float]]:
    """{component run name: {tag: value}} for the component runs, from one record."""
    out: dict[str, dict[str, float]] = {}
    if record.kind in ("step", "epoch"):
        split = "train" if record.kind == "step" else "val"
        for key in ("total", *COMPONENTS):
            value = record.scalars.get(f"{split}/{key}")
            if value is not None:
                out.setdefault(NAMES[key], {})[f"loss/{split}"] = value
    elif record.kind == "weights":
        split = record.data.get("split", "train")
        mapping = record.data.get("components", {})
        for name, value in record.scalars.items():
            component = mapping.get(name.split("/", 1)[-1])
            if component in DISPLAY_NAMES:
                out.setdefault(DISPLAY_NAMES[component], {})[f"weight/{split}"] = value
    return out


def _quiet_writer_threads() -> None:
    """Keep TensorBoard's writer threads from printing a traceback for a disk error (``OSError``).

    The thread keeps the error and TensorBoard raises it again in the main thread at the next write
    or flush, where :class:`TensorBoardCallback` reports it in one line; other errors and other
    threads go to the hook installed before. Installed once, when a writer opens."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard_writers", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread) and issubclass(args.exc_type, OSError)):
            previous(args)

    hook.quiets_tensorboard_writers = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class TensorBoardCallback(Callback):
    def __init__(self, flush_secs: int = 30) -> None:
        self.flush_secs = flush_secs
        self.writer: SummaryWriter | None = None
        self.component_writers: dict[str, SummaryWriter] = {}
        self._purge: int | None = None
        self._failed = False  # a disk error turned TensorBoard off for the rest of the run

    @contextmanager
    def _writing(self, trainer: TrainerView) -> Iterator[None]:
        try:
            yield
        except OSError as err:
            self._off(trainer, err)

    def _off(self, trainer: TrainerView, err: OSError) -> None:
        """One warning, then no more writes: TensorBoard must never stop training."""
        self._failed = True
        for w in [self.writer, *self.component_writers.values()]:
            if w is not None:
                with suppress(OSError):  # the same disk error again
                    w.close()
        self.writer, self.component_writers = None, {}
        trainer.logger.warning("WARNING TensorBoard: writing to %s failed (%s); TensorBoard logging is off for the "
                               "rest of the run; metrics.jsonl and checkpoints continue",
                               Path(trainer.run_dir) / "tensorboard", err.strerror or err)

    def _open(self, trainer: TrainerView) -> SummaryWriter:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            _quiet_writer_threads()
            log_dir = Path(trainer.run_dir) / "tensorboard"
            self._purge = trainer.step if trainer.resumed else None
            self.writer = SummaryWriter(str(log_dir), flush_secs=self.flush_secs, purge_step=self._purge)
            if not trainer.resumed:
                self.writer.add_custom_scalars(custom_scalars_layout())
        return self.writer

    def _component_writer(self, trainer: TrainerView, name: str) -> SummaryWriter:
        if name not in self.component_writers:
            from torch.utils.tensorboard import SummaryWriter

            log_dir = Path(trainer.run_dir) / "tensorboard" / COMPONENT_RUNS / name
            self.component_writers[name] = SummaryWriter(str(log_dir), flush_secs=self.flush_secs,
                                                         purge_step=self._purge)
        return self.component_writers[name]

    def _add(self, summary: Any, step: int) -> None:
        assert self.writer is not None
        self.writer._get_file_writer().add_summary(summary, step)  # this run's own file writer: no sub-run

    def on_train_start(self, trainer: TrainerView) -> None:
        if trainer.is_main and not self._failed:
            with self._writing(trainer):
                self._open(trainer)

    def on_record(self, trainer: TrainerView, record: Record) -> None:
        if trainer.is_main and not self._failed:
            with self._writing(trainer):
                self._write(trainer, record)

    def _write(self, trainer: TrainerView, record: Record) -> None:
        w = self._open(trainer)
        if record.kind == "hparams":
            self._hparams(trainer, record)
            return
        for name, value in record.scalars.items():
            w.add_scalar(name, value, record.step)
        for run, values in component_values(record).items():
            for tag, value in values.items():
                self._component_writer(trainer, run).add_scalar(tag, value, record.step)
        if record.kind == "text":
            self._add(text_summary(record.data.get("tag", "text"), _markdown_block(record.text)), record.step)
        elif record.kind == "alert":
            self._add(text_summary("alerts", record.text), record.step)
            self.flush(trainer)
        elif record.kind == "epoch":
            if record.text:
                self._add(text_summary("epoch_summary", _markdown_block(record.text)), record.step)
            self.flush(trainer)
        elif record.kind == "figure" and record.figure is not None:
            w.add_figure(record.data.get("tag", "figures"), record.figure, record.step, close=False)

    def _hparams(self, trainer: TrainerView, record: Record) -> None:
        from training.callbacks.run_summary import end_of_run_block, run_names

        status = record.data.get("status")
        if status == "running":
            trial = run_names(trainer.cfg, Path(trainer.run_dir))[1]
            metrics = hparams_metrics(trainer.cfg.training.clinical_validation)
            for summary in hparams_summaries(record.data.get("hparams", {}), record.data.get("swept", []), trial,
                                             metrics):
                self._add(summary, record.step)
            return
        assert self.writer is not None
        for name, value in record.scalars.items():
            if name.startswith("best/"):  # the val/ values are in the run already
                self.writer.add_scalar(name, value, record.step)
        if status == "finished":
            self._add(session_end_summary(success=True), record.step)
        block = end_of_run_block(record.data, record.step, Path(trainer.run_dir))
        self._add(text_summary("run_summary", _markdown_block(block)), record.step)

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self.flush(trainer)

    def flush(self, trainer: TrainerView) -> None:
        """Write pending events to disk; called before every checkpoint, so the checkpoint never runs
        ahead of the TensorBoard curves. A no-op while the writer is not open."""
        with self._writing(trainer):
            for w in [self.writer, *self.component_writers.values()]:
                if w is not None:
                    w.flush()

    def on_train_end(self, trainer: TrainerView) -> None:
        with self._writing(trainer):
            self._close()

    def on_exception(self, trainer: TrainerView, exc: BaseException) -> None:
        with self._writing(trainer):
            self._close()

    def _close(self) -> None:
        for w in [self.writer, *self.component_writers.values()]:
            if w is not None:
                w.flush()
                w.close()
        self.writer, self.component_writers = None, {}
