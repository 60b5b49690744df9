"""Acceptance: the real `clearml-agent` daemon runs an enqueued task to `completed` against the embedded server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def wait_for(predicate, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def test_clearml_agent_daemon_completes_task(client_env, server, raw, tmp_path):
    job = tmp_path / "job.py"
    job.write_text("import sys\nprint('hello from a task run by clearml-agent in', sys.prefix)\n")
    task_id = raw.new_task(
        "agent peer task",
        script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": job.read_text()},
    )
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})

    # The agent builds a real venv that sees this interpreter's packages (clearml among them), with no pip
    # upgrade and no package index, so nothing is downloaded.
    agent_conf = tmp_path / "agent.conf"
    agent_conf.write_text(
        server.config_file.read_text()
        + 'agent {\n  package_manager { system_site_packages: true, pip_version: "" }\n'
        + '  venvs_cache { path: "" }\n}\n'
    )
    env = {
        **client_env,
        "CLEARML_CONFIG_FILE": str(agent_conf),
        "CLEARML_WORKER_ID": "peer-host:cpu:0",
        "PIP_NO_INDEX": "1",
    }
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        [sys.executable, "-m", "clearml_agent", "daemon", "--queue", "default", "--foreground", "--cpu-only"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def finished():
            status = raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"]
            return status if status in ("completed", "failed", "stopped") else None

        status = wait_for(finished, timeout=180)
        workers = raw.ok("workers.get_all", {})["workers"]
    finally:
        os.killpg(agent.pid, signal.SIGINT)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(agent.pid, signal.SIGKILL)
        log.close()
    agent_log = (tmp_path / "agent.log").read_text()
    assert status == "completed", agent_log[-4000:]
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status_reason"] == "worker execution done"
    assert task["last_worker"] == "peer-host:cpu:0"
    assert any(w["id"] == "peer-host:cpu:0" for w in workers)
    lines = raw.ok("events.get_task_log", {"task": task_id, "batch_size": 1000, "order": "asc"})["events"]
    console = "\n".join(e["msg"] for e in lines)
    assert "hello from a task run by clearml-agent in" in console
    assert "venvs-builds" in console  # it ran inside the venv the agent built
    # Ctrl-C unregistered the worker.
    assert not any(w["id"] == "peer-host:cpu:0" for w in raw.ok("workers.get_all", {})["workers"])
