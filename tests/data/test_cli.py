"""data.cli: the one error line, numeric flags with named limits, devices and outputs."""

from __future__ import annotations

import re

import pytest
import torch

from data.cli import (
    EXIT_FAILURE,
    EXIT_USAGE,
    ArgumentParser,
    check_number,
    error_line,
    number,
    refuse_overwrite,
    resolve_device,
    run_main,
)


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="prog")
    p.add_argument("--n", type=number(int, ge=1, le=100, limit="MAX_N"), default=1)
    p.add_argument("--w", type=number(float, ge=0.0), default=1.0)
    return p


@pytest.mark.parametrize(("argv", "message"), [
    (["--n", "0"], r"argument --n: expected an integer >= 1 and <= 100 \(MAX_N\), found '0'"),
    (["--n", "101"], r"argument --n: expected an integer >= 1 and <= 100 \(MAX_N\), found '101'"),
    (["--n", "2.5"], r"argument --n: expected an integer .*, found '2.5'"),
    (["--n", "1e9"], r"argument --n: expected an integer .*, found '1e9'"),
    (["--w", "nan"], r"argument --w: expected a finite number >= 0, found 'nan'"),
    (["--w", "inf"], r"argument --w: expected a finite number >= 0, found 'inf'"),
    (["--w", "-1"], r"argument --w: expected a finite number >= 0, found '-1'"),
    (["--w", "abc"], r"argument --w: expected a finite number >= 0, found 'abc'"),
])
def test_a_bad_flag_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("prog: error: ") and err.rstrip().endswith("(see --help)")
    assert re.search(message, err), err


def test_good_flags_and_debug():
    args = _parser().parse_args(["--n", "100", "--w", "0", "--debug"])
    assert (args.n, args.w, args.debug) == (100, 0.0, True)
    assert isinstance(args.n, int)


def test_check_number_names_where():
    assert check_number("--x", "3", int, ge=1) == 3
    assert check_number("k", 2.0, int) == 2
    with pytest.raises(ValueError, match=r"^--x: expected an integer >= 1, found 0$"):
        check_number("--x", 0, int, ge=1)
    with pytest.raises(ValueError, match=r"^--y: expected a finite number > 0, found nan$"):
        check_number("--y", float("nan"), gt=0)
    with pytest.raises(ValueError, match=r"^--z: expected an integer, found True$"):
        check_number("--z", True, int)


def test_run_main_one_line_exit_codes_and_debug(capsys):
    def bad_input():
        raise ValueError("--run 'x': expected a run directory,\n found none")

    def disk():
        raise OSError(28, "No space left on device")

    def bug():
        raise KeyError("model")

    assert run_main(bad_input, debug=False) == EXIT_USAGE
    assert capsys.readouterr().err == "error: --run 'x': expected a run directory, found none\n"
    assert run_main(disk, debug=False) == EXIT_FAILURE
    assert capsys.readouterr().err == "error: [Errno 28] No space left on device\n"
    assert run_main(bug, debug=False) == EXIT_FAILURE
    assert capsys.readouterr().err == "error: KeyError: 'model' (unexpected; rerun with --debug for the traceback)\n"
    assert run_main(lambda: 0, debug=False) == 0 and run_main(lambda: None, debug=False) == 0
    with pytest.raises(KeyError):
        run_main(bug, debug=True)


def test_an_unexpected_error_names_the_source_and_what_happened(capsys):
    """MemoryError and RecursionError carry no useful text of their own: the line says it in words,
    after the file the command was working on; an expected error's own message is left as it is."""
    debug = "(rerun with --debug for the traceback)"
    assert error_line(MemoryError(), "in.pkl") == f"error: in.pkl: out of memory {debug}"
    assert error_line(MemoryError("Unable to allocate 8.00 GiB"), "in.pkl") == (
        f"error: in.pkl: out of memory: Unable to allocate 8.00 GiB {debug}")
    assert error_line(RecursionError("maximum recursion depth exceeded"), "in.pkl") == (
        f"error: in.pkl: nested too deeply {debug}")
    assert error_line(KeyError("model"), "in.pkl") == f"error: in.pkl: KeyError: 'model' (unexpected; {debug[1:]}"
    assert error_line(MemoryError()) == f"error: out of memory {debug}"  # no source: nothing to name
    assert error_line(ValueError("in.pkl: sample 3: bad label"), "in.pkl") == "error: in.pkl: sample 3: bad label"

    def body():
        raise MemoryError

    assert run_main(body, debug=False, source="in.pkl") == EXIT_FAILURE
    assert capsys.readouterr().err == f"error: in.pkl: out of memory {debug}\n"


def test_error_line_is_cut_to_one_readable_line():
    line = error_line(ValueError("x" * 10_000 + "\n" + "y"))
    assert "\n" not in line and len(line) <= len("error: ") + 2000


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match=r"^--device: expected auto, cpu, cuda or cuda:N, found 'gpu'$"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match=r"^--device: expected auto, cpu, cuda or cuda:N, found 'meta'$"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^--device: 'cuda' requested but no CUDA device is available$"):
            resolve_device("cuda")
    else:
        with pytest.raises(ValueError, match=r"'cuda:99' requested but this machine has \d+ CUDA device"):
            resolve_device("cuda:99")


def test_refuse_overwrite(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.png"
    refuse_overwrite([a, b], overwrite=False)  # nothing there: fine
    a.write_text("keep")
    b.write_text("keep")
    with pytest.raises(ValueError, match=r"--out: '.*a.npz' \(and 1 more\) already exists: choose another --out, "
                                         r"or replace it with --overwrite"):
        refuse_overwrite([a, b], overwrite=False)
    refuse_overwrite([a, b], overwrite=True)
    with pytest.raises(ValueError, match="is a folder, expected a file name"):
        refuse_overwrite([tmp_path], overwrite=True)
    assert a.read_text() == "keep"  # refusing never touches the file
