"""Two agents (real `notebook-agent daemon` processes) on one queue, the first killed mid-pop: the server popped a
task for it, the reply never arrived, and it died. Every task still runs exactly once: our server puts a task
popped by a worker that lapsed back at the front of its queue (the real ClearML Server leaves it `queued` in no
queue for good), and a worker that lapsed may not start the task any more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import notebook_agent
from notebook_agent import api
from notebook_agent.api import APIError
from tests.reliability.harness import Fault, FaultProxy, alive, kill, task_log_lines, task_status, wait_until

REPO_ROOT = str(Path(notebook_agent.__file__).resolve().parents[1])  # the agent, importable from anywhere
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

TASKS = 6
LAPSE_SEC = 3  # agent.worker_registration_timeout_sec: how long a dead agent's registration outlives it


def _agent_conf(server, tmp_path: Path, name: str, api_server: str) -> Path:
    text = server.config_file.read_text().replace(f'api_server: "{server.url}"', f'api_server: "{api_server}"')
    assert f'api_server: "{api_server}"' in text
    conf = tmp_path / f"{name}.conf"
    conf.write_text(
        text
        + textwrap.dedent(
            f"""
            agent {{
              worker_id: "{name}"
              worker_registration_timeout_sec: {LAPSE_SEC}
              status_report_freq_sec: 0.5
              package_manager {{ system_site_packages: true }}
              venvs_cache {{ path: "{tmp_path / name / "venvs-cache"}" }}
              vcs_cache {{ path: "{tmp_path / name / "vcs-cache"}" }}
            }}
            """
        )
    )
    return conf


class Daemon:
    """`python -m notebook_agent daemon --queue Q` in its own process group, with its own HOME and config."""

    def __init__(self, env: dict[str, str], conf: Path, home: Path, queue: str, log: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "notebook_agent", "daemon", "--queue", queue],
            env={
                **env,
                "HOME": str(home),
                "CLEARML_CONFIG_FILE": str(conf),
                "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")])),
            },
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL to the agent's whole group: a machine that died, not an agent that left."""
        if alive(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGKILL)  # it leads its own group (start_new_session)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                kill(self.proc.pid)
                self.proc.wait(10)
        self._out.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def _registered(raw, worker_id: str) -> bool:
    return any(w["id"] == worker_id for w in raw.ok("workers.get_all")["workers"])


def test_a_task_popped_by_an_agent_killed_mid_pop_runs_once_elsewhere(server, raw, agent_env, tmp_path, daemons):
    queue = raw.ok("queues.create", {"name": "pair"})["id"]
    ran = tmp_path / "ran.txt"
    script = f"import os\nwith open({str(ran)!r}, 'a') as f:\n    f.write(os.environ['CLEARML_TASK_ID'] + '\\n')\n"
    tasks = [
        raw.new_task(
            f"once {i}", script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": script}
        )
        for i in range(TASKS)
    ]

    for task_id in tasks:
        raw.ok("tasks.enqueue", {"task": task_id, "queue": queue})
    with FaultProxy(server.port) as proxy:
        # Agent 1's first pop (the queue is full: it gets the first task) reaches the server; the reply never
        # comes back. Armed before the agent starts, so the cut can only fall on that pop, never on an empty one.
        proxy.cut_next_responses(1, "queues.get_next_task")
        first = Daemon(
            agent_env,
            _agent_conf(server, tmp_path, "agent-1", proxy.url),
            tmp_path / "h1",
            "pair",
            tmp_path / "agent-1.log",
        )
        daemons.append(first)
        wait_until(lambda: proxy.cut_count == 1, 60, interval=0.005, what="agent-1's pop cut")
        proxy.set(Fault.BLACKHOLE)  # nothing more from agent 1 reaches the server (its client re-sends after 0.2 s)
        first.kill()

    lost = tasks[0]
    # The hole: popped, so in no queue, yet `queued`; nobody runs it until agent 1's registration lapses.
    assert task_status(raw, lost) == "queued"
    assert lost not in [e["task"] for e in raw.ok("queues.get_by_id", {"queue": queue})["queue"]["entries"]]

    second = Daemon(
        agent_env,
        _agent_conf(server, tmp_path, "agent-2", server.url),
        tmp_path / "h2",
        "pair",
        tmp_path / "agent-2.log",
    )
    daemons.append(second)
    wait_until(
        lambda: all(task_status(raw, t) == "completed" for t in tasks),
        120,
        interval=0.2,
        what="every task completed",
    )
    second.stop()

    assert sorted(ran.read_text().split()) == sorted(tasks)  # each ran, once
    for task_id in tasks:
        pulled = [line for line in task_log_lines(raw, task_id) if line.startswith(f"task {task_id} pulled")]
        assert pulled == [f"task {task_id} pulled from {queue} by worker agent-2"], pulled
    assert not _registered(raw, "agent-1")


# The server's side alone, worker by worker through our API client ---------------------------------------------------
def _worker(server, worker_id: str, queue: str, timeout: int = 600) -> api.Session:
    creds = server.credentials
    session = api.Session(server.url, creds.access_key, creds.secret_key, worker=worker_id, retry_total_seconds=0)
    api.workers.register(session, worker_id, queues=[queue], timeout=timeout)
    return session


def _entries(raw, queue: str) -> list[str]:
    return [e["task"] for e in raw.ok("queues.get_by_id", {"queue": queue})["queue"]["entries"]]


@pytest.fixture
def queue(raw) -> str:
    return raw.ok("queues.create", {"name": "lost-pops"})["id"]


def _enqueued(raw, queue: str, count: int) -> list[str]:
    tasks = [raw.new_task(f"task {i}") for i in range(count)]
    for task_id in tasks:
        raw.ok("tasks.enqueue", {"task": task_id, "queue": queue})
    return tasks


def test_a_lapsed_worker_s_pop_goes_back_to_the_front_and_it_may_not_start_it(server, raw, clock, queue):
    lost, other = _enqueued(raw, queue, 2)
    w1 = _worker(server, "w1", queue, timeout=5)
    assert api.queues.get_next_task(w1, queue).task == lost
    clock.advance(4)
    assert _entries(raw, queue) == [other]  # not lapsed yet: it may still start it
    clock.advance(2)
    assert _entries(raw, queue) == [lost, other]  # lapsed: back, first, as it was
    assert task_status(raw, lost) == "queued"

    w2 = _worker(server, "w2", queue)
    assert api.queues.get_next_task(w2, queue).task == lost
    api.tasks.started(w2, lost)
    # The lapsed worker comes back late: neither its start nor its end may touch w2's run.
    for late in (api.tasks.started, api.tasks.failed):
        with pytest.raises(APIError) as refused:
            late(w1, lost, force=True)
        assert (refused.value.code, refused.value.subcode) == (400, 110)
    assert task_status(raw, lost) == "in_progress"
    clock.advance(700)  # w2 lapses too, but its task was started: nothing goes back
    assert _entries(raw, queue) == [other]
    w1.close()
    w2.close()


def test_an_unregistered_worker_s_pop_goes_back_at_once(server, raw, queue):
    first, second = _enqueued(raw, queue, 2)
    w1 = _worker(server, "w1", queue)
    assert api.queues.get_next_task(w1, queue).task == first
    api.workers.unregister(w1, "w1")
    assert _entries(raw, queue) == [first, second]
    w1.close()


def test_a_pop_settled_otherwise_is_left_alone(server, raw, clock, queue):
    started, stopped, enqueued = _enqueued(raw, queue, 3)
    w1 = _worker(server, "w1", queue, timeout=5)
    for task_id in (started, stopped, enqueued):
        assert api.queues.get_next_task(w1, queue).task == task_id
    api.tasks.started(w1, started)
    raw.ok("tasks.stop", {"task": stopped})
    other = raw.ok("queues.create", {"name": "elsewhere"})["id"]
    raw.ok("tasks.enqueue", {"task": enqueued, "queue": other})
    clock.advance(10)
    assert _entries(raw, queue) == []
    assert _entries(raw, other) == [enqueued]
    # A worker that never registered is not remembered: nothing could ever tell it lapsed.
    anonymous = _enqueued(raw, queue, 1)[0]
    creds = server.credentials
    nobody = api.Session(server.url, creds.access_key, creds.secret_key, worker="nobody", retry_total_seconds=0)
    assert api.queues.get_next_task(nobody, queue).task == anonymous
    clock.advance(700)
    assert _entries(raw, queue) == []
    w1.close()
    nobody.close()


def test_a_long_poll_wakes_when_a_popping_worker_lapses(server, raw, queue):
    (lost,) = _enqueued(raw, queue, 1)
    w1 = _worker(server, "w1", queue, timeout=1)
    assert api.queues.get_next_task(w1, queue).task == lost
    w2 = _worker(server, "w2", queue)
    started = time.monotonic()
    entry = api.queues.get_next_task(w2, queue, wait_sec=20)
    assert entry is not None and entry.task == lost
    assert time.monotonic() - started < 5  # at w1's lapse, not at the end of the 20 s wait
    w1.close()
    w2.close()
