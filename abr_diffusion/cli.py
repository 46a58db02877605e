"""Console entry points: each runs one of the project's CLIs (the same ``main`` as ``python train.py`` or
``python -m evaluation.predict``) from any working directory. Their names are in pyproject.toml."""

from __future__ import annotations

import importlib
import sys
from functools import partial

import abr_diffusion  # noqa: F401  (puts the repository root on sys.path)

TOOLS = {  # console script -> the module whose main(argv) it runs
    "abr-train": "train",
    "abr-evaluate": "evaluation.evaluate",
    "abr-predict": "evaluation.predict",
    "abr-generate": "evaluation.generate",
    "abr-compare": "evaluation.compare",
    "abr-export": "evaluation.export",
}


def _run(script: str) -> None:
    sys.exit(importlib.import_module(TOOLS[script]).main(sys.argv[1:]))


# The console scripts' targets (pyproject.toml [project.scripts]); each is called with no argument.
train = partial(_run, "abr-train")
evaluate = partial(_run, "abr-evaluate")
predict = partial(_run, "abr-predict")
generate = partial(_run, "abr-generate")
compare = partial(_run, "abr-compare")
export = partial(_run, "abr-export")
