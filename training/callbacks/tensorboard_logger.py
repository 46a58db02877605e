"""TensorBoard sink: ``trainer.run_dir/tensorboard``, read live with ``tensorboard --logdir logs/<experiment>``.

What lands where (tags are the record names, so W&B and metrics.jsonl use the same ones):

- Scalars: train/<component> (step-window means), train_epoch/<component> (epoch means),
  val/<component>, lr, grad_norm/total and grad_norm/<head>, train|eval/weight_i or
  train|eval/head_i_weight_j.
- Custom Scalars tab (:func:`custom_scalars_layout`): a loss-breakdown chart, one train-vs-val
  chart per component, the balancer weights, learning rate and gradient norms.
- Text: the weight index -> component mapping ("weights/index"), every alert ("alerts"), the
  epoch summaries ("epoch_summary").
- Images: waveform figures (``kind="figure"`` records, tag from ``record.data["tag"]``).
- HParams: the resolved config with the final metrics, written at train end into this same run
  (low-level summaries on this writer: ``SummaryWriter.add_hparams`` would open a sub-run).

The writer flushes at each validation, epoch end, alert and checkpoint (``flush``; and every 30 s), so a running
TensorBoard shows the run while it trains. A resumed run purges events past its resume step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.callbacks.base import Callback, Record
from training.components import COMPONENTS, DISPLAY_NAMES

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from training.trainer import Trainer


def custom_scalars_layout(components: tuple[str, ...] = COMPONENTS) -> dict[str, dict[str, list[Any]]]:
    """The Custom Scalars tab: {category: {chart title: ["Multiline", [tag regex, ...]]}}."""
    keys = "|".join(["total", "weighted", *components])
    names = {"total": "Total", **DISPLAY_NAMES}
    return {
        "Loss breakdown": {
            "train (window means)": ["Multiline", [f"^train/({keys})$"]],
            "validation": ["Multiline", [f"^val/({keys})$"]],
        },
        "Train vs val": {
            f"{names[c]}: train vs val": ["Multiline", [f"^(train|train_epoch|val)/{c}$"]]
            for c in ["total", *components]
        },
        "Balancer weights": {
            "train weights": ["Multiline", [r"^train/(head_\d+_)?weight_\d+$"]],
            "eval weights": ["Multiline", [r"^eval/(head_\d+_)?weight_\d+$"]],
        },
        "Optimization": {
            "learning rate": ["Multiline", ["^lr$"]],
            "gradient norm (pre-clip)": ["Multiline", ["^grad_norm/"]],
        },
    }


def flat_hparams(tree: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested config dict -> {"training.lr": 0.002, ...}; values TensorBoard cannot hold become str."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def _markdown_block(text: str) -> str:
    """Multi-line text as a Markdown code block (TensorBoard's text tab renders Markdown)."""
    return "\n".join("    " + line for line in text.splitlines()) if "\n" in text else text


class TensorBoardCallback(Callback):
    def __init__(self, flush_secs: int = 30) -> None:
        self.flush_secs = flush_secs
        self.writer: SummaryWriter | None = None
        self.final_metrics: dict[str, float] = {}
        self._hparams_written = False

    def _open(self, trainer: Trainer) -> SummaryWriter:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            log_dir = Path(trainer.run_dir) / "tensorboard"
            purge = trainer.step if trainer.resumed else None
            self.writer = SummaryWriter(str(log_dir), flush_secs=self.flush_secs, purge_step=purge)
            if not trainer.resumed:
                self.writer.add_custom_scalars(custom_scalars_layout())
        return self.writer

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.is_main:
            self._open(trainer)

    def on_record(self, trainer: Trainer, record: Record) -> None:
        if not trainer.is_main:
            return
        w = self._open(trainer)
        for name, value in record.scalars.items():
            w.add_scalar(name, value, record.step)
        if record.kind == "text":
            w.add_text(record.data.get("tag", "text"), _markdown_block(record.text), record.step)
        elif record.kind == "alert":
            w.add_text("alerts", record.text, record.step)
            w.flush()
        elif record.kind == "epoch":
            if record.text:
                w.add_text("epoch_summary", _markdown_block(record.text), record.step)
            self.final_metrics.update({k: v for k, v in record.scalars.items()
                                       if k.startswith(("val/", "train_epoch/"))})
            w.flush()
        elif record.kind == "figure" and record.figure is not None:
            w.add_figure(record.data.get("tag", "figures"), record.figure, record.step, close=False)
        elif record.kind == "hparams":
            self.final_metrics.update(record.scalars)

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            self.writer.flush()

    def flush(self, trainer: Trainer) -> None:
        """Write pending events to disk; called before every checkpoint, so the checkpoint never runs
        ahead of the TensorBoard curves. A no-op while the writer is not open."""
        if self.writer is not None:
            self.writer.flush()

    def write_hparams(self, trainer: Trainer) -> None:
        """HParams of this run with its final metrics (their scalar tags already exist in the run)."""
        from torch.utils.tensorboard.summary import hparams

        from training.config import config_to_dict

        if self.writer is None or self._hparams_written:
            return
        exp, ssi, sei = hparams(flat_hparams(config_to_dict(trainer.cfg)), dict(self.final_metrics))
        fw = self.writer._get_file_writer()  # this run's own file writer: no sub-run
        for summary in (exp, ssi, sei):
            fw.add_summary(summary, trainer.step)
        self._hparams_written = True

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.write_hparams(trainer)
            self._close()

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
