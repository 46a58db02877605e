"""Training health monitor (seeds 000, 001, 003, 004).

Checks run on values other producers already read at log points: the step records (window means
and maxima) and the weight records. So the monitor adds no host sync to the training loop.

| alert                | fires when                                                                 |
|----------------------|----------------------------------------------------------------------------|
| `nonfinite`          | a window mean/max or a weight is NaN/Inf, or steps were skipped as non-finite |
| `negative_total`     | the objective's window mean < 0, the balancer cannot produce that             |
|                      | (`can_be_negative` False) and no component is itself negative (seed 004)      |
| `loss_spike`         | the window max of the objective > `spike_factor` x median of recent windows   |
| `grad_explosion`     | the window max of the pre-clip gradient norm > `grad_explosion`               |
| `stalled_component`  | over `stall_window` steps one component changed < `stall_rel_change` while    |
|                      | another improved > `improve_rel_change` (seed 001); each side the mean of the  |
|                      | step windows over half a stall window                                          |
| `weight_near_clamp`  | a weight within `weight_clamp_margin` of the balancer's `min_weight`/`max_weight` |
|                      | (on a log scale, see :func:`near_clamp`)                                       |
| `weight_oscillation` | over `oscillation_window` weight records, >= 80 % of successive changes reverse |
| `dominant_component` | one w_i * L_i is more than `dominance_share` of sum_j w_j * L_j (seed 000)     |

The balancer's facts come from its declared interface (training/balancers/base.py): ``can_be_negative``
and the clamp bounds ``min_weight``/``max_weight`` (None where a strategy does not clamp; set by
equal_init, equal_init_ema, ema and gradnorm).

Each alert is a ``kind="alert"`` record (text "WARNING ...", data {"alert": name, ...}); every sink
shows it (console WARNING line, TensorBoard text "alerts", metrics.jsonl, ``wandb.alert``). The
same alert (name and component) does not repeat within ``cooldown_steps`` optimizer steps.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import TYPE_CHECKING, Any

from training.callbacks.base import Callback, Record, TrainerView
from training.components import DISPLAY_NAMES

if TYPE_CHECKING:
    from training.config import HealthConfig

SPIKE_HISTORY = 10  # previous step windows whose median is the spike reference
OSCILLATION_SHARE = 0.8  # share of reversing successive weight changes that counts as oscillation
MIN_CHANGE = 1e-3  # weight changes below this share of the mean |weight| are noise, not a reversal


def _name(component: str) -> str:
    return DISPLAY_NAMES.get(component, component)


def _mean_windows(windows: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of step-window means (finite values only; a key no window holds is left out)."""
    values: dict[str, list[float]] = {}
    for w in windows:
        for k, v in w.items():
            if math.isfinite(v):
                values.setdefault(k, []).append(v)
    return {k: statistics.fmean(v) for k, v in values.items()}


def _balancer(trainer: TrainerView) -> Any:
    """The network's balancer; None while a later stage (no balancer) trains."""
    return trainer.meta_loss.balancer if trainer.meta_loss is not None else None


def near_clamp(w: float, lo: float | None, hi: float | None, margin: float) -> str:
    """"min_weight" or "max_weight" if the weight w is within ``margin`` of that clamp, else "".

    Weights are positive and clamp ranges span decades (1e-4 .. 1e4), so closeness is measured on a
    log scale: with both bounds, within ``margin`` x log(hi / lo) of a bound (0.05 of 1e-4 .. 1e4: a
    factor 2.5); with one bound, within a factor (1 + margin) of it.
    """
    if lo is not None and hi is not None and 0 < lo < hi:
        factor = (hi / lo) ** margin
    else:
        factor = 1.0 + margin
    if lo is not None and w <= lo * factor:
        return "min_weight"
    if hi is not None and w >= hi / factor:
        return "max_weight"
    return ""


class HealthMonitorCallback(Callback):
    """Reads ``trainer.cfg.logging.health`` (:class:`training.config.HealthConfig`).

    Put it after the sinks in the callback list: it reacts to records, and its alerts then reach
    every sink after the record that caused them.
    """

    def __init__(self) -> None:
        self.history: deque[tuple[int, dict[str, float]]] = deque()  # (step, train/* window means)
        self.weight_history: dict[str, deque[float]] = {}
        self.last_fired: dict[str, int] = {}
        self._means: tuple[int, dict[str, float]] | None = None  # latest component means, for dominance
        self._weights: tuple[int, dict[str, float]] | None = None  # latest component weights
        self._dominance_step = -1
        self.stage = "network"  # the stage the history belongs to

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        if trainer.stage != self.stage:  # another stage's losses: no spike or stall against the last one's
            self.stage, self._means, self._weights = trainer.stage, None, None
            self.history.clear()

    # -- dispatch ----------------------------------------------------------------------------------
    def on_record(self, trainer: TrainerView, record: Record) -> None:
        if record.kind == "step":
            self._check_step(trainer, record)
        elif record.kind == "weights" and record.data.get("split", "train") == "train":
            self._check_weights(trainer, record)

    def _alert(self, trainer: TrainerView, record: Record, name: str, message: str, key: str = "", **data: Any) -> None:
        key = f"{name}:{key}"
        last = self.last_fired.get(key)
        if last is not None and record.step - last < trainer.cfg.logging.health.cooldown_steps:
            return
        self.last_fired[key] = record.step
        text = f"WARNING [health/{name}] step {record.step}: {message}"
        trainer.emit(Record("alert", record.step, record.epoch, text=text, data={"alert": name, **data}))

    # -- step windows --------------------------------------------------------------------------------
    def _check_step(self, trainer: TrainerView, record: Record) -> None:
        cfg: HealthConfig = trainer.cfg.logging.health
        means, maxima = record.scalars, record.data.get("max", {})
        skipped = int(record.data.get("skipped_steps", 0))
        bad = sorted(k for k, v in {**means, **maxima}.items() if not math.isfinite(v))
        if bad or skipped:
            msg = f"non-finite values in {', '.join(bad)}" if bad else ""
            msg += ("; " if msg else "") + (f"{skipped} steps skipped with a non-finite loss" if skipped else "")
            self._alert(trainer, record, "nonfinite", msg, key="values" if bad else "skipped", keys=bad,
                        skipped_steps=skipped)

        total = means.get("train/total", math.nan)
        comps = {k[len("train/") :]: v for k, v in means.items() if k.startswith("train/") and k != "train/total"
                 and k != "train/weighted"}
        balancer = _balancer(trainer)
        if (total < 0 and not getattr(balancer, "can_be_negative", False)
                and all(v >= 0 for v in comps.values())):
            self._alert(trainer, record, "negative_total",
                        f"objective {total:.4f} < 0, which {type(balancer).__name__} cannot produce from "
                        "non-negative component losses: check the balancer's regularizer (seed 004)", total=total)

        previous = [m["train/total"] for _, m in list(self.history)[-SPIKE_HISTORY:] if "train/total" in m]
        peak = maxima.get("train/total", total)
        if previous and math.isfinite(peak):
            median = statistics.median(previous)
            if median > 0 and peak > cfg.spike_factor * median:
                self._alert(trainer, record, "loss_spike",
                            f"objective reached {peak:.4f}, {peak / median:.1f}x the median {median:.4f} of the "
                            f"last {len(previous)} windows", value=peak, median=median)

        grad = maxima.get("grad_norm/total", means.get("grad_norm/total", math.nan))
        if grad > cfg.grad_explosion:
            self._alert(trainer, record, "grad_explosion",
                        f"gradient norm {grad:.4g} before clipping exceeds {cfg.grad_explosion:.4g}", value=grad)

        self._check_stall(trainer, record, comps)
        if all(math.isfinite(v) for v in comps.values()):
            self.history.append((record.step, dict(means)))
        # keep the windows of the stall reference span (1.5 stall windows back), and the spike history
        while len(self.history) > SPIKE_HISTORY and self.history[0][0] <= record.step - 1.5 * cfg.stall_window:
            self.history.popleft()
        self._means = (record.step, comps)
        self._check_dominance(trainer, record)

    def _check_stall(self, trainer: TrainerView, record: Record, comps: dict[str, float]) -> None:
        """Seed 001: one component flat (< 1 %) over the window while another improves > 20 %.

        Each side is the mean of the step windows over half a stall window (now: the last half; then:
        the half ending ``stall_window`` steps ago), not one window: a single window mean of a
        classification loss moves by +-10 % from batch to batch, so two of them matched within 1 %
        by chance about once per run of a healthy quickstart (Class "changed -0.02 %" while it fell
        12 % over those steps)."""
        cfg: HealthConfig = trainer.cfg.logging.health
        half, then = cfg.stall_window / 2, record.step - cfg.stall_window
        ref = _mean_windows([m for s, m in self.history if then - half < s <= then])
        if not ref:
            return
        now = _mean_windows([m for s, m in self.history if s > record.step - half]
                            + [{f"train/{c}": v for c, v in comps.items()}])
        change = {}  # relative improvement: (old - new) / |old|
        for c in comps:
            old, v = ref.get(f"train/{c}"), now.get(f"train/{c}", math.nan)
            if old is not None and math.isfinite(v) and abs(old) > 0:
                change[c] = (old - v) / abs(old)
        improving = {c: r for c, r in change.items() if r > cfg.improve_rel_change}
        if not improving:
            return
        best = max(improving, key=improving.get)
        for c, r in change.items():
            if abs(r) < cfg.stall_rel_change:
                self._alert(trainer, record, "stalled_component",
                            f"{_name(c)} changed {100 * r:+.2f} % over the last {cfg.stall_window} steps while "
                            f"{_name(best)} improved {100 * improving[best]:.1f} % (check its loss scale and weight)",
                            key=c, component=c, rel_change=r, improving=best, improving_rel_change=improving[best])

    # -- weights -------------------------------------------------------------------------------------
    def _check_weights(self, trainer: TrainerView, record: Record) -> None:
        cfg: HealthConfig = trainer.cfg.logging.health
        names = record.data.get("components", {})
        weights = {}  # component (or index name) -> weight
        for tag, w in record.scalars.items():
            index = tag.split("/", 1)[1]
            weights[names.get(index, index)] = w
        bad = sorted(c for c, w in weights.items() if not math.isfinite(w))
        if bad:
            self._alert(trainer, record, "nonfinite", f"non-finite loss weights for {', '.join(map(_name, bad))}",
                        key="weights", components=bad)
            return

        balancer = _balancer(trainer)
        lo, hi = getattr(balancer, "min_weight", None), getattr(balancer, "max_weight", None)
        for c, w in weights.items():
            side = near_clamp(w, lo, hi, cfg.weight_clamp_margin)
            if side:
                clamp = lo if side == "min_weight" else hi
                self._alert(trainer, record, "weight_near_clamp",
                            f"weight of {_name(c)} is {w:.4g}, near the balancer's {side} {clamp:.4g}",
                            key=c, component=c, weight=w, clamp=clamp)

        for c, w in weights.items():
            hist = self.weight_history.get(c)
            if hist is None or hist.maxlen != cfg.oscillation_window:
                hist = self.weight_history[c] = deque(hist or (), maxlen=cfg.oscillation_window)
            hist.append(w)
            if len(hist) == cfg.oscillation_window and self._oscillates(list(hist)):
                self._alert(trainer, record, "weight_oscillation",
                            f"weight of {_name(c)} reversed direction in most of its last {len(hist)} records "
                            f"(range {min(hist):.4g} .. {max(hist):.4g}): objectives may conflict",
                            key=c, component=c)
        self._weights = (record.step, weights)
        self._check_dominance(trainer, record)

    @staticmethod
    def _oscillates(values: list[float]) -> bool:
        scale = sum(abs(v) for v in values) / len(values)
        diffs = [b - a for a, b in zip(values, values[1:], strict=False)]
        signs = [math.copysign(1.0, d) for d in diffs if abs(d) > MIN_CHANGE * scale]
        if len(signs) < len(diffs) * OSCILLATION_SHARE:
            return False
        flips = sum(a != b for a, b in zip(signs, signs[1:], strict=False))
        return flips >= OSCILLATION_SHARE * (len(diffs) - 1)

    def _check_dominance(self, trainer: TrainerView, record: Record) -> None:
        """Seed 000/003: one weighted component makes up nearly the whole objective."""
        if self._means is None or self._weights is None or self._means[0] != self._weights[0]:
            return
        if self._dominance_step == record.step:
            return
        self._dominance_step = record.step
        losses, weights = self._means[1], self._weights[1]
        terms = {c: weights[c] * losses[c] for c in losses if c in weights}
        if len(terms) < 2 or any(t < 0 or not math.isfinite(t) for t in terms.values()):
            return
        total = sum(terms.values())
        if total <= 0:
            return
        top = max(terms, key=terms.get)
        share = terms[top] / total
        if share > trainer.cfg.logging.health.dominance_share:
            self._alert(trainer, record, "dominant_component",
                        f"{_name(top)} is {100 * share:.1f} % of the weighted objective "
                        f"(w={weights[top]:.4g}, loss={losses[top]:.4f}): the other components barely train",
                        key=top, component=top, share=share)

    # -- resume ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": [[s, m] for s, m in self.history],
                "weight_history": {c: list(h) for c, h in self.weight_history.items()},
                "last_fired": dict(self.last_fired), "stage": self.stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = deque((int(s), dict(m)) for s, m in state["history"])
        self.weight_history = {c: deque(h) for c, h in state["weight_history"].items()}
        self.last_fired = {k: int(v) for k, v in state["last_fired"].items()}
        self.stage = state.get("stage", "network")  # absent: a checkpoint from before the series stage ran here
