"""The reliability figures (`testing.reliability.record`) and report (`runs.reliability`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantlab.runs.reliability import ReliabilityReport, read_junit, read_rows
from quantlab.testing.reliability import ENV, record

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.reliability.test_a" name="test_ok" time="1.0"/>
<testcase classname="tests.reliability.test_a" name="test_bad" time="1.0">
  <failure message="assert 1 == 0">...</failure></testcase>
<testcase classname="tests.reliability.test_b" name="test_skip" time="0.0">
  <skipped message="no redis"/></testcase>
<testcase classname="tests.reliability.test_b" name="test_ok2" time="1.0"/>
</testsuite></testsuites>
"""


def rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    out = tmp_path / "rows.jsonl"
    monkeypatch.setenv(ENV, str(out))
    record("security", "canaries", trials=10, unit="files", leaked=0)
    record("faults", "kills", trials=20, unit="kills", lost=0, duplicated=0)
    record("bad input", "fuzz", trials=100, unit="inputs", failed=0, failed_what="crashes")
    return read_rows(out)


def test_rows_are_written_by_record_and_read_back_in_area_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = rows(tmp_path, monkeypatch)
    assert [r["area"] for r in got] == ["faults", "bad input", "security"]
    assert got[0]["lost"] == 0
    assert got[0]["leaked"] is None  # not what that check measures


def test_record_refuses_what_the_report_could_not_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ValueError, match="area 'faultz'"):
        record("faultz", "x", trials=1, unit="u")
    with pytest.raises(ValueError, match="lost must be a count"):
        record("faults", "x", trials=1, unit="u", lost=-1)
    with pytest.raises(ValueError, match="needs `failed_what`"):
        record("faults", "x", trials=1, unit="u", failed=0)
    assert record("faults", "x", trials=1, unit="u")["check"] == "x"  # no file: no write


def test_junit_outcomes_and_the_failed_ids(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    counts, failures = read_junit(path)
    assert counts == {"passed": 2, "failed": 1, "errors": 0, "skipped": 1}
    assert failures == [
        "tests.reliability.test_a::test_bad",
        "tests.reliability.test_b::test_skip (skipped)",
    ]


def test_the_report_passes_only_with_every_count_zero_and_every_test_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = rows(tmp_path, monkeypatch)
    tests = {"passed": 3, "failed": 0, "errors": 0, "skipped": 0}
    assert ReliabilityReport(good, tests, [], 1.0, 0).passed
    lost = [{**good[0], "lost": 1}, *good[1:]]
    assert not ReliabilityReport(lost, tests, [], 1.0, 0).passed
    assert not ReliabilityReport(good, {**tests, "skipped": 1}, [], 1.0, 0).passed
    assert not ReliabilityReport(good, tests, [], 1.0, 1).passed
    assert not ReliabilityReport([], tests, [], 1.0, 0).passed

    report = ReliabilityReport(lost, tests, [], 12.0, 0)
    md, js = report.write(tmp_path / "out")
    text = md.read_text()
    assert text.startswith("# Reliability report\n\n**FAILED**")
    assert "| kills | 20 kills | 1 | 0 | – |" in text
    assert "lost 1, duplicated 0, leaked 0, other failures 0" in text
    data = json.loads(js.read_text())
    assert data["passed"] is False
    assert data["totals"]["trials"] == {"files": 10, "inputs": 100, "kills": 20}
