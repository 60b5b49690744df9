"""While the server is unreachable a running task is left alone: the abort watch and its pings do not stop it,
failed status reports do not either; a server that forgot the worker gets it registered again by the reporter."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

from notebook_agent.api import Session
from notebook_agent.engine.abort_watch import AbortWatch
from notebook_agent.engine.events import EventBus
from notebook_agent.engine.registration import Registration
from notebook_agent.engine.stats_reporter import StatsReporter


def unreachable() -> Session:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Session(f"http://127.0.0.1:{port}", None, None, auth_token="tok", retry_total_seconds=0.05)


def test_the_abort_watch_does_not_stop_a_task_while_the_server_is_unreachable() -> None:
    watch = AbortWatch(unreachable(), "t1", threading.Event(), poll_sec=0.02, ping_sec=0.01)
    watch.start()
    try:
        assert not watch.triggered.wait(1.0)
    finally:
        watch.close()


class Monitor:
    def sample(self) -> dict[str, Any]:
        return {}


def test_status_reports_survive_an_outage_and_register_a_forgotten_worker_again(server: Any, raw: Any) -> None:
    creds = server.credentials
    session = Session(server.url, creds.access_key, creds.secret_key)
    worker = SimpleNamespace(
        session=unreachable(), worker_id="host:test:0", current=None, queues=[], options=SimpleNamespace()
    )
    renewed = threading.Event()

    def register() -> None:
        session.send("workers.register", {"worker": "host:test:0"}, version="2.23")
        renewed.set()

    registration = Registration(register, lambda: False)
    reporter = StatsReporter(worker, 1.0, EventBus(), Monitor(), on_error=registration.failed)  # type: ignore[arg-type]
    reporter.report_now()  # the server is away: logged, nothing raised
    worker.session = session  # it is back, but has forgotten the worker: 400/1001
    started = time.monotonic()
    reporter.report_now()
    assert renewed.is_set() and time.monotonic() - started < 5
    workers = raw.ok("workers.get_all")["workers"]
    assert [w["id"] for w in workers] == ["host:test:0"]
    assert registration.renewals == 1
