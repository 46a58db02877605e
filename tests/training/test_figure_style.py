"""training/figure_style.py: the condition wording every figure uses."""

from __future__ import annotations

import pytest

from training.figure_style import DPI, PAPER_RC, format_age, format_condition


@pytest.mark.parametrize(("years", "text"), [(0.25, "3 mo"), (0.0, "< 1 y"), (0.02, "< 1 y"), (34.0, "34 y"),
                                             (2.5, "2.5 y")])
def test_age_is_written_as_a_clinician_writes_it(years, text):
    assert format_age(years) == text


def test_condition_names_intensity_rate_age_and_fmp():
    assert format_condition([0.0, 70.0, 21.1, 300.4]) == "70 dB nHL, 21.1/s, age < 1 y, FMP 300"


def test_paper_settings_save_at_the_stated_dpi():
    assert PAPER_RC["savefig.dpi"] == DPI == 200 and PAPER_RC["font.size"] == 8
