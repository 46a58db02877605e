"""Run a Python command inside the project's own virtual environment, creating it first.

    python run.py train.py --config configs/quickstart.yaml --experiment quickstart
    python run.py -m pytest

The environment is `.venv/` at the repository root, built from `requirements.txt` (the one place
where versions are pinned) and rebuilt when that file changes. Torch: when the interpreter running
this script already has a CUDA build of torch >= 2.4, the venv is created with access to it and
the `torch==` pin is skipped, so a GPU machine keeps its own build; otherwise torch 2.13.0 (the CPU
build on a CPU machine) is installed into the venv. The project's own small package abr_diffusion/
is then installed in editable mode (no download: the venv's setuptools builds it), which puts the
console entry points abr-train, abr-predict, ... into .venv/bin (README, "From any directory").
Only the standard library is used here.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
REQUIREMENTS = ROOT / "requirements.txt"
STAMP = VENV / ".requirements.sha256"
ENTRY_POINT = "abr-train"  # one of pyproject.toml's [project.scripts]: present once abr_diffusion is installed


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _host_cuda_torch() -> str | None:
    """The version of a CUDA torch >= 2.4 importable by this interpreter, else None."""
    probe = (
        "import torch, sys; v = torch.__version__.split('+')[0].split('.');"
        "ok = torch.version.cuda is not None and (int(v[0]), int(v[1])) >= (2, 4);"
        "print(torch.__version__ if ok else '')"
    )
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _requirements(skip_torch: bool) -> list[str]:
    lines = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not (skip_torch and line.lower().startswith("torch==")):
            lines.append(line)
    return lines


def _install_entry_points(python: Path) -> None:
    """abr_diffusion/ in editable mode (its console scripts), built offline by the venv's setuptools."""
    if (python.parent / ENTRY_POINT).exists():
        return
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
                    "--no-build-isolation", "-e", str(ROOT)], check=True)


def ensure_venv() -> Path:
    host_torch = _host_cuda_torch()
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + str(host_torch).encode()).hexdigest()
    python = _venv_python()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == digest:
        _install_entry_points(python)
        return python
    print(f"[run.py] preparing {VENV.name}/ from {REQUIREMENTS.name}"
          + (f" (keeping this machine's CUDA torch {host_torch})" if host_torch else ""), flush=True)
    venv.EnvBuilder(with_pip=True, system_site_packages=bool(host_torch), clear=python.exists()).create(VENV)
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*cmd, *_requirements(skip_torch=bool(host_torch))], check=True)
    _install_entry_points(python)
    STAMP.write_text(digest)
    return python


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    python = ensure_venv()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.call([str(python), *argv], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
