"""Delivery that loses nothing: a task that prints numbered lines without pause meets a server outage, lost
add_batch replies (with and without the server's event-id claim), a worker stopped while the server is down, a
server that forgot the worker, and expired tokens; every line lands exactly once and the final status arrives."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from notebook_agent import api
from notebook_agent.config import Config, load_config
from notebook_agent.engine import task_registry
from notebook_agent.engine.final_status import final_path
from notebook_agent.engine.log_spool import spool_path
from notebook_agent.engine.worker import Worker, WorkerOptions
from notebook_agent.server.auth import EVENT_IDS_ENV
from notebook_agent.server.store import Store
from tests.reliability.harness import FaultProxy, ServerControl, task_log_lines, task_status, wait_until

pytestmark = [pytest.mark.timeout(300)]

OUTAGE_SEC = 30.0  # the acceptance item 2: the server is down this long in the middle of a task
SESSION_TIMEOUT_SEC = 2.0  # the agent's read timeout here
SESSION_RETRY_SEC = 3.0  # the agent's retry budget per call: an outage is seen as one, not hidden in retries


def logging_task(stop: Path) -> str:
    """A task that prints numbered lines every 10 ms until `stop` exists, then how many it printed."""
    return f"""
import os, time
i = 0
while not os.path.exists({str(stop)!r}):
    print(f"n={{i:06d}}", flush=True)
    i += 1
    time.sleep(0.01)
print(f"total={{i}}", flush=True)
"""


def enqueue(raw, name: str, source: str) -> str:
    task_id = raw.new_task(
        name, script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": source}
    )
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})
    return task_id


def numbered(raw, task_id: str) -> Counter[str]:
    return Counter(line for line in task_log_lines(raw, task_id) if line.startswith(("n=", "total=")))


def assert_every_line_once(raw, task_id: str) -> None:
    counts = numbered(raw, task_id)
    totals = [line for line in counts if line.startswith("total=")]
    assert len(totals) == 1, f"the task's last line is missing or doubled: {totals}"
    total = int(totals[0].removeprefix("total="))
    expected = {f"n={i:06d}" for i in range(total)}
    seen = {line for line in counts if line.startswith("n=")}
    missing, extra = sorted(expected - seen), sorted(seen - expected)
    doubled = sorted(line for line, n in counts.items() if n > 1)
    assert not missing and not doubled and not extra, (
        f"of {total} lines: {len(missing)} lost {missing[:5]}, {len(doubled)} doubled {doubled[:5]}, extra {extra[:5]}"
    )


def hold(seconds: float) -> None:
    """Keep a fault on for `seconds` (its duration is the point here, not a wait for something to happen)."""
    threading.Event().wait(seconds)


@pytest.fixture
def worker_config(agent_config, server, tmp_path) -> Callable[..., Config]:
    """The agent's configuration with status reports every second, pointed at `url` (the server, or a proxy)."""

    def make(url: str | None = None) -> Config:
        text = (tmp_path / "agent.conf").read_text()
        if url is not None:
            text = text.replace(server.url, url)
        conf = tmp_path / "agent-delivery.conf"
        conf.write_text(text + "agent { status_report_freq_sec: 1 }\n")
        return load_config(conf, env={})

    return make


@pytest.fixture
def make_worker(worker_config, agent_env, tmp_path) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def make(url: str | None = None) -> Worker:
        config = worker_config(url)
        session = api.Session.from_config(
            config.api, timeout=SESSION_TIMEOUT_SEC, retry_total_seconds=SESSION_RETRY_SEC
        )
        options = WorkerOptions(queues=[], state_dir=tmp_path / "state", stop_when_idle=True, poll_sec=0.2)
        worker = Worker(config, options, session=session, base_env=agent_env)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop(drain=False, timeout=60)
        worker.session.close()


def run_until_lines(raw, worker: Worker, task_id: str, count: int = 100) -> None:
    worker.start()
    wait_until(lambda: len(numbered(raw, task_id)) >= count, 120, 0.1, f"the task to log {count} lines")


def finish(worker: Worker, stop: Path) -> None:
    stop.touch()
    worker.join(120)
    assert worker.error is None, worker.error
    assert not worker._thread.is_alive(), "the worker did not finish"


def test_a_server_down_mid_task_loses_and_doubles_nothing(server, raw, make_worker, tmp_path) -> None:
    stop = tmp_path / "stop"
    task_id = enqueue(raw, "server down mid task", logging_task(stop))
    worker = make_worker()
    run_until_lines(raw, worker, task_id)
    spool = spool_path(tmp_path / "state", task_id)
    with ServerControl(server).down():
        hold(OUTAGE_SEC)
        assert spool.exists(), "the lines printed during the outage wait in the spool"
    wait_until(lambda: not spool.exists(), 60, 0.1, "the spool to drain")
    finish(worker, stop)
    assert task_status(raw, task_id) == "completed"
    assert_every_line_once(raw, task_id)
    assert not final_path(tmp_path / "state", task_id).exists()


@pytest.mark.parametrize("claim", [True, False], ids=["event-ids", "read-back"])
def test_lost_add_batch_replies_double_nothing(server, raw, make_worker, tmp_path, monkeypatch, claim) -> None:
    """The server stored a batch but the agent never heard: with the claim the ids make the re-send add nothing,
    without it (a real server) the agent reads the log back and sends only what is missing."""
    if not claim:
        monkeypatch.setenv(EVENT_IDS_ENV, "0")
    stop = tmp_path / "stop"
    task_id = enqueue(raw, f"lost replies ({'ids' if claim else 'read-back'})", logging_task(stop))
    with FaultProxy(server.port) as proxy:
        worker = make_worker(proxy.url)
        run_until_lines(raw, worker, task_id)
        proxy.cut_next_responses(3, "events.add_batch")
        wait_until(lambda: proxy.cuts_pending == 0, 30, 0.05, "three add_batch replies to be cut")
        finish(worker, stop)
        assert proxy.cut_count == 3
    assert task_status(raw, task_id) == "completed"
    assert_every_line_once(raw, task_id)
    stored = raw.ok("events.get_task_log", {"task": task_id, "batch_size": 10})["events"]
    assert all(("id" in e) is claim for e in stored), "a real server gets the SDK's event shape, without ids"


def test_a_worker_stopped_while_the_server_is_down_leaves_log_and_status_to_the_next_load(
    server, raw, make_worker, worker_config, tmp_path
) -> None:
    state = tmp_path / "state"
    stop = tmp_path / "stop"
    task_id = enqueue(raw, "stopped while the server is down", logging_task(stop))
    worker = make_worker()
    run_until_lines(raw, worker, task_id, 50)
    control = ServerControl(server)
    control.stop()
    try:
        stop.touch()  # the task ends while the server is away: its end waits for it
        spool, final = spool_path(state, task_id), final_path(state, task_id)
        wait_until(lambda: spool.exists() and final.exists(), 30, 0.05, "the log spool and the pending status")
        worker.stop(drain=False, timeout=60)
        assert not worker._thread.is_alive()
        assert spool.exists() and final.exists(), "both wait on disk for the next load"
    finally:
        control.start()
    assert task_status(raw, task_id) == "in_progress"
    results = task_registry.reap(state, task_registry.session_factory([worker_config().api]))
    messages = [item.message() for item in results]
    assert any("sent from the spool (sent)" in m for m in messages), messages
    assert any("final status completed" in m and "delivered" in m for m in messages), messages
    assert task_status(raw, task_id) == "completed"
    assert_every_line_once(raw, task_id)
    assert not spool.exists() and not final.exists()
    assert task_registry.reap(state, task_registry.session_factory([worker_config().api])) == []


def test_a_worker_the_server_forgot_registers_again(server, raw, make_worker, tmp_path) -> None:
    stop = tmp_path / "stop"
    task_id = enqueue(raw, "forgotten worker", logging_task(stop))
    worker = make_worker()
    run_until_lines(raw, worker, task_id, 20)
    queue = raw.default_queue()

    def registered() -> dict | None:
        found = [w for w in raw.ok("workers.get_all")["workers"] if w["id"] == worker.worker_id]
        return found[0] if found else None

    assert registered() is not None
    server.backend.store.delete("worker", worker.worker_id)  # as a real server whose registry lost it
    assert registered() is None
    back = wait_until(registered, 15, 0.1, "the worker to register again")
    assert [q["id"] for q in back["queues"]] == [queue]
    assert worker.registration.renewals >= 1
    finish(worker, stop)
    assert task_status(raw, task_id) == "completed"
    assert_every_line_once(raw, task_id)


def test_tokens_that_expire_mid_task_lose_nothing(server, raw, make_worker, clock, tmp_path) -> None:
    stop = tmp_path / "stop"
    task_id = enqueue(raw, "token expiry", logging_task(stop))
    worker = make_worker()
    run_until_lines(raw, worker, task_id)
    clock.advance(31 * 24 * 3600)  # past every token's exp (and the worker's registration timeout)
    raw._token = None  # the test's own client logs in again too
    before = len(numbered(raw, task_id))
    wait_until(lambda: len(numbered(raw, task_id)) > before + 100, 30, 0.1, "lines after the tokens expired")
    finish(worker, stop)
    assert task_status(raw, task_id) == "completed"
    assert_every_line_once(raw, task_id)
    assert worker.registration.renewals >= 1


def test_a_task_that_ends_while_the_server_is_down_is_completed_once_it_is_back(
    server, raw, make_worker, tmp_path
) -> None:
    state, stop = tmp_path / "state", tmp_path / "stop"
    task_id = enqueue(raw, "ends during the outage", logging_task(stop))
    worker = make_worker()
    run_until_lines(raw, worker, task_id, 50)
    with ServerControl(server).down():
        stop.touch()
        final = final_path(state, task_id)
        wait_until(final.exists, 30, 0.05, "the final status to wait on disk")
        hold(3.0)  # the end of the task keeps trying meanwhile
    finish(worker, stop)
    assert task_status(raw, task_id) == "completed"
    assert_every_line_once(raw, task_id)
    assert not final.exists() and not spool_path(state, task_id).exists()


def test_tokens_expired_while_the_server_was_down_and_a_new_token_secret_lose_nothing(
    server, raw, make_worker, clock, tmp_path
) -> None:
    stop = tmp_path / "stop"
    task_id = enqueue(raw, "new token secret", logging_task(stop))
    worker = make_worker()
    run_until_lines(raw, worker, task_id)
    with ServerControl(server).down():
        clock.advance(31 * 24 * 3600)  # every token expires while the server is away...
        store = Store(server.data_dir / "server.db")
        try:
            store.set_setting("token_secret", secrets.token_hex(32))  # ... and it comes back signing with a new key
        finally:
            store.close()
        hold(2.0)
    raw._token = None
    before = len(numbered(raw, task_id))
    wait_until(lambda: len(numbered(raw, task_id)) > before + 100, 60, 0.1, "lines after the restart")
    finish(worker, stop)
    assert task_status(raw, task_id) == "completed"
    assert_every_line_once(raw, task_id)
