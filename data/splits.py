"""Patient-level stratified splits, class weights and the balanced sampler.

A patient's recordings always land in one split: the split is drawn over patients, stratified by
each patient's class (the most frequent label among its recordings), with largest-remainder
rounding of the ratios inside every class. Deterministic in the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from data.records import CLASS_NAMES, NUM_CLASSES

SPLIT_NAMES = ("train", "val", "test")
# Classes one patient's recordings may carry: a type of loss per ear. More means the patient ids are
# not patients (a file whose every row has id 0 would make the split see one patient).
MAX_CLASSES_PER_PATIENT = 2


def _apportion(n: int, ratios: Sequence[float]) -> np.ndarray:
    """n items shared by ratios with largest-remainder rounding (ties go to the earlier split)."""
    raw = np.asarray(ratios, dtype=np.float64) * n
    counts = np.floor(raw + 1e-9).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def split_patients(patient_id: np.ndarray, label: np.ndarray, ratios: Sequence[float],
                   seed: int, source: str = "data") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recording indices of (train, val, test). No patient is in two splits; every split with a
    positive ratio gets at least one patient when there are enough patients. ``source`` (the file)
    is named when a patient's recordings carry more than MAX_CLASSES_PER_PATIENT classes."""
    pids, inverse = np.unique(patient_id, return_inverse=True)
    counts = np.zeros((len(pids), NUM_CLASSES), dtype=np.int64)
    np.add.at(counts, (inverse, label), 1)
    check_patient_classes(pids, counts, source)
    patient_class = counts.argmax(axis=1)  # (P,)
    rng = np.random.default_rng(seed)
    split_of = np.empty(len(pids), dtype=np.int64)  # (P,)
    for c in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(patient_class == c))
        shares = _apportion(len(members), ratios)
        # A rare class (NÖROPATİ is 0.8 %) must reach every split when it has enough patients,
        # or its test recall is undefined: move one patient from the largest share to an empty one.
        for s in range(3):
            if ratios[s] > 0 and shares[s] == 0 and len(members) >= sum(r > 0 for r in ratios):
                shares[int(np.argmax(shares))] -= 1
                shares[s] += 1
        split_of[members] = np.repeat(np.arange(3), shares)
    for s in range(3):  # small data: a wanted split may have come out empty
        if ratios[s] > 0 and not (split_of == s).any():
            sizes = np.bincount(split_of, minlength=3)
            donor = int(np.argmax(sizes))
            if sizes[donor] > 1:
                split_of[np.flatnonzero(split_of == donor)[-1]] = s
    per_recording = split_of[inverse]
    return tuple(np.flatnonzero(per_recording == s) for s in range(3))  # type: ignore[return-value]


def check_patient_classes(pids: np.ndarray, counts: np.ndarray, source: str) -> None:
    """``ValueError`` for the first patient whose recordings (``counts``: patients x classes) carry more
    than MAX_CLASSES_PER_PATIENT classes."""
    many = np.flatnonzero((counts > 0).sum(axis=1) > MAX_CLASSES_PER_PATIENT)
    if len(many):
        p = many[0]
        found = ", ".join(f"{CLASS_NAMES[c]} {counts[p, c]}" for c in np.flatnonzero(counts[p]))
        raise ValueError(f"{source}: patient {pids[p]} has recordings of {int((counts[p] > 0).sum())} classes "
                         f"({found}); expected at most MAX_CLASSES_PER_PATIENT = {MAX_CLASSES_PER_PATIENT} (a type "
                         f"of loss per ear): the split is drawn by patient, so check the patient ids")


def class_weights(label: np.ndarray, mode: str) -> torch.Tensor:
    """Per-class loss weights (float32 [5], mean 1) from the training labels.

    ``none``: ones; ``inverse``: 1 / count; ``sqrt_inverse``: 1 / sqrt(count). Classes absent from
    the training split get weight 1 (they never occur in its loss); the present ones are scaled so
    that all five average to 1.
    """
    if mode not in ("none", "inverse", "sqrt_inverse"):
        raise ValueError(f"class weights: expected 'none', 'inverse' or 'sqrt_inverse', found {mode!r}")
    counts = np.bincount(label, minlength=NUM_CLASSES).astype(np.float64)
    w = np.ones(NUM_CLASSES)
    present = counts > 0
    if mode != "none" and present.any():
        raw = 1.0 / (counts[present] if mode == "inverse" else np.sqrt(counts[present]))
        w[present] = raw * present.sum() / raw.sum()
    return torch.tensor(w, dtype=torch.float32)


def balanced_weights(label: np.ndarray) -> torch.Tensor:
    """Per-recording sampling weights 1 / (count of its class), float64 [N]: drawn with replacement in
    proportion to them, every class comes equally often in expectation (NÖROPATİ is under 1 %)."""
    counts = np.bincount(label, minlength=NUM_CLASSES).astype(np.float64)
    return torch.as_tensor(1.0 / counts[label], dtype=torch.double)
