"""Console entry points: each runs one of the project's CLIs (the same ``main`` as ``python train.py`` or
``python -m evaluation.predict``) from any working directory. Their names are in pyproject.toml."""

from __future__ import annotations

import importlib
import sys

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


def train() -> None:
    _run("abr-train")


def evaluate() -> None:
    _run("abr-evaluate")


def predict() -> None:
    _run("abr-predict")


def generate() -> None:
    _run("abr-generate")


def compare() -> None:
    _run("abr-compare")


def export() -> None:
    _run("abr-export")
