"""Task status changes on the embedded server: every call from every status is accepted or refused with 400/110 as
the real server's state machine says (`force` skips the check), and calls racing on one task through real HTTP
leave it in one valid state, with one winner where only one can win and a history that the state machine allows.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from typing import Any

import pytest

from notebook_agent.server import EmbeddedServer
from tests.conftest import RawClient, Reply

# The real server's state machine (reference server_api.md §3), written out here as the oracle.
ALLOWED = {
    "created": {"queued", "in_progress"},
    "queued": {"created", "in_progress", "stopped"},
    "in_progress": {"stopped", "failed", "created", "completed"},
    "stopped": {"closed", "created", "failed", "queued", "in_progress", "published", "publishing", "completed"},
    "closed": {"created", "failed", "published", "publishing", "stopped"},
    "failed": {"created", "stopped", "published", "queued"},
    "published": set(),
    "completed": {"published", "in_progress", "created"},
}
TARGET = {
    "tasks.started": "in_progress",
    "tasks.stopped": "stopped",
    "tasks.failed": "failed",
    "tasks.completed": "completed",
    "tasks.close": "closed",
    "tasks.publish": "published",
    "tasks.enqueue": "queued",
    "tasks.reset": "created",
    "tasks.stop": "stopped",
}
# How a task is put in each status (forced calls, from created).
SETUP = {
    "created": [],
    "queued": ["tasks.enqueue"],
    "in_progress": ["tasks.started"],
    "stopped": ["tasks.stopped"],
    "failed": ["tasks.failed"],
    "completed": ["tasks.completed"],
    "closed": ["tasks.close"],
    "published": ["tasks.publish"],
}
RACE_LOSS = {110, 121, 706}  # invalid status by then, status changed under it, already in that queue


def allowed(current: str, call: str) -> bool:
    if call == "tasks.dequeue":
        return current in ("queued", "in_progress")
    if call == "tasks.reset" and current == "published":
        return False
    target = TARGET[call]
    return current == target or target in ALLOWED[current]


def task_in(raw: RawClient, status: str, queue: str) -> str:
    task = raw.new_task(f"in {status}")
    for call in SETUP[status]:
        raw.ok(call, {"task": task, "force": True, "queue": queue})
    assert raw.ok("tasks.get_by_id", {"task": task})["task"]["status"] == status
    return task


def test_every_status_call_from_every_status_follows_the_state_machine(raw: RawClient) -> None:
    queue, other = raw.default_queue(), raw.ok("queues.create", {"name": "other queue"})["id"]
    wrong = []
    for status, call in itertools.product(SETUP, [*TARGET, "tasks.dequeue"]):
        for force in (False, True):
            task = task_in(raw, status, queue)
            # enqueue from queued goes to another queue: the same one is 706 (already there), not a status matter
            reply = raw.call(call, {"task": task, "force": force, "queue": other})
            expected = 200 if force or allowed(status, call) else 110
            got = 200 if reply.status == 200 else reply.subcode
            if got != expected:
                wrong.append(f"{call} from {status} force={force}: {reply.status}/{reply.subcode} not {expected}")
            elif got == 200 and call in TARGET and call != "tasks.stop":
                after = raw.ok("tasks.get_by_id", {"task": task})["task"]["status"]
                if after != TARGET[call]:
                    wrong.append(f"{call} from {status} force={force}: left {after}, not {TARGET[call]}")
    assert not wrong, "\n".join(wrong)


def race(server: EmbeddedServer, token: str, calls: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Reply]]:
    """Send every call at once, each from its own thread and connection; the replies in call order."""
    barrier = threading.Barrier(len(calls))
    replies: list[Any] = [None] * len(calls)

    def send(i: int, endpoint: str, body: dict[str, Any]) -> None:
        client = RawClient(server)
        client._token = token
        client.call("debug.ping", {})  # connect before the barrier: the calls themselves then start together
        barrier.wait(timeout=30)
        try:
            replies[i] = client.call(endpoint, body)
        except BaseException as exc:  # reported below, with the call
            replies[i] = exc

    threads = [threading.Thread(target=send, args=(i, *c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for (endpoint, _), reply in zip(calls, replies, strict=True):
        assert isinstance(reply, Reply), f"{endpoint}: {reply!r}"
        assert reply.status == 200 or (reply.status == 400 and reply.subcode in RACE_LOSS), (endpoint, reply.meta)
    return [(endpoint, reply) for (endpoint, _), reply in zip(calls, replies, strict=True)]


def entries(raw: RawClient, queue: str) -> list[str]:
    return [e["task"] for e in raw.ok("queues.get_by_id", {"queue": queue})["queue"]["entries"]]


def test_eight_racing_enqueues_have_one_winner_and_one_entry(server: EmbeddedServer, raw: RawClient) -> None:
    queue = raw.default_queue()
    task = raw.new_task("raced enqueue")
    results = race(server, raw.token(), [("tasks.enqueue", {"task": task, "queue": queue})] * 8)
    assert sum(r.status == 200 for _, r in results) == 1
    assert entries(raw, queue) == [task]
    assert raw.ok("tasks.get_by_id", {"task": task})["task"]["status"] == "queued"
    # the winner's enqueue_status (created) is what a dequeue restores
    assert raw.ok("tasks.dequeue", {"task": task})["fields"]["status"] == "created"


def test_eight_racing_dequeues_have_one_winner(server: EmbeddedServer, raw: RawClient) -> None:
    queue = raw.default_queue()
    task = raw.new_task("raced dequeue")
    raw.ok("tasks.enqueue", {"task": task, "queue": queue})
    results = race(server, raw.token(), [("tasks.dequeue", {"task": task})] * 8)
    assert Counter(r.status == 200 for _, r in results) == {True: 1, False: 7}
    assert {r.subcode for _, r in results if r.status != 200} == {110}
    assert entries(raw, queue) == []
    assert raw.ok("tasks.get_by_id", {"task": task})["task"]["status"] == "created"


def test_eight_racing_pops_give_the_task_to_one_worker(server: EmbeddedServer, raw: RawClient) -> None:
    queue = raw.default_queue()
    task = raw.new_task("raced pop")
    raw.ok("tasks.enqueue", {"task": task, "queue": queue})
    results = race(server, raw.token(), [("queues.get_next_task", {"queue": queue})] * 8)
    assert [r.data["entry"]["task"] for _, r in results if r.data.get("entry")] == [task]


def a_valid_order(start: str, end: str, successes: list[tuple[str, dict]]) -> list[str] | None:
    """An order of the successful calls (by status_changed; ties in any order) in which each one was allowed from
    the status the previous left, ending in `end`; None when there is none."""
    groups = [list(g) for _, g in itertools.groupby(successes, key=lambda s: s[1]["status_changed"])]

    def walk(status: str, rest: list[list[tuple[str, dict]]], path: list[str]) -> list[str] | None:
        if not rest:
            return path if status == end else None
        for order in itertools.permutations(rest[0]):
            current, steps = status, []
            for call, fields in order:
                if not allowed(current, call):
                    break
                current = fields["status"]
                steps.append(f"{call}->{current}")
            else:
                found = walk(current, rest[1:], path + steps)
                if found is not None:
                    return found
        return None

    return walk(start, groups, [])


MIXED = ["tasks.started", "tasks.stopped", "tasks.enqueue", "tasks.started", "tasks.enqueue", "tasks.stopped"]


@pytest.mark.parametrize("round_", range(4))
def test_mixed_racing_calls_leave_one_valid_state_and_a_consistent_history(
    server: EmbeddedServer, raw: RawClient, round_: int
) -> None:
    queue = raw.default_queue()
    task = raw.new_task(f"mixed race {round_}")
    calls = [(c, {"task": task, "queue": queue}) for c in [*MIXED, "tasks.dequeue", "tasks.failed"]]
    results = race(server, raw.token(), calls)
    successes = sorted(
        ((call, r.data["fields"]) for call, r in results if r.status == 200), key=lambda s: s[1]["status_changed"]
    )
    doc = raw.ok("tasks.get_by_id", {"task": task})["task"]
    path = a_valid_order("created", doc["status"], successes)
    steps = [(c, f["status"], f["status_changed"]) for c, f in successes]
    assert path is not None, f"no allowed order of {steps} ends in {doc['status']}"
    won = Counter(call for call, r in results if r.status == 200)
    assert won["tasks.enqueue"] <= 1 + won["tasks.dequeue"], "a second enqueue wins only after a dequeue"
    # the queue holds the task once at most, and surely when the task is queued
    queued = entries(raw, queue)
    assert queued in ([], [task])
    if doc["status"] == "queued":
        assert queued == [task]
