"""bench/common.py: one way to time calls, to write a result and a bench's own section of a shared Markdown file."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from bench.common import timed, write_doc_section, write_result


def test_timed_runs_warmup_untimed_then_times_each_call_between_syncs():
    events: list[str] = []
    ticks = itertools.count()
    times = timed(lambda: events.append("call"), 3, warmup=2, clock=lambda: float(next(ticks)) ** 2,
                  sync=lambda: events.append("sync"))
    assert events == ["call"] * 2 + ["sync", "call", "sync"] * 3
    assert times == [1.0, 5.0, 9.0]  # clock 0 -> 1, 4 -> 9, 16 -> 25


def test_write_result_is_strict_json(tmp_path, capsys):
    path = write_result(tmp_path / "deep" / "r.json", {"ms": [1.5, math.nan], "n": 3})
    assert json.loads(path.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) == {
        "ms": [1.5, None], "n": 3}
    assert capsys.readouterr().out == f"wrote {path}\n"


def test_write_doc_section_appends_then_replaces_only_its_section(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nA\n", encoding="utf-8")
    write_doc_section(doc, "gen", "## Gen\n\nfirst\n")
    assert doc.read_text(encoding="utf-8") == ("# Results\n\nA\n\n<!-- gen: begin -->\n## Gen\n\nfirst\n"
                                               "<!-- gen: end -->\n")
    doc.write_text(doc.read_text(encoding="utf-8") + "\n## Later section\n\nB\n", encoding="utf-8")
    write_doc_section(doc, "gen", "## Gen\n\nsecond")
    assert doc.read_text(encoding="utf-8") == ("# Results\n\nA\n\n<!-- gen: begin -->\n## Gen\n\nsecond\n"
                                               "<!-- gen: end -->\n\n## Later section\n\nB\n")
    write_doc_section(doc, "other", "x")  # another key: its own section, this one untouched
    assert doc.read_text(encoding="utf-8").count("second") == 1


def test_write_doc_section_creates_a_missing_file(tmp_path):
    doc = tmp_path / "new" / "results.md"
    write_doc_section(doc, "gen", "body")
    assert doc.read_text(encoding="utf-8") == "<!-- gen: begin -->\nbody\n<!-- gen: end -->\n"


@pytest.mark.parametrize("text, found", [("<!-- gen: begin -->\nx\n", "1 and 0"),
                                         ("<!-- gen: end -->\n<!-- gen: begin -->\n", "1 and 1"),
                                         ("<!-- gen: begin -->\n<!-- gen: end -->\n<!-- gen: end -->\n", "1 and 2")])
def test_write_doc_section_refuses_broken_markers(tmp_path, text, found):
    doc = tmp_path / "results.md"
    doc.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"expected the markers '<!-- gen: begin -->' and '<!-- gen: end -->' once "
                                         rf"each, in that order, found {found}"):
        write_doc_section(doc, "gen", "body")
    assert doc.read_text(encoding="utf-8") == text  # nothing written


def test_doc_sections_leave_out_the_machines_absolute_paths(tmp_path):
    from bench.common import ROOT, write_doc_section

    doc = tmp_path / "results.md"
    write_doc_section(doc, "k", f"Command: `python bench/generation.py --run {ROOT}/logs/clinical`\n"
                                f"### /elsewhere/checkout/logs/q16/s0/quality_fixed (fixed)\n")
    text = doc.read_text(encoding="utf-8")
    assert "--run logs/clinical`" in text and "### logs/q16/s0/quality_fixed (fixed)" in text
    assert str(ROOT) not in text and "/elsewhere" not in text


def test_the_results_doc_prints_no_absolute_path():
    import re

    from bench.common import ROOT

    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert re.findall(r"(?<![\w.~])/(?:work|home|tmp|root|Users|mnt|data)/[^\s`]*", text) == []
