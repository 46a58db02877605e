"""The project's command-line tools and ``load_exported`` from any directory (issue 29).

The code folders (models/, data/, training/, evaluation/) are imported from the repository root and
are never installed into site-packages (their names are too generic). ``run.py`` installs this one
small package in editable mode into ``.venv`` (console entry points ``abr-train``, ``abr-evaluate``,
``abr-predict``, ``abr-generate``, ``abr-compare``, ``abr-export``); importing it puts the repository
root on ``sys.path``, so the tools and ``load_exported`` work with any working directory. Relative
paths on the command line are read from the working directory, as any tool would.

    source .venv/bin/activate            # once per shell (or call .venv/bin/abr-predict directly)
    abr-predict --run ~/abr/logs/clinical recordings.csv --out predictions/

    from abr_diffusion import load_exported
    model, cfg, stats = load_exported("exports/clinical")
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the repository this package was installed from
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_exported(export_dir: str | Path, device: Any = "cpu") -> Any:
    """(model in eval mode, config, stats) from an export folder: evaluation.export.load_exported."""
    from evaluation.export import load_exported as load

    return load(export_dir, device)
