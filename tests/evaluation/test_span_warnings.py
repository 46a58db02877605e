"""generate and export say when a condition lies outside the run's training span (issue 27, point 5)."""

from __future__ import annotations

from data.stats import DataStats
from evaluation.export import span_sentence


def stats(span: bool = True) -> DataStats:
    s = DataStats.identity()
    if span:
        s.static_min, s.static_max = [0.0, 0.0, 11.1, 0.2], [7.5, 100.0, 49.1, 123.0]
    return s


def test_one_line_per_value_outside_the_span():
    lines = stats().outside_span({"age": 0.5, "intensity": 120.0, "rate": 21.1, "fmp": 300.0})
    assert len(lines) == 2
    assert lines[0].startswith("intensity 120 dB nHL lies outside the run's training span 0 to 100")
    assert lines[1].startswith("fmp 300 ratio lies outside the run's training span 0.2 to 123")
    assert stats().outside_span({"age": 0.5, "intensity": 80.0, "rate": 21.1, "fmp": 100.0}) == []


def test_a_run_without_a_span_says_it_cannot_check():
    lines = stats(span=False).outside_span({"intensity": 80.0})
    assert len(lines) == 1 and "records no training span" in lines[0]


def test_model_card_quotes_the_runs_own_ranges():
    text = span_sentence(stats())
    assert "intensity 0-100 dB nHL" in text and "fmp 0.2-123" in text and "1515" not in text
    assert "does not record them" in span_sentence(stats(span=False))
