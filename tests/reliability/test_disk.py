"""An unwritable run directory fails before training starts; a disk that fills up while a
checkpoint is written leaves the previous checkpoint intact and loadable, with a clear error."""

from __future__ import annotations

import errno
import io
import os
import types
from pathlib import Path

import pytest

import training.checkpoint as checkpoint_module
from data.convert import main as convert_main
from data.native import read_native
from data.synthetic import generate
from data.table import write_table
from tests.reliability.procs import in_process_args, train_in_process
from training.checkpoint import load_checkpoint, save_checkpoint

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_run_dir_under_a_file_fails_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    rc = train_in_process(in_process_args(tmp_path / "file", "exp"))
    assert rc == 2
    line = one_error_line(capsys)
    assert line.startswith("error: run directory ") and "exp" in line and "not writable" in line


def test_unwritable_run_dir_fails_before_training(tmp_path, capsys, monkeypatch):
    real = Path.write_text

    def write_text(self, *args, **kwargs):  # root ignores chmod: refuse the probe write instead
        if self.name == ".write_test":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    rc = train_in_process(in_process_args(tmp_path, "exp"))
    assert rc == 2
    assert one_error_line(capsys) == f"error: run directory '{tmp_path / 'exp'}': not writable (Permission denied)"
    assert not (tmp_path / "exp").exists()  # nothing written, nothing trained, no stub to block a rerun


def test_convert_on_a_full_disk_exits_1_and_says_what_was_written(tmp_path, capsys, monkeypatch):
    """A disk error is not the user's input: exit 1 (a bad file or flag is 2), one line that says
    which file could not be written and which one was."""
    src = write_table(tmp_path / "t.csv", generate(3, seed=1))
    out, report = tmp_path / "o.npz", tmp_path / "r.json"
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self == report:
            raise ENOSPC
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    assert convert_main([str(src), str(out), "--report", str(report)]) == 1
    assert one_error_line(capsys) == (
        f"error: --report {report}: cannot write (No space left on device); {out} was written")
    assert len(read_native(out)[0]) > 0 and not report.exists()


class FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left."""

    room = 0

    def write(self, b) -> int:
        if self.tell() + len(b) > self.room:
            raise ENOSPC
        return super().write(b)


def fill_disk_at(monkeypatch, save_index: int, how: str) -> list[int]:
    """The ``save_index``-th checkpoint write (1-based) hits a full disk, in torch.save or in fsync."""
    calls = [0]
    fake_os = types.SimpleNamespace(**vars(os))

    def fdopen(fd, mode="r", *args, **kwargs):
        calls[0] += 1
        if calls[0] == save_index and how == "write":
            FullDisk.room = 4096
            return FullDisk(fd, "wb", closefd=True)
        return os.fdopen(fd, mode, *args, **kwargs)

    def fsync(fd):
        if calls[0] == save_index and how == "fsync":
            raise ENOSPC
        return os.fsync(fd)

    fake_os.fdopen, fake_os.fsync = fdopen, fsync
    monkeypatch.setattr(checkpoint_module, "os", fake_os)
    return calls


@pytest.mark.parametrize("how", ["write", "fsync"])
def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, capsys, how):
    ckpt = tmp_path / "exp" / "checkpoints"
    with monkeypatch.context() as m:
        fill_disk_at(m, 3, how)  # saves at steps 2, 4, then 6 fails
        rc = train_in_process(in_process_args(tmp_path, "exp", "training.checkpoint_every_steps=2"))
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1] == (f"error: [Errno {errno.ENOSPC}] checkpoint '{ckpt / 'last.pt'}': write failed "
                       f"(No space left on device); the previous last.pt is intact")
    assert load_checkpoint(ckpt / "last.pt")["step"] == 4
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt"]  # no temporary left behind
    if how == "write":
        assert train_in_process(["--resume", str(tmp_path / "exp")]) == 0  # space freed: the run continues
        final = load_checkpoint(ckpt / "last.pt")
        assert final["step"] > 4 and final["epoch"] == 3  # both epochs done


def test_leftover_temporaries_are_removed_by_the_next_write(tmp_path):
    for name in (".last.pt.abc123.tmp", ".best.pt.xyz789.tmp"):  # what a kill -9 during a write leaves
        (tmp_path / name).write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_text("not ours")
    save_checkpoint({"step": 1}, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.tmp"]


def test_cleanup_never_removes_a_checkpoint_in_flight(tmp_path, monkeypatch):
    """Another writer's temporary (a thread here; another process alike) is left alone while it is
    written: only temporaries whose writer is gone are removed."""
    import threading

    real_save = checkpoint_module.torch.save
    halfway, finish = threading.Event(), threading.Event()

    def slow_save(obj, f):  # the writer of last.pt stops halfway through its file
        if obj.get("step") == 1:
            f.write(b"half a checkpoint")
            halfway.set()
            assert finish.wait(30)
            f.seek(0)
        real_save(obj, f)

    monkeypatch.setattr(checkpoint_module.torch, "save", slow_save)
    errors: list[BaseException] = []

    def writer():
        try:
            save_checkpoint({"step": 1}, tmp_path / "last.pt")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    assert halfway.wait(30)
    (tmp_path / ".best.pt.dead00.tmp").write_bytes(b"left by a kill -9")
    save_checkpoint({"step": 2}, tmp_path / "best.pt")  # its clean-up runs while last.pt is in flight
    finish.set()
    thread.join(30)
    assert errors == []
    steps = [checkpoint_module.torch.load(tmp_path / n, weights_only=True)["step"] for n in ("last.pt", "best.pt")]
    assert steps == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
