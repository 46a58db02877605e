"""Issue 29: the benches that run for long say so on stderr (data.cli.phase lines: when a step starts and
its seconds when it ends) and keep stdout for their tables and ``wrote ...`` lines. The cheap script
benches here on the smallest inputs they take; the benches that need a trained run are checked in their
own tests (test_clinical, test_counterfactual, test_ood, test_waves, test_generation, test_task_gradients)."""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.progress import finished_phases

CASES = {  # bench module: (flags for a run of seconds, a step it must announce, a line of its table)
    "balancers": (["--strategies", "fixed", "--steps", "1", "--warmup", "0", "--batch", "2"],
                  "0 warm-up and 1 timed steps of every strategy, round robin", "strategy "),
    "s4d": (["--widths", "8", "--batch", "2", "--reps", "1"],
            "width 8: FFT, recurrence and attention, 1 timed calls each", "S4D conv, recurrence (2 scans)"),
    "loading": (["data.synthetic.patients=6", "training.batch_size=4", "--steps", "1", "--warmup", "0",
                 "--workers", "0"], "0 DataLoader workers: 0 warm-up and 1 timed steps", "loading share"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_script_bench_prints_progress_on_stderr_and_its_table_on_stdout(name, tmp_path, capsys):
    flags, step, table_line = CASES[name]
    out = tmp_path / f"{name}.json"
    threads = torch.get_num_threads()
    try:
        importlib.import_module(f"bench.{name}").main([*flags, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # the benches set their own (--threads): the other tests keep theirs
    printed = capsys.readouterr()
    assert step in finished_phases(printed.err, f"bench/{name}.py")
    assert table_line in printed.out and f"wrote {out}" in printed.out and out.is_file()
    assert f"bench/{name}.py:" not in printed.out
