"""Console texts: postfix order and width, step line, epoch summary, the 120-column budget."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tqdm import tqdm

from training.callbacks.console import BAR_FORMAT
from training.callbacks.format import (
    POSTFIX_WIDTH,
    fixed_width,
    format_epoch_summary,
    format_postfix,
    format_step_line,
)
from training.components import COMPONENTS

SEED_VALUES = {"total": 138.0073, "signal": 1.0295, "class": 1.9444, "peak_exist": 0.8308,
               "peak_latency": 2.8213, "peak_amplitude": 1.3438, "threshold": 130.4529}


@given(st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_fixed_width_is_always_the_same_width(x):
    assert len(fixed_width(x)) == POSTFIX_WIDTH


@pytest.mark.parametrize("x, text", [(1.0295, "1.030"), (0.8308, "0.831"), (13.8, "13.80"), (138.0073, "138.0"),
                                     (-1.0295, "-1.03"), (13800.0, "13800"), (1.38e6, "  1e6"),
                                     (-2.0e4, " -2e4"), (float("nan"), "  nan"),
                                     (-1e120, "-huge")])
def test_fixed_width_keeps_the_most_digits_that_fit(x, text):
    assert fixed_width(x) == text


@given(st.floats(min_value=-999.0, max_value=99999.0))
def test_fixed_width_is_close_to_the_value(x):
    # 3 decimals below 10 (2 for negatives: the sign takes one), then one fewer per digit
    assert abs(float(fixed_width(x)) - x) <= max(5e-3 * abs(x), 5e-4 if x >= 0 else 5e-3) + 1e-9


def test_postfix_has_the_contract_order_and_only_peak_exist():
    text = format_postfix(SEED_VALUES, 1e-4)
    assert text == "Total=138.0 | LR=1.00e-04 | Signal=1.030 | Class=1.944 | Peak=0.831 | Thresh=130.5"
    labels = [part.split("=")[0] for part in text.split(" | ")]
    assert labels == ["Total", "LR", "Signal", "Class", "Peak", "Thresh"]


@given(st.dictionaries(st.sampled_from(["total", *COMPONENTS]), st.floats(allow_nan=True, width=32),
                       min_size=7, max_size=7), st.floats(min_value=1e-12, max_value=1))
def test_postfix_length_does_not_depend_on_the_values(values, lr):
    assert len(format_postfix(values, lr)) == len(format_postfix(SEED_VALUES, 1e-4))


def test_step_line_matches_the_seed_format():
    assert format_step_line(100, SEED_VALUES) == (
        "Step 100 - Total: 138.0073, Signal: 1.0295, Class: 1.9444, Peak: 0.8308, PeakLat: 2.8213, "
        "PeakAmp: 1.3438, Thresh: 130.4529"
    )


def test_epoch_summary_block():
    summary = {f"train/{k}": v for k, v in SEED_VALUES.items()}
    summary.update({"val/total": 124.2066, "val/signal": 0.9266, "lr": 1e-4, "train/weighted": 1.0})
    text = format_epoch_summary(1, 200, summary)
    lines = text.split("\n")
    assert lines[0] == "Epoch 1/200 Summary:"
    assert lines[1] == "  Train - " + format_step_line(0, SEED_VALUES).split(" - ", 1)[1]
    assert lines[2] == "  Val   - Total: 124.2066, Signal: 0.9266"
    assert lines[3] == "  LR: 1.00e-04"
    assert "Val" not in format_epoch_summary(1, 200, {"train/total": 1.0, "lr": 1e-4})


@pytest.mark.parametrize("epoch, max_epochs, n, total, elapsed",
                         [(1, 10, 3, 50, 5.0), (200, 200, 1139, 1140, 3600.0 * 9), (1, 200, 215, 1140, 2258.0),
                          (200, 200, 1139, 1140, 1139 * 35309.0)])  # the last: an ETA of 9:48:29
def test_bar_fits_120_columns_with_the_whole_postfix(epoch, max_epochs, n, total, elapsed):
    """119: the width tqdm draws into on a 120-column terminal (it leaves the last column free)."""
    worst = {k: -12345.6 for k in SEED_VALUES}  # widest numbers: negative and large
    postfix = format_postfix(worst, 1.2345e-4)
    line = tqdm.format_meter(n, total, elapsed, ncols=119, prefix=f"Epoch {epoch}/{max_epochs}",
                             bar_format=BAR_FORMAT, postfix=postfix)
    assert len(line) <= 119
    assert line.endswith(postfix)  # nothing trimmed: Thresh is visible
    assert re.search(r"\|.+\|", line)  # a bar is still drawn


def test_live_bar_shows_postfix_in_order_not_sorted():
    buf = io.StringIO()
    bar = tqdm(total=10, desc="Epoch 1/3", bar_format=BAR_FORMAT, file=buf, ncols=120)
    bar.set_postfix_str(format_postfix(SEED_VALUES, 1e-4))
    bar.update(5)
    bar.close()
    last = buf.getvalue().split("\r")[-1]
    assert "Total=138.0 | LR=1.00e-04 | Signal=1.030 | Class=1.944 | Peak=0.831 | Thresh=130.5" in last
