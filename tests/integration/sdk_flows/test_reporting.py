"""Reporting from an agent-run task, read back from another process: `Logger.report_scalar` through
`get_reported_scalars()` and `get_last_scalar_metrics()`, `Logger.report_text` through
`get_reported_console_output()`.

The reports come from the execute_remotely task of a folder with no repository (test_execute_remotely), which
reports three `loss/train` points and a text line once it runs under the agent, then polls the server for its own
scalars while it still runs (`LIVE`).
"""

from __future__ import annotations

import json

import pytest

from tests.integration.sdk_flows.conftest import values
from tests.integration.sdk_flows.test_execute_remotely import remote_task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

READ = """
import json, sys
from clearml import Task
task = Task.get_task(task_id=sys.argv[1])
print("SCALARS", json.dumps(task.get_reported_scalars()))
print("LAST", json.dumps(task.get_last_scalar_metrics()))
print("CONSOLE", json.dumps(task.get_reported_console_output(number_of_reports=1000)))
"""


def read_back(agent, tmp_path) -> tuple[dict, dict, list[str]]:
    task_id = remote_task(agent, tmp_path, "folder")
    out = agent.sdk(READ, task_id, cwd=tmp_path)
    return tuple(json.loads(values(out, key)[0]) for key in ("SCALARS", "LAST", "CONSOLE"))


@pytest.mark.flow("`report_scalar` read back (`get_reported_scalars`, `get_last_scalar_metrics`)")
def test_report_scalar_read_back(agent, tmp_path):
    scalars, last, _ = read_back(agent, tmp_path)
    series = scalars["loss"]["train"]
    assert series["x"] == [0, 1, 2], scalars
    assert series["y"] == pytest.approx([1.0, 0.5, 1 / 3]), scalars
    train = last["loss"]["train"]
    assert train["last"] == pytest.approx(1 / 3) and train["min"] == pytest.approx(1 / 3), last
    assert train["max"] == pytest.approx(1.0), last


@pytest.mark.flow("`report_text` read back")
def test_report_text_read_back(agent, tmp_path):
    *_, console = read_back(agent, tmp_path)
    assert any("TEXT a line sent with report_text" in report for report in console), console[-20:]


@pytest.mark.flow("scalars reach the server while the task runs")
def test_report_scalar_arrives_while_running(agent, tmp_path):
    """The reports reach the server while the task runs (the SDK's reporter thread), not only at its exit."""
    log = agent.log(remote_task(agent, tmp_path, "folder"))
    assert values(log, "LIVE") == ["True"], log[-3000:]
