"""The embedded server's long-poll extension of queues.get_next_task (feature-flagged by a token claim)."""

from __future__ import annotations

import threading
import time

import jwt

from notebook_agent import api
from notebook_agent.api import Session


def _session(server, worker="poller:0"):
    return Session(server.url, server.credentials.access_key, server.credentials.secret_key, worker=worker)


def test_the_token_advertises_the_extension(raw):
    claims = jwt.decode(raw.token(), options={"verify_signature": False})
    assert claims[api.queues.LONG_POLL_CLAIM] == 1


def test_a_waiting_poll_returns_as_soon_as_a_task_is_enqueued(server, raw):
    queue = raw.default_queue()
    other = raw.ok("queues.create", {"name": "other queue"})["id"]
    got: list = []
    session = _session(server)

    def poll():
        got.append(api.queues.get_next_task(session, queue, wait_sec=20, watch=[queue, other]))

    thread = threading.Thread(target=poll)
    thread.start()
    task = raw.new_task("long polled")
    started = time.monotonic()
    raw.ok("tasks.enqueue", {"task": task, "queue": queue})
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5  # woken by the enqueue, not by the 20 s timeout
    assert got[0].task == task


def test_a_task_in_another_watched_queue_ends_the_wait_empty(server, raw):
    queue = raw.default_queue()
    other = raw.ok("queues.create", {"name": "other queue"})["id"]
    session = _session(server)
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(api.queues.get_next_task(session, queue, wait_sec=20, watch=[queue, other]))
    )
    thread.start()
    raw.ok("tasks.enqueue", {"task": raw.new_task("for the other queue"), "queue": other})
    thread.join(timeout=10)
    assert not thread.is_alive() and result == [None]
    assert raw.ok("queues.get_num_entries", {"queue": other})["num"] == 1  # left for the caller's next round


def test_a_report_or_unregister_of_the_worker_ends_its_wait(server, raw):
    queue = raw.default_queue()
    session = _session(server, worker="sleepy:0")
    api.workers.register(session, "sleepy:0")  # a status report of an unknown worker is 400/1001
    for wake in (
        lambda: api.workers.status_report(_session(server), "sleepy:0", int(time.time()) * 1000),
        lambda: api.workers.unregister(_session(server), "sleepy:0"),
    ):
        result: list = []
        thread = threading.Thread(
            target=lambda out=result: out.append(api.queues.get_next_task(session, queue, wait_sec=20))
        )
        thread.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and thread.is_alive():
            wake()
            thread.join(timeout=0.2)
        assert not thread.is_alive() and result == [None]


def test_without_the_header_an_empty_queue_answers_at_once(server, raw):
    started = time.monotonic()
    assert api.queues.get_next_task(_session(server), raw.default_queue()) is None
    assert time.monotonic() - started < 2


def test_a_force_switch_ends_the_wait(server, raw):
    # A runtime property of the worker, or a queue's tags (force_workers:on/off), decide what it may pull.
    queue = raw.default_queue()
    raw.ok("workers.register", {"worker": "switched:0", "queues": [queue]})
    session = _session(server, worker="switched:0")
    for switch in (
        lambda: raw.ok(
            "workers.set_runtime_properties",
            {"worker": "switched:0", "runtime_properties": [{"key": "force", "value": "on"}]},
        ),
        lambda: raw.ok("queues.update", {"queue": queue, "tags": ["force_workers:off"]}),
    ):
        result: list = []
        thread = threading.Thread(
            target=lambda out=result: out.append(api.queues.get_next_task(session, queue, wait_sec=20))
        )
        thread.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and thread.is_alive():
            switch()
            thread.join(timeout=0.2)
        assert not thread.is_alive() and result == [None]
