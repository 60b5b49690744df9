"""The bench's ratio (bench/report.py): above 1 always means ours is better, whichever way a metric goes."""

from __future__ import annotations

import pytest

from bench.report import (
    HIGHER,
    LOWER,
    NEITHER,
    Metric,
    Row,
    format_table,
    higher,
    lower,
    ratio,
    ratio_text,
    rows_from_samples,
)


def test_lower_is_better_divides_clearml_agent_by_ours() -> None:
    assert ratio(ours=2.0, peer=6.0, better=LOWER) == pytest.approx(3.0)  # ours takes a third of the time
    assert ratio(ours=6.0, peer=2.0, better=LOWER) == pytest.approx(1 / 3)  # ours is slower
    assert ratio_text(2.0, 6.0, LOWER) == "3.0x"
    assert ratio_text(6.0, 2.0, LOWER) == "0.33x"


def test_higher_is_better_divides_ours_by_clearml_agent() -> None:
    # log_throughput's lines_per_s as the user saw it: 307,692 vs 12,523 lines/s printed "0.0x".
    assert ratio(ours=307692.0, peer=12523.0, better=HIGHER) == pytest.approx(24.57, rel=1e-3)
    assert ratio(ours=1000.0, peer=4000.0, better=HIGHER) == pytest.approx(0.25)
    assert ratio_text(307692.0, 12523.0, HIGHER) == "24.6x"
    assert ratio_text(1000.0, 4000.0, HIGHER) == "0.25x"
    assert ratio_text(150000.0, 1000.0, HIGHER) == "150x"


def test_zero_values() -> None:
    for better in (LOWER, HIGHER):
        assert ratio(0.0, 0.0, better) == 1.0  # 0 lost lines each: equal
        assert ratio_text(0.0, 0.0, better) == "="
        assert ratio(0.0, 42.0, better) is None  # no finite ratio on one side's 0
        assert ratio(42.0, 0.0, better) is None
        assert ratio_text(0.0, 42.0, better) == "-"
        assert ratio_text(42.0, 0.0, better) == "-"
    assert ratio_text(3.0, 3.0, LOWER) == "="


def test_no_ratio_without_both_values_a_direction_or_for_differences() -> None:
    assert ratio(None, 2.0) is None and ratio_text(None, 2.0) == "n/a"
    assert ratio(2.0, None) is None and ratio_text(2.0, None) == "n/a"
    assert ratio(2.0, 4.0, NEITHER) is None and ratio_text(2.0, 4.0, NEITHER) == "n/a"
    assert ratio(-3.0, 5.0, LOWER) is None  # kernel_rtt's `added` rows are differences


def test_metric_direction_is_declared_once_and_reaches_rows_json_and_table() -> None:
    metrics = {"ship_s": lower("first line -> last line stored"), "lines_per_s": higher("N / ship_s")}
    samples = [
        {"agent": "ours", "case": "c", "phase": "p", "status": "completed", "ship_s": 0.5, "lines_per_s": 40000.0},
        {"agent": "clearml-agent", "case": "c", "phase": "p", "status": "completed", "ship_s": 2.0, "lines_per_s": 1e4},
    ]
    rows = rows_from_samples(samples, metrics)
    assert [(row.metric, row.better, row.ratio) for row in rows] == [
        ("ship_s", LOWER, 4.0),
        ("lines_per_s", HIGHER, 4.0),
    ]
    as_json = rows[1].as_dict()
    assert as_json["better"] == HIGHER and as_json["ratio"] == 4.0
    table = format_table(rows)
    assert "| ship_s      |" in table and table.count("| 4.0x") == 2 and "0.0x" not in table


def test_table_leaves_out_rows_without_values_and_metric_rejects_unknown_direction() -> None:
    empty = Row("c", "p", "tasks_per_min", [], [], HIGHER)
    only_ours = Row("c", "p", "p99_ms", [3.0], [], LOWER)
    table = format_table([empty, only_ours])
    assert "tasks_per_min" not in table and "p99_ms" in table
    with pytest.raises(ValueError):
        Metric("x", better="bigger")
