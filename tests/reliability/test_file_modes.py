"""Files the pipeline writes honour the umask like any ``open()``: checkpoints, exports and generated
signals used to be 0o600 (mkstemp, safetensors), unreadable to the rest of a lab group."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager

import pytest
import torch

from training.checkpoint import new_file_mode, save_checkpoint, umask


@contextmanager
def process_umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_umask_is_read_without_changing_it(mask, expected):
    with process_umask(mask):
        assert umask() == mask and new_file_mode() == expected
        assert umask() == mask


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_a_checkpoint_has_the_mode_of_any_new_file(tmp_path, mask, expected):
    with process_umask(mask):
        save_checkpoint({"w": torch.zeros(2)}, tmp_path / "last.pt")
    assert mode(tmp_path / "last.pt") == expected


def test_generated_signals_have_the_mode_of_any_new_file(tmp_path):
    from evaluation.generate import write_generated

    with process_umask(0o022):
        npz, png = write_generated(tmp_path / "gen.npz", torch.randn(2, 1, 200), torch.tensor([1.0, 80.0, 21.1, 0.0]),
                                   {})
    assert mode(npz) == mode(png) == 0o644
