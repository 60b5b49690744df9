"""The bench's quick run (`python -m bench --quick`) completes and writes a JSON with both agents' numbers.

No timing assertions: the machine is shared, and the bench itself reports ratios, not pass/fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_env_build_writes_both_agents_numbers(tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env["TMPDIR"] = str(tmp_path)  # the bench's work folders land in pytest's tmp, not the shared /tmp
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scenario", "env_build", "--results-dir", str(results)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    (path,) = results.glob("env_build-*.json")
    data = json.loads(path.read_text())
    assert data["scenario"] == "env_build" and data["quick"] is True
    assert data["errors"] == []
    completed = [s for s in data["samples"] if s["status"] == "completed"]
    assert {(s["agent"], s["phase"]) for s in completed} == {
        (agent, phase) for agent in ("ours", "clearml-agent") for phase in ("cold", "warm")
    }
    totals = [row for row in data["summary"] if row["metric"] == "total_s"]
    assert {row["phase"] for row in totals} == {"cold", "warm"}
    for row in totals:
        assert row["ours"]["median"] is not None and row["clearml-agent"]["median"] is not None
    assert "| one_req" in done.stdout  # the printed table
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-")] == []  # work folders removed
    _check_ratios(data)


def _run_quick(tmp_path: Path, *scenarios: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`python -m bench --quick --scenario S...` with results and work folders in tmp_path: the run and the JSON of
    its first scenario, after checking it exited 0 and every scenario's JSON has no errors."""
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scenario", *scenarios, "--results-dir", str(results)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    found = []
    for scenario in scenarios:
        (path,) = results.glob(f"{scenario}-*.json")
        data = json.loads(path.read_text())
        assert data["scenario"] == scenario and data["quick"] is True
        assert data["errors"] == []
        found.append(data)
    return done, found[0]


def test_quick_pickup_and_end_to_end_share_one_warm_task_run(tmp_path: Path) -> None:
    """With --quick, the second of the two reports the samples the first measured (the same tasks)."""
    done, pickup = _run_quick(tmp_path, "pickup", "end_to_end")
    (path,) = (tmp_path / "results").glob("end_to_end-*.json")
    end_to_end = json.loads(path.read_text())
    for data in (pickup, end_to_end):
        assert {s["agent"] for s in data["samples"] if s["status"] == "completed"} == {"ours", "clearml-agent"}
        for row in data["summary"]:
            assert row["ours"]["median"] is not None and row["clearml-agent"]["median"] is not None
        assert data["settings"]["clearml_agent_poll_s"] == 1.0 and data["notes"]
        _check_ratios(data)
    assert "samples_from" not in pickup["settings"] and "samples_from" in end_to_end["settings"]
    assert [s["task_id"] for s in end_to_end["samples"]] == [s["task_id"] for s in pickup["samples"]]
    assert "## pickup " in done.stdout and "## end_to_end " in done.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-")] == []  # work folders removed


# Scenarios whose quick run is checked generically: it completes, and every row has both agents' medians.
QUICK_SCENARIOS = ["idle", "log_throughput"]


@pytest.mark.parametrize("scenario", QUICK_SCENARIOS)
def test_quick_scenario_writes_both_agents_numbers(tmp_path: Path, scenario: str) -> None:
    done, data = _run_quick(tmp_path, scenario)
    assert {s["agent"] for s in data["samples"] if s["status"] == "completed"} == {"ours", "clearml-agent"}
    assert data["summary"]
    for row in data["summary"]:
        assert row["ours"]["median"] is not None and row["clearml-agent"]["median"] is not None
    assert f"## {scenario} " in done.stdout  # the printed table
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-")] == []  # work folders removed
    _check_ratios(data)


def _check_ratios(data: dict) -> None:
    """Every summary row's ratio reads "above 1: ours is better": clearml-agent / ours where lower is better,
    ours / clearml-agent where higher is better (log_throughput's lines_per_s), 1.0 for equal medians."""
    assert data["metrics"] and all(
        spec["better"] in ("lower", "higher", "neither") for spec in data["metrics"].values()
    )
    for row in data["summary"]:
        assert row["better"] == data["metrics"][row["metric"]]["better"]
        ours, peer = row["ours"]["median"], row["clearml-agent"]["median"]
        if row["ratio"] is None:
            continue
        if ours == peer:
            assert row["ratio"] == 1.0
        else:
            expected = peer / ours if row["better"] == "lower" else ours / peer
            assert row["ratio"] == pytest.approx(expected), row
    if data["scenario"] == "log_throughput":
        (row,) = [row for row in data["summary"] if row["metric"] == "lines_per_s"]
        assert row["better"] == "higher"
        assert row["ratio"] == pytest.approx(row["ours"]["median"] / row["clearml-agent"]["median"])


def test_quick_server_scale_runs_both_agents(tmp_path: Path) -> None:
    """Part 1 is ours only (simulated workers); part 2 runs real daemons of both agents, also with --quick."""
    done, data = _run_quick(tmp_path, "server_scale")
    for metric in ("next_task_p99_ms", "pickup_p50_ms"):
        assert [row for row in data["summary"] if row["metric"] == metric and row["ours"]["median"] is not None]
    (row,) = [row for row in data["summary"] if row["metric"] == "tasks_per_min" and row["ours"]["n"]]
    assert row["ours"]["median"] is not None and row["clearml-agent"]["median"] is not None
    assert row["better"] == "higher" and row["ratio"] == pytest.approx(
        row["ours"]["median"] / row["clearml-agent"]["median"]
    )
    assert "## server_scale " in done.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-")] == []  # work folders removed
    _check_ratios(data)


# Ours-only quick runs (no clearml-agent counterpart): they complete with their metrics.
OURS_ONLY_QUICK = {"kernel_rtt": ("p50_ms", "p99_ms")}


@pytest.mark.parametrize("scenario", sorted(OURS_ONLY_QUICK))
def test_quick_ours_only_scenario_writes_its_numbers(tmp_path: Path, scenario: str) -> None:
    done, data = _run_quick(tmp_path, scenario)
    for metric in OURS_ONLY_QUICK[scenario]:
        assert [row for row in data["summary"] if row["metric"] == metric and row["ours"]["median"] is not None]
    assert f"## {scenario} " in done.stdout  # the printed table
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-")] == []  # work folders removed
