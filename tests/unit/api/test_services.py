"""Behaviour of the service helpers beyond their request bodies (lookups, races, builders)."""

from __future__ import annotations

from typing import Any

import pytest

from notebook_agent.api import APIError, Codes, events, projects, queues, tasks, workers

from .conftest import RecordingSender


def test_find_by_name_compares_exactly(sender: RecordingSender) -> None:
    sender.responses["queues.get_all"] = {"queues": [{"id": "q0", "name": "Default"}, {"id": "q1", "name": "default"}]}
    assert queues.find_by_name(sender, "default") == {"id": "q1", "name": "default"}
    assert sender.sent[0][1] == {"name": "^default$"}
    sender.responses["queues.get_all"] = {"queues": []}
    assert queues.find_by_name(sender, "a.b+") is None
    assert sender.sent[1][1] == {"name": r"^a\.b\+$"}


def test_get_or_create_reuses_an_existing_project(sender: RecordingSender) -> None:
    sender.responses["projects.get_all"] = {"projects": [{"id": "p1", "name": "proj"}]}
    assert projects.get_or_create(sender, "proj") == "p1"
    assert [s[0] for s in sender.sent] == ["projects.get_all"]
    assert sender.sent[0][1] == {"name": "^proj$", "only_fields": ["id", "name"], "search_hidden": True}


def test_get_or_create_creates_or_takes_the_race_winner(sender: RecordingSender) -> None:
    sender.responses["projects.get_all"] = {"projects": []}
    sender.responses["projects.create"] = {"id": "p2"}
    assert projects.get_or_create(sender, "proj") == "p2"
    assert sender.sent[-1][1] == {"name": "proj", "description": ""}

    sender.responses["projects.get_all"] = [{"projects": []}, {"projects": [{"id": "p3", "name": "proj"}]}]
    sender.responses["projects.create"] = APIError(400, 801, "Value combination already exists", "projects.create")
    assert projects.get_or_create(sender, "proj") == "p3"


def test_get_status_reads_the_projection(sender: RecordingSender) -> None:
    sender.responses["tasks.get_all"] = {"tasks": [{"id": "t1", "status": "in_progress", "status_message": "stopping"}]}
    assert tasks.get_status(sender, "t1") == ("in_progress", "stopping")
    assert sender.sent[0][1] == {
        "id": ["t1"],
        "only_fields": ["status", "status_message"],
        "search_hidden": True,
    }
    sender.responses["tasks.get_all"] = {"tasks": []}
    with pytest.raises(APIError) as info:
        tasks.get_status(sender, "nope")
    assert info.value.is_(Codes.INVALID_TASK_ID)


def test_status_changes_always_send_reason_and_message(sender: RecordingSender) -> None:
    tasks.started(sender, "t1", force=True, status_message="pulled by agent")
    tasks.completed(sender, "t1")
    assert sender.sent[0][1] == {
        "task": "t1",
        "force": True,
        "status_reason": "",
        "status_message": "pulled by agent",
    }
    assert sender.sent[1][1] == {"task": "t1", "force": False, "status_reason": "", "status_message": ""}


def test_enqueue_rejects_queue_and_queue_name(sender: RecordingSender) -> None:
    with pytest.raises(ValueError):
        tasks.enqueue(sender, "t1", queue="q1", queue_name="default")
    assert not sender.sent


def test_status_report_sends_int_ms_and_omits_none(sender: RecordingSender) -> None:
    stamp: Any = 1_764_000_000_123.0  # a float from time.time() * 1000 must still go out as an integer
    workers.status_report(sender, "vm:cpu:0", stamp, machine_stats={"memory_used": 3.6, "x": 1})
    assert sender.sent[0][1] == {
        "worker": "vm:cpu:0",
        "timestamp": 1_764_000_000_123,
        "machine_stats": {"memory_used": 4},
    }


def test_log_event_builder(sender: RecordingSender) -> None:
    event = events.log_event("t1", "line\n", level="DEBUG", timestamp_ms=5)
    assert event == {"type": "log", "task": "t1", "timestamp": 5, "level": "debug", "msg": "line\n"}
    with pytest.raises(ValueError):
        events.log_event("t1", "x", level="loud")


def test_add_batch_skips_an_empty_batch(sender: RecordingSender) -> None:
    assert events.add_batch(sender, []) == {"added": 0, "errors": 0}
    assert not sender.sent


def test_get_next_task_keeps_task_info(sender: RecordingSender) -> None:
    sender.responses["queues.get_next_task"] = {"entry": {"task": "t1"}, "task_info": {"user": "u"}}
    entry = queues.get_next_task(sender, "q1", get_task_info=True)
    assert entry == queues.QueueEntry("t1", None, {"user": "u"})
    assert sender.sent[0][1] == {"queue": "q1", "get_task_info": True}
