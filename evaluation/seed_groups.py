"""Seed groups for ``evaluation.compare --group-seeds``: runs whose configs differ only in their seed
form one group, drawn as the mean curve with a shaded 95 % band over seeds and tabled as mean ±
half-width of that interval, with n.

The interval is Student's t over seeds: mean ± t(0.975, n - 1) · s / √n, s the sample standard
deviation (ddof 1) of the n runs' values. It is the seed-to-seed spread of the whole pipeline
(initialisation, data order, noise draws), not a test-set sampling error; a group of one run has no
interval. ``seed`` always counts as a seed; ``data.split_seed`` and ``data.synthetic.seed`` count
when the user names them (``--seed-key``), since they change which recordings a run saw.
Where a run was written and on what device (``logging.*``, ``device``, ``data.num_workers``) is not
what it trained, so those keys never separate groups.

A sweep root (``train.py -m``, holding sweep.json) stands for its runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.rundir import SWEEP_FILE  # a -m sweep's root lists its runs there

if TYPE_CHECKING:
    from evaluation.runlog import RunLog

SEED_KEY = "seed"
DATA_SEED_KEYS = ("data.split_seed", "data.synthetic.seed")  # seeds of the data: pooled only on request
NOT_TRAINING = ("logging.", "device", "data.num_workers")  # prefixes of keys that do not change what is trained
MAX_LABEL_KEYS = 3  # more differing keys than this: groups are numbered (G1, G2, ...) and listed in the table
CONFIDENCE = 0.95


# --------------------------------------------------------------------------------------------
# the interval


def t_half_width(values: np.ndarray) -> np.ndarray | None:
    """Half-width of the 95 % Student-t interval of the mean over axis 0 of ``values`` [n, ...];
    None for n < 2 (one run has no spread)."""
    from scipy import stats

    n = values.shape[0]
    if n < 2:
        return None
    return stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)


def mean_interval(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "half_width", "ci", "n"} over the finite ``values`` (an absent metric is nan and is not
    counted: n says how many runs had it). No finite value: mean None, n 0."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)  # [n]
    if v.size == 0:
        return {"mean": None, "half_width": None, "ci": None, "n": 0}
    mean, half = float(v.mean()), t_half_width(v)
    if half is None:
        return {"mean": mean, "half_width": None, "ci": None, "n": 1}
    return {"mean": mean, "half_width": float(half), "ci": [mean - float(half), mean + float(half)], "n": int(v.size)}


# --------------------------------------------------------------------------------------------
# sweep roots


def expand_sweeps(paths: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """``paths`` with each sweep root replaced by its runs (sweep.json order), and a warning per run of
    a sweep that has not started (no metrics.jsonl), which is left out. A path that is a run, or
    neither, is kept as given (reading it says what is wrong)."""
    out: list[Path] = []
    warnings: list[str] = []
    for p in map(Path, paths):
        if (p / "metrics.jsonl").is_file() or not (p / SWEEP_FILE).is_file():
            out.append(p)
            continue
        runs = [p / d for d in _sweep_dirs(p / SWEEP_FILE)]
        started = [d for d in runs if (d / "metrics.jsonl").is_file()]
        if not started:
            raise ValueError(f"sweep '{p}': expected at least one run with a metrics.jsonl, found none of "
                             f"{len(runs)} (has it started?)")
        warnings += [f"sweep '{p}': run '{d.name}' has no metrics.jsonl yet (not started): left out"
                     for d in runs if d not in started]
        out += started
    return out, warnings


def _sweep_dirs(path: Path) -> list[str]:
    try:
        sweep = json.loads(path.read_text(encoding="utf-8"))
        dirs = [r["dir"] for r in sweep["runs"]]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"sweep file '{path}': expected a JSON object with runs: [{{\"dir\": ...}}, ...] as "
                         f"train.py -m writes it, found something else ({type(exc).__name__}: {exc})") from None
    if not all(isinstance(d, str) and d and "/" not in d and d not in (".", "..") for d in dirs):
        raise ValueError(f"sweep file '{path}': expected each run's dir to be a folder name, found {dirs}")
    return dirs


# --------------------------------------------------------------------------------------------
# grouping


@dataclass
class SeedGroup:
    label: str  # the values of the keys that differ between groups ("famo"), or "all runs"
    settings: dict[str, Any]  # those keys and this group's values
    members: list[int]  # indices into the runs given
    seeds: list[dict[str, Any]] = field(default_factory=list)  # each member's seed keys

    @property
    def n(self) -> int:
        return len(self.members)

    def legend(self) -> str:
        """``famo (n=3 seeds)``; ``runs`` where two members share a seed (repeats, not seeds)."""
        distinct = len({json.dumps(s, sort_keys=True) for s in self.seeds}) == self.n
        what = ("seed" if distinct else "run") + ("s" if self.n != 1 else "")
        return f"{self.label} (n={self.n} {what})"


def _config(run_dir: Path, name: str) -> dict[str, Any]:
    from data.schema import flatten_tree, read_yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ValueError(f"run {name}: --group-seeds expected a config.yaml in '{run_dir}' (it tells the run's "
                         f"seed from its other settings), found none")
    return flatten_tree(read_yaml(path))


def format_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def group_runs(run_dirs: Sequence[Path], names: Sequence[str], seed_keys: Sequence[str]
               ) -> tuple[list[SeedGroup], list[str], list[str]]:
    """(groups in order of first appearance, the config keys that differ between groups, warnings).
    Runs fall in one group when their config.yaml agree on every key but ``seed_keys`` and the keys
    that do not change what is trained (NOT_TRAINING)."""
    configs = [_config(Path(d), n) for d, n in zip(run_dirs, names, strict=True)]
    for key in seed_keys:
        for cfg, name in zip(configs, names, strict=True):
            if key not in cfg:
                raise ValueError(f"--seed-key {key}: expected it in every run's config.yaml, not found in run "
                                 f"{name}")
    by_identity: dict[str, tuple[dict[str, Any], SeedGroup]] = {}
    for i, cfg in enumerate(configs):
        rest = {k: v for k, v in cfg.items() if k not in seed_keys and not k.startswith(NOT_TRAINING)}
        identity = json.dumps(rest, sort_keys=True, default=str)
        _rest, g = by_identity.setdefault(identity, (rest, SeedGroup("", {}, [])))
        g.members.append(i)
        g.seeds.append({k: cfg[k] for k in seed_keys})
    rests = [r for r, _g in by_identity.values()]
    groups = [g for _r, g in by_identity.values()]
    missing = object()
    keys = [k for k in dict.fromkeys(k for r in rests for k in r)
            if len({json.dumps(r.get(k, missing), default=str) for r in rests}) > 1]
    for j, (rest, g) in enumerate(zip(rests, groups, strict=True), start=1):
        g.settings = {k: rest.get(k) for k in keys}
        g.label = ("all runs" if not keys else f"G{j}" if len(keys) > MAX_LABEL_KEYS
                   else ", ".join(format_value(rest.get(k)) for k in keys))
    return groups, keys, _group_warnings(groups, keys, names, seed_keys)


def _group_warnings(groups: list[SeedGroup], keys: list[str], names: Sequence[str],
                    seed_keys: Sequence[str]) -> list[str]:
    warnings = []
    for g in groups:
        seen: dict[str, str] = {}
        for i, s in zip(g.members, g.seeds, strict=True):
            text = json.dumps(s, sort_keys=True)
            if text in seen:
                warnings.append(f"group {g.label}: runs {seen[text]} and {names[i]} share the seed {text}: they are "
                                f"repeats, not independent seeds")
            seen.setdefault(text, names[i])
    unpooled = [k for k in keys if k in DATA_SEED_KEYS and k not in seed_keys]
    if keys and unpooled == keys:
        flags = " ".join(f"--seed-key {k}" for k in unpooled)
        warnings.append(f"the groups differ only in {', '.join(unpooled)}: add {flags} to pool them as seeds")
    return warnings


# --------------------------------------------------------------------------------------------
# curves


def group_series(runs: Sequence[RunLog], key: str, kinds: tuple[str, ...]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    """(steps [T], mean [T], half-width [T] or None, ragged) of scalar ``key`` over ``runs``, at the
    steps every run that logged ``key`` has (a step logged twice, e.g. around a resume, counts
    once: its last value). ``ragged``: some run logged other steps, or none of it."""
    per = [dict(zip(*r.series(key, kinds), strict=True)) for r in runs]
    per = [p for p in per if p]
    if not per:
        return np.array([]), np.array([]), None, False
    common = sorted(set.intersection(*(set(p) for p in per)))
    ragged = len(per) < len(runs) or any(len(p) != len(common) for p in per)
    values = np.array([[p[s] for s in common] for p in per], dtype=float)  # [n, T]
    return np.array(common), values.mean(axis=0), t_half_width(values), ragged


def plot_group_curves(runs: Sequence[RunLog], groups: Sequence[SeedGroup], group_keys: Sequence[str],
                      path: Path) -> tuple[Path, list[str]]:
    """:func:`evaluation.plots.plot_loss_curves` per seed group: one colour per group, the mean over
    its seeds (train dashed, validation solid) with the 95 % t-band shaded; n in the legend. Returns
    the path and a warning per group whose runs logged different steps (the curves keep the steps
    all of them have)."""
    from evaluation import plots

    with plots.plt.rc_context(plots.PAPER_RC):
        fig, ragged = _draw_groups(runs, groups, group_keys)
        return plots._save(fig, path), [f"group {groups[j].label}: its runs logged different steps (they stop at "
                                        f"steps {_last_steps(runs, groups[j])}); its curves keep the steps all of "
                                        f"them logged" for j in sorted(ragged)]


def _last_steps(runs: Sequence[RunLog], g: SeedGroup) -> str:
    return ", ".join(f"{max((int(r.get('step', 0)) for r in runs[i].records), default=0)} ({runs[i].name})"
                     for i in g.members)


def _draw_groups(runs: Sequence[RunLog], groups: Sequence[SeedGroup], group_keys: Sequence[str]):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from evaluation import plots

    keys, cols = plots.CURVE_KEYS, 4
    rows = math.ceil(len(keys) / cols)
    fig, axes = plots.plt.subplots(rows, cols, figsize=(plots.PAGE_WIDTH_IN, 1.75 * rows + 0.7), squeeze=False)
    colors = plots.plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ragged: set[int] = set()
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for i, (ax, key) in enumerate(zip(axes.flat, keys, strict=False)):
        positive = True
        for j, g in enumerate(groups):
            members = [runs[m] for m in g.members]
            for split, kinds, style, alpha in (("train", ("step",), "--", 0.12), ("val", ("epoch",), "-", 0.25)):
                steps, mean, half, uneven = group_series(members, f"{split}/{key}", kinds)
                if not steps.size:
                    continue
                ragged |= {j} if uneven else set()
                c = colors[j % len(colors)]
                ax.plot(steps, mean, style, color=c, lw=1.0, marker="." if split == "val" else None, ms=3)
                if half is not None:  # on a log axis a band reaching 0 runs off the bottom (matplotlib clips it)
                    ax.fill_between(steps, mean - half, mean + half, color=c, alpha=alpha, lw=0)
                positive &= bool(mean.min() > 0)
        _finish_panel(ax, key, i, cols, len(keys), positive)
    styles = [Line2D([], [], color="0.3", ls="--", label="train (window mean)"),
              Line2D([], [], color="0.3", ls="-", marker=".", label="validation"),
              Patch(color="0.3", alpha=0.25, lw=0, label="95 % t-interval over seeds")]
    named = [Line2D([], [], color=colors[j % len(colors)], lw=2, label=g.legend()) for j, g in enumerate(groups)]
    title = ",\n".join(group_keys or ["runs"]) + "\n(mean over seeds)"  # one key a line: the panel is narrow
    spare = axes.flat[len(keys)] if len(keys) < axes.size else None
    if spare is not None:  # the groups' legend in the free panel: it may be long, and stays readable there
        spare.set_visible(True)
        spare.set_axis_off()
        spare.legend(handles=named, loc="center left", bbox_to_anchor=(0.0, 0.5), frameon=False, title=title,
                     alignment="left")
        named = []
    fig.legend(handles=styles + named, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False,
               title=None if spare is not None else title)
    fig.tight_layout()
    return fig, ragged


def _finish_panel(ax, key: str, i: int, cols: int, n_keys: int, positive: bool) -> None:
    """The axes of one panel as evaluation.plots.plot_loss_curves sets them."""
    from evaluation import plots

    if ax.lines:
        if positive:
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(plots._label(key))
    if i % cols == 0:
        ax.set_ylabel("loss" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    if i + cols >= n_keys:  # the lowest panel of its column
        ax.set_xlabel("optimizer step")
