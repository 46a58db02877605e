"""The cochlear microphonic of virtual patients (issue 28), drawn from the run's own training ears.

    python -m evaluation.microphonic_bank --run logs/EXP   # writes RUN/microphonic_bank.safetensors (training does)

Auditory neuropathy is read from its cochlear microphonic (a ringing in the first milliseconds without neural
waves; Berlin et al. 2010), and the network does not draw one: its neuropathy twins carry none (microphonic
index about 0 at 70 dB or more, against about 1.6 in the real recordings; docs/generate.md, "The rare types on
their own"), and the series model reads them as another type. Asked to draw it (``model.microphonic_conditioning``)
it learned the direction, far too weakly. So generation composes it, as a recording is composed of a response
and what rings beside it: each generated series of a requested type gets the microphonic of one training ear of
that type, level by level.

Fitting (:func:`fit_bank`, training split only): each recording's microphonic index (models.series.
microphonic_index, the series model's reader); where it exceeds GATE (band power in the microphonic's window
e^GATE times the late background's: a microphonic, not band noise), its MICROPHONIC_BAND_HZ component
(models.series.band_passed) inside WINDOW_MS, with raised-cosine edges of TAPER_MS, is kept. Every training
recording is listed (ear, level, type, and its component's row or -1), so that an ear without a microphonic is
drawn as often as it occurs.

Composing (:func:`compose`): per requested series, one training ear of the requested type drawn at random; each
recording of the series gets the component of that ear's recording nearest in level, when one lies within
LEVEL_TOLERANCE_DB and has a component. A type without training ears gets nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data.files import write_atomic
from data.records import SAMPLE_RATE_HZ, SIGNAL_LENGTH

FILE = "microphonic_bank.safetensors"
VERSION = 1
GATE = 2.0  # microphonic index (log power ratio) above which a recording's band component is kept
WINDOW_MS = (0.3, 3.0)  # where the component is kept (the microphonic rings from about 0.4 ms for about 1 ms)
TAPER_MS = 0.3  # raised-cosine edges of the window: no step where the component is cut
LEVEL_TOLERANCE_DB = 10.0  # the drawn ear's nearest level must lie this close to the requested one
MAX_BYTES = 256 << 20  # a larger file is refused unread (about 300,000 components of 200 float32 samples)
KEYS = ("component", "row", "ear", "level", "type")


def window() -> np.ndarray:
    """(SIGNAL_LENGTH,) the gate: 1 inside WINDOW_MS, raised-cosine edges of TAPER_MS outside it, 0 beyond."""
    t = np.arange(SIGNAL_LENGTH) * 1e3 / SAMPLE_RATE_HZ  # ms
    lo, hi = WINDOW_MS
    rise = np.clip((t - lo) / TAPER_MS + 1.0, 0.0, 1.0)
    fall = np.clip((hi - t) / TAPER_MS + 1.0, 0.0, 1.0)
    return ((0.5 - 0.5 * np.cos(np.pi * rise)) * (0.5 - 0.5 * np.cos(np.pi * fall))).astype(np.float32)


def fit_bank(signal_uv: np.ndarray, level: np.ndarray, label: np.ndarray, ear: np.ndarray) -> dict[str, np.ndarray]:
    """The bank of N training recordings: signal (N L) µV, level (N,) dB, label (N,) type, ear (N,) series id.
    Returns KEYS: component (K L) float32 µV, and per recording its row in it or -1, ear, level and type."""
    from models.series import MICROPHONIC_BAND_HZ, band_passed, microphonic_index

    index = microphonic_index(signal_uv)[:, 0]  # (N,)
    keep = np.flatnonzero(index > GATE)
    component = band_passed(signal_uv[keep], MICROPHONIC_BAND_HZ, 4).numpy() * window()[None]  # (K L)
    row = np.full(len(index), -1, np.int64)
    row[keep] = np.arange(len(keep))
    return {"component": component.astype(np.float32), "row": row, "ear": np.asarray(ear, np.int64),
            "level": np.asarray(level, np.float32), "type": np.asarray(label, np.int64)}


def compose(bank: dict[str, np.ndarray], level: np.ndarray, label: np.ndarray, series: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """What to add to N generated recordings (N L) µV: level (N,) dB, requested type label (N,), series (N,)
    ids (one ear each; every recording of a series must ask for one type). Also returns the number of
    recordings given a microphonic."""
    out = np.zeros((len(level), SIGNAL_LENGTH), np.float32)
    composed = 0
    ears = {k: np.unique(bank["ear"][bank["type"] == k]) for k in np.unique(label)}  # type -> its training ears
    members: dict[int, np.ndarray] = {}  # training ear -> its recordings
    for s in np.unique(series):
        rows = np.flatnonzero(series == s)
        kinds = np.unique(label[rows])
        if len(kinds) != 1:
            raise ValueError(f"microphonic bank: expected one type per series, found series {s} asking for "
                             f"types {kinds.tolist()}")
        if not len(ears[kinds[0]]):
            continue
        e = int(rng.choice(ears[kinds[0]]))
        if e not in members:
            members[e] = np.flatnonzero(bank["ear"] == e)
        own = members[e]
        for r in rows:
            j = own[np.argmin(np.abs(bank["level"][own] - level[r]))]
            if abs(float(bank["level"][j]) - float(level[r])) <= LEVEL_TOLERANCE_DB and bank["row"][j] >= 0:
                out[r] = bank["component"][bank["row"][j]]
                composed += 1
    return out, composed


def save_bank(run_dir: str | Path, bank: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(bank[k]) for k in KEYS}, metadata={"version": str(VERSION),
                                                                           "gate": str(GATE)})
    return write_atomic(Path(run_dir) / FILE, lambda f: f.write(data))


def load_bank(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """RUN/microphonic_bank.safetensors, or None where the run has none; one line where it is not a bank."""
    from safetensors import safe_open

    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    refit = f"; refit it with python -m evaluation.microphonic_bank --run {run_dir}"
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{path}: expected a microphonic bank of at most {MAX_BYTES >> 20} MiB (MAX_BYTES), found "
                         f"{path.stat().st_size >> 20} MiB{refit}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            version = (f.metadata() or {}).get("version")
            bank = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not iterable)
    except Exception as exc:  # safetensors raises its own error types on a file that is not one
        raise ValueError(f"{path}: expected a safetensors microphonic bank, found an unreadable file ({exc}){refit}"
                         ) from None
    n = len(bank.get("row", ()))
    if version != str(VERSION) or set(bank) != set(KEYS) or bank["component"].shape[1:] != (SIGNAL_LENGTH,) or \
            any(len(bank[k]) != n for k in ("ear", "level", "type")) or \
            (n and int(bank["row"].max()) >= len(bank["component"])):
        raise ValueError(f"{path}: expected a microphonic bank of version {VERSION} with {', '.join(KEYS)} "
                         f"({SIGNAL_LENGTH} samples per component, one row per recording){refit}")
    return bank


def fit_run_bank(run_dir: str | Path, train: Any, stats: Any) -> Path:
    """Fit and save the bank of a run from its training split ``train`` (an ABRDataset, signals normalized by
    ``stats``, its DataStats)."""
    from data.stats import to_physical

    t = train.tensors
    uv = to_physical(t["signal"][:, 0], stats)[0].numpy()  # (N L) µV
    return save_bank(run_dir, fit_bank(uv, t["static"][:, 1].numpy(), t["label"].numpy(), t["series_id"].numpy()))


def main(argv: Sequence[str] | None = None) -> int:
    from data.cli import ArgumentParser, run_main

    p = ArgumentParser(prog="python -m evaluation.microphonic_bank", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory, e.g. logs/EXP")
    args = p.parse_args(argv)

    def body() -> int:
        from data.dataset import build_data
        from training.checkpoint import load_run

        cfg = load_run(args.run).cfg
        bundle = build_data(cfg.data, cfg.loss.class_weights)
        path = fit_run_bank(args.run, bundle.train, bundle.stats)
        bank = load_bank(args.run)
        print(f"wrote {path} ({len(bank['component'])} components of {len(bank['row'])} training recordings)")
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
