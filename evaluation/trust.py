"""Fit what tells a reader how far to trust an answer, from a trained run's own splits:

    python -m evaluation.trust --run logs/EXP [--checkpoint best|last] [--max-train 8000] [--device auto]

writes ``RUN/familiarity.json`` (the input check: evaluation/familiarity.py) and ``RUN/calibration.json``
(temperatures: evaluation/calibration.py). The training split gives the familiarity statistics (whole
series drawn at random until ``--max-train`` recordings); the validation split the thresholds and the
temperatures; the test split and any benchmark cohort stay untouched. Training runs it after its last stage; older runs
need this command once. Both files are the run's own and are replaced when refitted.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.cli import ArgumentParser, number, resolve_device, run_main
from evaluation.calibration import Calibration, fit_calibration
from evaluation.familiarity import Familiarity, Inputs, fit_familiarity

PROG = "python -m evaluation.trust"
MAX_TRAIN = 8000  # about 300 training series of the clinical recipe: the series features' spread


def dataset_inputs(ds: Any, stats: Any, ev: Any) -> Inputs:
    """Inputs of an ABRDataset ``ds`` whose evidence is ``ev`` (training.series.extract over ``ds``)."""
    from data.stats import to_physical

    if stats.normalization != "global":
        raise ValueError("familiarity: expected a run with data.normalization=global, found "
                         f"{stats.normalization!r} (per-sample z-scores discard the amplitude the check compares)")
    signal = ds.tensors["signal"]  # (N 1 L) normalized
    return Inputs(to_physical(signal[:, 0], stats)[0].numpy(), signal, ds.tensors["static"], ev.evidence)


def subsample(ds: Any, n: int, seed: int = 0) -> Any:
    """Whole series of ``ds`` in a fixed random order, up to the first whose recordings bring the count to at
    least ``n``, as an ABRDataset-like view (the input check's series features need whole series)."""
    if len(ds) <= n:
        return ds
    sid = ds.tensors["series_id"].numpy()
    ids, counts = np.unique(sid, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(ids))
    last = int(np.searchsorted(np.cumsum(counts[order]), n))  # the series that reaches n
    idx = torch.from_numpy(np.flatnonzero(np.isin(sid, ids[order[:last + 1]])))
    view = object.__new__(type(ds))
    view.tensors = {k: v[idx] for k, v in ds.tensors.items()}
    return view


def holds_catch_sessions(data_cfg: Any) -> bool:
    """Whether a run's data (its DataConfig) holds synthetic catch sessions (docs/data.md 1.7)."""
    return data_cfg.source == "synthetic" and data_cfg.synthetic.catch_fraction > 0


def fit_trust(run_dir: str | Path, model: torch.nn.Module, diffusion: Any, bundle: Any, series_net: Any | None,
              *, catch_sessions: bool = False, device: Any = "cpu", max_train: int = MAX_TRAIN,
              log: logging.Logger | None = None) -> tuple[Familiarity, Calibration]:
    """Fit and save familiarity.json and calibration.json of a run (``bundle``: its DataBundle;
    ``catch_sessions``: :func:`holds_catch_sessions` of its data, left out of the calibration)."""
    from training.clinical import series_index
    from training.series import extract

    log = log or logging.getLogger("abr")
    t0 = time.time()
    train = subsample(bundle.train, max_train)
    ev_train, ev_val = extract(model, train, device=device), extract(model, bundle.val, device=device)
    val_series = series_index(ev_val.series_id, ev_val.static[:, 1])
    stats = bundle.stats
    fam = fit_familiarity(model, diffusion, dataset_inputs(train, stats, ev_train),
                          dataset_inputs(bundle.val, stats, ev_val), val_series,
                          (stats.static_min, stats.static_max),
                          train_series=series_index(ev_train.series_id, ev_train.static[:, 1]), device=device)
    cal = fit_calibration(ev_val, series_net, catch_sessions=catch_sessions)
    paths = fam.save(run_dir), cal.save(run_dir)
    log.info("input check and calibration fitted on %d train recordings (%d series) / %d val recordings (%d series) "
             "in %.0f s: %s", fam.n_train, fam.n_train_series, fam.n_val_recordings, fam.n_val_series,
             time.time() - t0, ", ".join(map(str, paths)))
    log.info("temperatures: per recording %.3g (class biases %s), summed evidence %.3g, series model %s, threshold %s"
             "; fitted on %d val recordings (%d series)%s", cal.recording,
             " ".join(f"{b:+.2f}" for b in cal.recording_bias or []), cal.evidence_sum, _t(cal.series_model),
             _t(cal.threshold), cal.n_val_recordings, cal.n_val_series,
             ", catch sessions left out" if catch_sessions else "")
    return fam, cal


def _t(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory, e.g. logs/EXP")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--max-train", type=number(int, ge=100), default=MAX_TRAIN,
                   help=f"training recordings the statistics are fitted on (default {MAX_TRAIN})")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    def body() -> int:
        from data.dataset import build_data
        from training.checkpoint import load_run
        from training.series import load_series

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        device = resolve_device(args.device)
        loaded = load_run(args.run, which=args.checkpoint, device=device)
        series_net = load_series(args.run)
        bundle = build_data(loaded.cfg.data, loaded.cfg.loss.class_weights)
        fit_trust(args.run, loaded.model, loaded.diffusion.to(device), bundle, series_net,
                  catch_sessions=holds_catch_sessions(loaded.cfg.data), device=device, max_train=args.max_train)
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
