"""`Agent`, the Python API of the notebook face: start returns at once, tasks run in the background, status,
logs and the HTML card tell what happened, stop unregisters."""

from __future__ import annotations

import threading
import time

import pytest

from notebook_agent.engine.events import TaskPhase, WorkerState
from notebook_agent.notebook.agent import Agent, AgentError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _wait(predicate, timeout: float = 60.0):
    ticker = threading.Event()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        ticker.wait(0.05)
    raise AssertionError("condition not met in time")


def _enqueue(raw, name: str, source: str) -> str:
    task_id = raw.new_task(
        name, script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": source}
    )
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})
    return task_id


def test_agent_runs_tasks_in_the_background(raw, agent_config, agent_env, tmp_path):
    agent = Agent(["default"], config=agent_config, env=agent_env, state_dir=tmp_path / "state")
    with pytest.raises(AgentError, match="not started"):
        agent.pause()
    started = time.monotonic()
    agent.start()
    assert time.monotonic() - started < 1.0  # never blocks the kernel
    try:
        with pytest.raises(AgentError, match="already running"):
            agent.start()
        task_id = _enqueue(raw, "from the api", "print('hello from the notebook agent')\n")
        done = _wait(lambda: (t := agent.snapshot().task(task_id)) and t.phase.final and t, timeout=120)
        assert done.phase == TaskPhase.COMPLETED, done.reason
        assert raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "completed"
        assert "hello from the notebook agent" in agent.logs(task_id[:8])
        status = agent.status()
        assert agent.worker_id in status and task_id[:8] in status and "completed" in status
        card = agent._repr_html_()
        assert "notebook-agent-card" in card and task_id[:8] in card
        workers = raw.ok("workers.get_all", {})["workers"]
        assert any(w["id"] == agent.worker_id for w in workers)
        _wait(lambda: agent.snapshot().cpu)  # the panel's own machine samples arrive
    finally:
        agent.stop()
    assert agent.snapshot().state == WorkerState.OFFLINE
    assert not any(w["id"] == agent.worker_id for w in raw.ok("workers.get_all", {})["workers"])
    secret = agent_config.api.credentials.secret_key
    assert secret not in agent.config_text() and "secret_key" in agent.config_text()
