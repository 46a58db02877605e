"""The progress lines of ``data.cli.phase`` read back from a command's stderr, for the tests of the
commands that print them: ``from tests.progress import finished_phases``."""

from __future__ import annotations

import re


def finished_phases(err: str, prog: str) -> dict[str, float]:
    """{step: seconds} of every step ``prog`` announced on ``err`` (``PROG: step ...`` when it started),
    each of which must also have ended (``PROG: step: 1.2 s``); at least one step."""
    started = re.findall(rf"^{re.escape(prog)}: (.+) \.\.\.$", err, flags=re.M)
    ended = {step: float(s) for step, s in re.findall(rf"^{re.escape(prog)}: (.+): (\d+\.\d) s$", err, flags=re.M)}
    tail = err[-3000:]  # stderr may hold a whole training run's console before the command's own lines
    assert started, f"no progress line of {prog} on stderr, which ends:\n{tail}"
    assert set(started) == set(ended), f"steps started but not ended (or the reverse) on stderr, which ends:\n{tail}"
    return ended
