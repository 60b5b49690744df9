"""Network faults between a working agent and the server, in the middle of a task that logs without pause: each
fault ends, the task completes, and every line it printed is on the server exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from notebook_agent import api
from notebook_agent.config import load_config
from notebook_agent.engine.events import EventBus
from notebook_agent.engine.worker import Worker, WorkerOptions
from tests.reliability.harness import Fault, FaultProxy, task_log_lines, task_status, wait_until

pytestmark = [pytest.mark.timeout(240)]

LINES = 1000  # numbered lines the task prints, about 5 ms apart: 5-6 s of steady logging
FAULT_SEC = 3.0  # how long each fault lasts
SESSION_TIMEOUT_SEC = 2.0  # the agent's read timeout here: a blackholed call gives up after this

TASK_SOURCE = f"""
import sys, time
for i in range({LINES}):
    print(f"n={{i:05d}}", flush=True)
    time.sleep(0.005)
print("task says done", flush=True)
"""


def _line_counts(raw, task_id: str) -> Counter[str]:
    return Counter(line for line in task_log_lines(raw, task_id) if line.startswith("n="))


def assert_every_line_once(raw, task_id: str) -> None:
    counts = _line_counts(raw, task_id)
    expected = {f"n={i:05d}" for i in range(LINES)}
    missing = sorted(expected - set(counts))
    doubled = sorted(line for line, n in counts.items() if n > 1)
    assert not missing and not doubled, f"{len(missing)} lines lost {missing[:5]}, {len(doubled)} doubled {doubled[:5]}"


@pytest.fixture
def proxy(server) -> Iterator[FaultProxy]:
    with FaultProxy(server.port) as proxy:
        yield proxy


@pytest.fixture
def proxied_worker(agent_config, agent_env, proxy, server, tmp_path) -> Callable[[], tuple[Worker, EventBus]]:
    """A worker whose every call (and its task's) goes through the proxy, with short timeouts."""
    text = (tmp_path / "agent.conf").read_text().replace(server.url, proxy.url)
    conf = tmp_path / "agent-proxied.conf"
    conf.write_text(text)
    config = load_config(conf, env={})
    made: list[Worker] = []

    def make() -> tuple[Worker, EventBus]:
        bus = EventBus()
        session = api.Session.from_config(config.api, timeout=SESSION_TIMEOUT_SEC, retry_total_seconds=60)
        options = WorkerOptions(queues=[], state_dir=tmp_path / "state", stop_when_idle=True, poll_sec=0.2)
        worker = Worker(config, options, session=session, bus=bus, base_env=agent_env)
        made.append(worker)
        return worker, bus

    yield make
    for worker in made:
        worker.stop(drain=False, timeout=60)
        worker.session.close()


def _enqueue_logging_task(raw, name: str) -> str:
    task_id = raw.new_task(
        name, script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": TASK_SOURCE}
    )
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})
    return task_id


def _run_with_fault(raw, proxied_worker, proxy: FaultProxy, apply: Callable[[str], None], name: str) -> str:
    task_id = _enqueue_logging_task(raw, name)
    worker, _bus = proxied_worker()
    worker.start()
    # The fault starts once the task is well into its logging, and ends FAULT_SEC later.
    wait_until(lambda: _line_counts(raw, task_id).get("n=00200"), 120, 0.1, "the task to log its 200th line")
    apply(task_id)
    worker.join(180)
    assert worker.error is None, worker.error
    assert not worker._thread.is_alive(), "the worker did not finish"
    return task_id


FAULTS = {
    "slow network (200 ms per chunk)": (Fault.DELAY, 0.2),
    "connections dropped": (Fault.DROP, 0.0),
    "connections reset": (Fault.RESET, 0.0),
    "packets blackholed": (Fault.BLACKHOLE, 0.0),
}


@pytest.mark.parametrize("fault_name", sorted(FAULTS))
def test_a_network_fault_mid_task_loses_and_doubles_nothing(fault_name, raw, proxied_worker, proxy) -> None:
    fault, delay = FAULTS[fault_name]

    def apply(task_id: str) -> None:
        with proxy.faulty(fault, delay):
            _hold(FAULT_SEC)
        assert task_status(raw, task_id) == "in_progress", "the fault must end while the task still logs"

    task_id = _run_with_fault(raw, proxied_worker, proxy, apply, f"network fault: {fault_name}")
    assert task_status(raw, task_id) == "completed"
    assert_every_line_once(raw, task_id)


def test_replies_lost_after_the_server_acted_double_nothing(raw, proxied_worker, proxy) -> None:
    """The server stored a batch (or took the final status) but the agent never heard: its retry adds nothing."""

    def apply(task_id: str) -> None:
        proxy.cut_next_responses(3, "events.add_batch")
        wait_until(lambda: proxy.cuts_pending == 0, 30, 0.05, "three add_batch replies to be cut")
        proxy.cut_next_responses(1, "tasks.completed")

    task_id = _run_with_fault(raw, proxied_worker, proxy, apply, "lost replies")
    assert proxy.cut_count == 4
    assert task_status(raw, task_id) == "completed"
    assert_every_line_once(raw, task_id)


def test_a_lost_pop_reply_does_not_lose_the_task(raw, proxied_worker, proxy) -> None:
    """The server popped the task for the agent, the reply was lost: the agent's retry still gets that task."""
    proxy.cut_next_responses(1, "queues.get_next_task")
    task_id = _enqueue_logging_task(raw, "lost pop reply")
    worker, _bus = proxied_worker()
    worker.start()
    worker.join(180)
    assert worker.error is None, worker.error
    assert proxy.cut_count == 1
    assert task_status(raw, task_id) == "completed"
    assert_every_line_once(raw, task_id)


def _hold(seconds: float) -> None:
    """Keep a fault on for `seconds` (a fault's duration is the point here, not a wait for something to happen)."""
    threading.Event().wait(seconds)
