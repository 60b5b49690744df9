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


def _run_quick(tmp_path: Path, scenario: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`python -m bench --quick --scenario S` with results and work folders in tmp_path: the run and its JSON,
    after checking it exited 0 with no errors."""
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scenario", scenario, "--results-dir", str(results)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (path,) = results.glob(f"{scenario}-*.json")
    data = json.loads(path.read_text())
    assert data["scenario"] == scenario and data["quick"] is True
    assert data["errors"] == []
    return done, data


# Scenarios whose quick run is checked generically: it completes, and every row has both agents' medians.
QUICK_SCENARIOS = ["pickup", "end_to_end", "idle", "log_throughput"]


@pytest.mark.parametrize("scenario", QUICK_SCENARIOS)
def test_quick_scenario_writes_both_agents_numbers(tmp_path: Path, scenario: str) -> None:
    done, data = _run_quick(tmp_path, scenario)
    assert {s["agent"] for s in data["samples"] if s["status"] == "completed"} == {"ours", "clearml-agent"}
    assert data["summary"]
    for row in data["summary"]:
        assert row["ours"]["median"] is not None and row["clearml-agent"]["median"] is not None
    assert f"## {scenario} " in done.stdout  # the printed table
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-")] == []  # work folders removed


# Ours-only quick runs (no clearml-agent counterpart, or none in quick mode): they complete with their metrics.
OURS_ONLY_QUICK = {"kernel_rtt": ("p50_ms", "p99_ms"), "server_scale": ("next_task_p99_ms", "tasks_per_min")}


@pytest.mark.parametrize("scenario", sorted(OURS_ONLY_QUICK))
def test_quick_ours_only_scenario_writes_its_numbers(tmp_path: Path, scenario: str) -> None:
    done, data = _run_quick(tmp_path, scenario)
    for metric in OURS_ONLY_QUICK[scenario]:
        assert [row for row in data["summary"] if row["metric"] == metric and row["ours"]["median"] is not None]
    assert f"## {scenario} " in done.stdout  # the printed table
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-")] == []  # work folders removed
