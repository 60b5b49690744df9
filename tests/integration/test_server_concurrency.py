"""Acceptance: 20 threads enqueueing and popping 500 tasks; every task is popped exactly once."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.conftest import RawClient

pytestmark = pytest.mark.timeout(240)

TASKS = 500
THREADS = 20


def test_every_task_popped_exactly_once(server, raw):
    queue_id = raw.ok("queues.create", {"name": "busy queue"})["id"]
    token = raw.token()
    popped: list[str] = []
    enqueued: list[str] = []
    lock = threading.Lock()
    producers_done = threading.Event()
    failures: list[BaseException] = []

    def producer(count: int) -> None:
        client = RawClient(server)
        client._token = token
        for i in range(count):
            task_id = client.new_task(f"task {i}")
            client.ok("tasks.enqueue", {"task": task_id, "queue": queue_id})
            with lock:
                enqueued.append(task_id)

    def consumer() -> None:
        client = RawClient(server)
        client._token = token
        while True:
            entry = client.ok("queues.get_next_task", {"queue": queue_id}).get("entry")
            if entry:
                client.ok("tasks.started", {"task": entry["task"], "force": True})
                with lock:
                    popped.append(entry["task"])
            elif producers_done.is_set() and not client.ok("queues.get_num_entries", {"queue": queue_id})["num"]:
                return

    def guarded(fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as exc:
                failures.append(exc)
                producers_done.set()

        return threading.Thread(target=run)

    producers = [guarded(producer, TASKS // 10) for _ in range(10)]
    consumers = [guarded(consumer) for _ in range(THREADS - 10)]
    for thread in producers + consumers:
        thread.start()
    for thread in producers:
        thread.join(timeout=200)
    producers_done.set()
    for thread in consumers:
        thread.join(timeout=200)
    assert not failures, failures[0]
    assert len(enqueued) == TASKS
    counts = Counter(popped)
    assert sorted(counts) == sorted(enqueued)
    assert set(counts.values()) == {1}
    statuses = Counter(t["status"] for t in raw.ok("tasks.get_all", {"only_fields": ["status"]})["tasks"])
    assert statuses == {"in_progress": TASKS}
