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
        task_id = agent.submit("print('hello from the notebook agent')\n", name="from the api")
        (done,) = agent.wait(task_id, timeout=120)
        assert done.phase == TaskPhase.COMPLETED, done.reason
        stored = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
        assert stored["status"] == "completed" and stored["name"] == "from the api"
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
