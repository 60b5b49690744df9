"""Acceptance: `daemon --detached` returns at once with the daemon in the background; `daemon --stop` ends it, and
the task it was running is reported `stopped` with a reason (never `completed`, unlike clearml-agent#188)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notebook_agent.cli.detach import STOP_REASON
from tests.integration.engine.conftest import wait_for
from tests.integration.engine.test_cli_commands import cli
from tests.integration.engine.test_run_tasks import script_task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def env(client_env, agent_env):
    env = {**agent_env, **{k: v for k, v in client_env.items() if k.startswith("CLEARML_")}}
    yield env
    cli(env, "daemon", "--stop", timeout=60)  # a failed test must not leave a daemon behind


def test_detached_daemon_runs_in_the_background_and_stop_reports_its_task_stopped(env, raw):
    queue = raw.default_queue()
    task_id = script_task(raw, "long task", "import time\nprint('working', flush=True)\ntime.sleep(120)\n", queue)
    started = cli(env, "daemon", "--detached", "--abort-grace-sec", "2", timeout=30)
    assert started.returncode == 0, started.stderr
    assert "running in the background" in started.stdout
    pid_files = list((Path(env["HOME"]) / ".notebook_agent" / "daemons").glob("*.json"))
    assert len(pid_files) == 1
    pid = json.loads(pid_files[0].read_text())["pid"]
    assert Path(f"/proc/{pid}").exists()
    wait_for(lambda: raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "in_progress", timeout=120)

    stopped = cli(env, "daemon", "--stop", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped notebook-agent daemon (pid {pid})" in stopped.stdout
    assert not pid_files[0].exists()
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "stopped"
    assert task["status_reason"] == STOP_REASON
    assert raw.ok("workers.get_all")["workers"] == []  # it unregistered on the way out

    again = cli(env, "daemon", "--stop", timeout=30)
    assert (again.returncode, again.stdout.strip()) == (0, "no detached notebook-agent daemon is running")
