"""The kernel dies while a task runs: a python process standing in for the kernel runs a Worker with a state dir
and is SIGKILLed mid-task. The task lives on in its own session; the next load's reap (as the next kernel runs it)
ends its tree and reports it `stopped` with the reason, and its log is on the server exactly once: the lines the
dead agent had shipped, and those it had only spooled to disk while the server was away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import notebook_agent
from notebook_agent.config import load_config
from notebook_agent.engine import task_registry
from notebook_agent.engine.log_spool import spool_path
from notebook_agent.engine.task_registry import AGENT_OWNER, leftover_reason
from tests.reliability.harness import Fault, FaultProxy, any_alive, task_log_lines, task_status, wait_until

REPO_ROOT = str(Path(notebook_agent.__file__).resolve().parents[1])  # the agent, importable from anywhere
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, process groups and sessions"),
]

KERNEL = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from notebook_agent.config import load_config
    from notebook_agent.engine.worker import Worker, WorkerOptions
    conf, queue, state_dir = sys.argv[1:4]
    options = WorkerOptions(queues=[queue], state_dir=Path(state_dir), grace_sec=1.0, poll_sec=0.1)
    Worker(load_config(Path(conf)), options).run()
    """
)
# Prints, waits for the test's go, prints again, then only sleeps: once its kernel is dead nobody reads its pipes,
# and a print would end it (EPIPE) before the reap could.
TASK = """
import os, subprocess, sys, time
from pathlib import Path
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("PIDS", os.getpid(), child.pid, flush=True)
for i in range(5):
    print(f"shipped {{i}}", flush=True)
while not Path({go!r}).exists():
    time.sleep(0.05)
for i in range(5):
    print(f"spooled {{i}}", flush=True)
time.sleep(300)
"""


@pytest.fixture
def proxy(server) -> Iterator[FaultProxy]:
    with FaultProxy(server.port) as proxy:
        yield proxy


def _kernel_conf(server, tmp_path: Path, api_server: str) -> Path:
    text = server.config_file.read_text().replace(f'api_server: "{server.url}"', f'api_server: "{api_server}"')
    conf = tmp_path / "kernel.conf"
    conf.write_text(
        text
        + "agent {\n  package_manager { system_site_packages: true }\n"
        + f'  venvs_cache {{ path: "{tmp_path / "venvs-cache"}" }}\n}}\n'
    )
    return conf


class Kernel:
    """The stand-in kernel: its own process group, as Jupyter starts a kernel (a restart kills that group)."""

    def __init__(self, env: dict[str, str], conf: Path, queue: str, state_dir: Path, log: Path) -> None:
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", KERNEL, str(conf), queue, str(state_dir)],
            env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()


def _run_until_killed(server, raw, proxy, agent_env, tmp_path, *, server_away: bool) -> tuple[str, list[int], Path]:
    """Start the kernel, let its task ship its first lines (and, with `server_away`, spool the next ones while the
    proxy refuses every connection), kill the kernel; the task id, its pids, the state dir."""
    state_dir = tmp_path / "state"
    go = tmp_path / "go"
    script = TASK.format(go=str(go))
    task_id = raw.new_task(
        "outlives its kernel", script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": script}
    )
    queue = raw.default_queue()
    raw.ok("tasks.enqueue", {"task": task_id, "queue": queue})
    kernel = Kernel(agent_env, _kernel_conf(server, tmp_path, proxy.url), queue, state_dir, tmp_path / "kernel.log")
    try:
        wait_until(lambda: "shipped 4" in task_log_lines(raw, task_id), 60, what="the first lines on the server")
        pids = next([int(p) for p in line.split()[1:]] for line in task_log_lines(raw, task_id) if "PIDS" in line)
        if server_away:
            proxy.set(Fault.RESET)
            go.touch()
            spool = spool_path(state_dir, task_id)
            wait_until(lambda: spool.exists() and "spooled 4" in spool.read_text(), 30, what="the spooled lines")
        assert task_status(raw, task_id) == "in_progress"
    finally:
        kernel.kill()
    assert any_alive(pids) == pids  # the task is in its own session: the kernel's death did not reach it
    proxy.heal()
    return task_id, pids, state_dir


def _reap(server, tmp_path: Path, state_dir: Path, proxy: FaultProxy) -> list:
    config = load_config(_kernel_conf(server, tmp_path, proxy.url), env={})
    return task_registry.reap(state_dir, task_registry.session_factory([config.api]), grace=1.0)


def test_the_next_load_reaps_a_task_whose_kernel_was_killed(server, raw, proxy, agent_env, tmp_path):
    task_id, pids, state_dir = _run_until_killed(server, raw, proxy, agent_env, tmp_path, server_away=False)
    reaped = [r for r in _reap(server, tmp_path, state_dir, proxy) if isinstance(r, task_registry.Reaped)]
    assert [(r.task_id, r.process, r.server) for r in reaped] == [(task_id, "stopped", "stopped")]
    assert not any_alive(pids)
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert (task["status"], task["status_reason"]) == ("stopped", leftover_reason(AGENT_OWNER, "stopped"))
    lines = task_log_lines(raw, task_id)
    assert [line for line in lines if line.startswith(("PIDS", "shipped"))] == [
        next(line for line in lines if line.startswith("PIDS")),
        *(f"shipped {i}" for i in range(5)),
    ]
    assert not list((state_dir / task_registry.RUNNING_DIR).glob("*.json"))  # nothing left for a later load


def test_lines_spooled_while_the_server_was_away_arrive_once_after_the_reap(server, raw, proxy, agent_env, tmp_path):
    task_id, pids, state_dir = _run_until_killed(server, raw, proxy, agent_env, tmp_path, server_away=True)
    _reap(server, tmp_path, state_dir, proxy)
    assert not any_alive(pids)
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert (task["status"], task["status_reason"]) == ("stopped", leftover_reason(AGENT_OWNER, "stopped"))
    lines = [line for line in task_log_lines(raw, task_id) if line.startswith(("shipped", "spooled"))]
    assert lines == [*(f"shipped {i}" for i in range(5)), *(f"spooled {i}" for i in range(5))]
    assert not spool_path(state_dir, task_id).exists()
    # A second load finds nothing more to do, and sends nothing twice.
    assert _reap(server, tmp_path, state_dir, proxy) == []
    assert [line for line in task_log_lines(raw, task_id) if line.startswith(("shipped", "spooled"))] == lines
