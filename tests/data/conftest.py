"""Shared fixtures for the data tests: small synthetic record sets and files made from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.native import write_native
from data.records import Records
from data.synthetic import generate

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def small_records() -> Records:
    """20 patients (about 500 recordings), every class present."""
    return generate(20, seed=1)


@pytest.fixture(scope="session")
def cohort() -> Records:
    """2,000 patients: the size the statistics acceptance is stated for (about 1 s to generate)."""
    return generate(2000, seed=0)


@pytest.fixture
def native_file(tmp_path: Path, small_records: Records) -> Path:
    return write_native(tmp_path / "small.npz", small_records)


def columns_of(records: Records) -> dict[str, np.ndarray]:
    """A writable copy of the columns (tests corrupt them)."""
    return {k: np.array(v, copy=True) for k, v in records.columns().items()}
