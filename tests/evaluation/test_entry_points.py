"""The CLIs and load_exported from any directory after the install step (issue 29, point 5): run.py
installs abr_diffusion/ in editable mode into the venv, whose console scripts run the tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from abr_diffusion.cli import TOOLS

BIN = Path(sys.executable).parent  # the venv's bin/ (the suite runs under .venv/bin/python)


def _tool(name: str) -> Path:
    path = BIN / name
    assert path.exists(), f"{path}: missing; `python3 run.py -c pass` installs the console entry points"
    return path


def test_pyproject_names_every_tool_and_only_the_small_package():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    assert set(project["project"]["scripts"]) == set(TOOLS)
    assert project["tool"]["setuptools"]["packages"] == ["abr_diffusion"]  # data/, models/... stay uninstalled


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_tool_answers_from_another_directory(name, tmp_path):
    out = subprocess.run([str(_tool(name)), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-2000:]


def test_export_and_load_exported_from_another_directory(tiny_run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([str(_tool("abr-export")), "--run", str(tiny_run), "--out", "exported"], cwd=elsewhere,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (elsewhere / "exported").is_dir()  # the relative --out is read from the working directory
    code = ("from abr_diffusion import load_exported; model, cfg, stats = load_exported('exported'); "
            "print(type(model).__name__, cfg.model.base_channels)")
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=300,
                         env={"PATH": str(BIN)})  # no PYTHONPATH: the installed package finds the repository
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [out.stdout.split()[0], "4"]


def test_a_bad_flag_is_one_line_from_the_console_script(tmp_path):
    out = subprocess.run([str(_tool("abr-predict")), "--run", str(tmp_path / "missing"), "x.csv", "--out", "o"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "x.csv" in out.stderr  # relative to the working directory
