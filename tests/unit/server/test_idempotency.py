"""A call repeated with its Idempotency-Key gets the first answer and the server acts once."""

from __future__ import annotations

import threading

import pytest

from notebook_agent.server.idempotency import HEADER, IdempotencyCache, changes_state


def _pop(raw, queue: str, key: str | None):
    headers = {HEADER: key} if key else {}
    return raw.http.post(
        f"{raw.server.url}/queues.get_next_task",
        json={"queue": queue},
        headers={"Authorization": f"Bearer {raw.token()}", **headers},
        timeout=10,
    ).json()


def test_a_repeated_pop_gets_the_same_task_and_pops_once(raw) -> None:
    queue = raw.default_queue()
    tasks = [raw.new_task(f"task {i}") for i in range(2)]
    for task in tasks:
        raw.ok("tasks.enqueue", {"task": task, "queue": queue})
    first = _pop(raw, queue, "key-1")
    again = _pop(raw, queue, "key-1")
    assert first["data"]["entry"]["task"] == again["data"]["entry"]["task"] == tasks[0]
    assert [e["task"] for e in raw.ok("queues.get_by_id", {"queue": queue})["queue"]["entries"]] == [tasks[1]]
    # A new key is a new call.
    assert _pop(raw, queue, "key-2")["data"]["entry"]["task"] == tasks[1]


def test_without_a_key_every_call_acts(raw) -> None:
    queue = raw.default_queue()
    for i in range(2):
        raw.ok("tasks.enqueue", {"task": raw.new_task(f"task {i}"), "queue": queue})
    popped = {_pop(raw, queue, None)["data"]["entry"]["task"] for _ in range(2)}
    assert len(popped) == 2


def test_a_key_is_the_callers_own() -> None:
    cache = IdempotencyCache()
    calls = []

    def act(answer):
        def run():
            calls.append(answer)
            return 200, 0, "OK", {}, {"who": answer}

        return run

    assert cache.run("co/alice", "k", "tasks.create", act("alice"))[4] == {"who": "alice"}
    assert cache.run("co/bob", "k", "tasks.create", act("bob"))[4] == {"who": "bob"}
    assert cache.run("co/alice", "k", "tasks.create", act("again"))[4] == {"who": "alice"}
    assert calls == ["alice", "bob"]
    assert cache.replayed == 1


def test_a_retry_waits_for_the_first_call_still_running() -> None:
    cache = IdempotencyCache()
    entered, release = threading.Event(), threading.Event()
    acted = []

    def slow():
        acted.append("first")
        entered.set()
        release.wait(10)
        return 200, 0, "OK", {}, {"n": 1}

    results = []
    first = threading.Thread(target=lambda: results.append(cache.run("c", "k", "e", slow)))
    first.start()
    assert entered.wait(10)
    retry = threading.Thread(target=lambda: results.append(cache.run("c", "k", "e", lambda: (200, 0, "", {}, 2))))
    retry.start()
    release.set()
    first.join(10)
    retry.join(10)
    assert acted == ["first"]
    assert [r[4] for r in results] == [{"n": 1}, {"n": 1}]


@pytest.mark.parametrize("code", [500, 503])
def test_a_server_error_is_not_kept(code) -> None:
    cache = IdempotencyCache()
    assert cache.run("c", "k", "e", lambda: (code, 0, "boom", {}, {}))[0] == code
    assert cache.run("c", "k", "e", lambda: (200, 0, "OK", {}, {"ok": True}))[4] == {"ok": True}


def test_entries_are_bounded() -> None:
    cache = IdempotencyCache(max_entries=3)
    for i in range(10):
        cache.run("c", f"k{i}", "e", lambda i=i: (200, 0, "OK", {}, i))
    assert len(cache._entries) <= 3


def test_the_client_sends_the_header_the_server_reads() -> None:
    from notebook_agent.api.session import IDEMPOTENCY_HEADER

    assert IDEMPOTENCY_HEADER == HEADER


def test_reads_are_not_kept() -> None:
    assert changes_state("queues.get_next_task") and changes_state("events.add_batch")
    assert changes_state("tasks.completed") and changes_state("workers.status_report")
    for read in ("tasks.get_all", "events.get_task_log", "queues.peek_task", "tasks.ping", "debug.openapi"):
        assert not changes_state(read), read
    cache = IdempotencyCache()
    cache.run("c", "k", "events.get_task_log", lambda: (200, 0, "OK", {}, {"events": []}))
    assert not cache._entries
