"""`queues.*` of the embedded server: the default queue, FIFO entries, lookups and reordering."""

from __future__ import annotations

import pytest


def entries(raw, queue: str) -> list[str]:
    return [e["task"] for e in raw.ok("queues.get_by_id", {"queue": queue})["queue"]["entries"]]


@pytest.fixture
def queue(raw) -> str:
    return raw.ok("queues.create", {"name": "work-queue"})["id"]


@pytest.fixture
def three(raw, queue) -> list[str]:
    tasks = [raw.new_task(f"queued task {i}") for i in range(3)]
    for task in tasks:
        assert raw.ok("queues.add_task", {"queue": queue, "task": task}) == {"added": 1}
    return tasks


class TestDefaultQueue:
    def test_default_queue_exists_from_first_start(self, raw):
        found = raw.ok("queues.get_all", {"name": "^default$"})["queues"]
        assert len(found) == 1
        assert "default" in found[0]["system_tags"]
        assert found[0]["entries"] == []

    def test_get_default(self, raw):
        data = raw.ok("queues.get_default")
        assert data["name"] == "default"
        assert len(data["id"]) == 32
        queue = raw.ok("queues.get_by_id", {"queue": data["id"]})["queue"]
        assert "default" in queue["system_tags"]

    def test_no_default_queue_is_707(self, raw):
        default = raw.default_queue()
        raw.ok("queues.update", {"queue": default, "system_tags": []})
        assert raw.call("queues.get_default").subcode == 707

    def test_several_default_queues_is_708(self, raw):
        raw.ok("queues.create", {"name": "another-default", "system_tags": ["default"]})
        assert raw.call("queues.get_default").subcode == 708


class TestCreate:
    def test_create(self, raw):
        data = raw.ok("queues.create", {"name": "gpu-queue", "tags": ["gpu"]})
        queue = raw.ok("queues.get_by_id", {"queue": data["id"]})["queue"]
        assert queue["name"] == "gpu-queue"
        assert queue["tags"] == ["gpu"]
        assert queue["entries"] == []
        assert queue["created"]

    def test_short_name_is_400_12(self, raw):
        reply = raw.call("queues.create", {"name": "ab"})
        assert (reply.status, reply.subcode) == (400, 12)

    def test_missing_name_is_400_11(self, raw):
        assert raw.call("queues.create", {}).subcode == 11

    def test_duplicate_name_is_400_801(self, raw):
        raw.ok("queues.create", {"name": "twin-queue"})
        reply = raw.call("queues.create", {"name": "twin-queue"})
        assert (reply.status, reply.subcode) == (400, 801)
        assert raw.call("queues.create", {"name": "default"}).subcode == 801


class TestNextTask:
    def test_fifo_order(self, raw, queue, three):
        popped = [raw.ok("queues.get_next_task", {"queue": queue})["entry"]["task"] for _ in range(3)]
        assert popped == three
        assert raw.ok("queues.get_next_task", {"queue": queue}) == {}

    def test_entry_has_added(self, raw, queue, three):
        entry = raw.ok("queues.get_next_task", {"queue": queue})["entry"]
        assert set(entry) == {"task", "added"}

    def test_empty_queue_is_200_with_empty_data(self, raw, queue):
        reply = raw.call("queues.get_next_task", {"queue": queue})
        assert reply.status == 200
        assert reply.data == {}

    def test_unknown_queue_is_400_701(self, raw):
        reply = raw.call("queues.get_next_task", {"queue": "0" * 32})
        assert (reply.status, reply.subcode) == (400, 701)

    def test_pop_does_not_change_status(self, raw, queue):
        task = raw.new_task("enqueued task")
        raw.ok("tasks.enqueue", {"task": task, "queue": queue})
        raw.ok("queues.get_next_task", {"queue": queue})
        assert raw.ok("tasks.get_by_id", {"task": task})["task"]["status"] == "queued"

    def test_popped_stopped_task_is_requeued(self, raw, queue):
        task = raw.new_task("raced task")
        raw.ok("tasks.stopped", {"task": task, "force": True})
        raw.ok("queues.add_task", {"queue": queue, "task": task})
        assert raw.ok("queues.get_next_task", {"queue": queue})["entry"]["task"] == task
        assert raw.ok("tasks.get_by_id", {"task": task})["task"]["status"] == "queued"

    def test_task_pops_only_if_first(self, raw, queue, three):
        assert raw.ok("queues.get_next_task", {"queue": queue, "task": three[1]}) == {}
        assert entries(raw, queue) == three
        data = raw.ok("queues.get_next_task", {"queue": queue, "task": three[0]})
        assert data["entry"]["task"] == three[0]
        assert entries(raw, queue) == three[1:]

    def test_get_task_info(self, raw, server, queue, three):
        data = raw.ok("queues.get_next_task", {"queue": queue, "get_task_info": True})
        assert data["task_info"] == {"company": server.backend.company, "user": server.backend.user}
        assert "task_info" not in raw.ok("queues.get_next_task", {"queue": queue})


class TestLookups:
    def test_get_by_id_unknown_is_701(self, raw):
        assert raw.call("queues.get_by_id", {"queue": "0" * 32}).subcode == 701

    def test_get_by_id_with_a_list_is_701(self, raw, queue):
        assert raw.call("queues.get_by_id", {"queue": [queue]}).subcode == 701

    def test_get_by_id_with_a_name_is_an_error(self, raw, queue):
        # The SDK tries get_by_id first and falls back to a name lookup on error.
        reply = raw.call("queues.get_by_id", {"queue": "work-queue"})
        assert (reply.status, reply.subcode) == (400, 701)

    def test_get_all_by_exact_name(self, raw, queue):
        raw.ok("queues.create", {"name": "other-queue"})
        found = raw.ok("queues.get_all", {"name": "work-queue"})["queues"]
        assert [q["id"] for q in found] == [queue]

    def test_get_all_by_anchored_regex(self, raw, queue):
        raw.ok("queues.create", {"name": "work-queue-2"})
        found = raw.ok("queues.get_all", {"name": "^work-queue$"})["queues"]
        assert [q["id"] for q in found] == [queue]
        assert len(raw.ok("queues.get_all", {"name": "^work-queue"})["queues"]) == 2
        assert raw.ok("queues.get_all", {"name": "^nothing$"})["queues"] == []

    def test_get_all_by_id_list_with_only_fields(self, raw, queue):
        raw.ok("queues.update", {"queue": queue, "tags": ["on"]})
        other = raw.ok("queues.create", {"name": "other-queue"})["id"]
        found = raw.ok("queues.get_all", {"id": [queue, other], "only_fields": ["id", "tags"]})["queues"]
        assert sorted(found, key=lambda q: q["id"]) == sorted(
            [{"id": queue, "tags": ["on"]}, {"id": other, "tags": []}], key=lambda q: q["id"]
        )

    def test_get_all_by_tags(self, raw, queue):
        raw.ok("queues.update", {"queue": queue, "tags": ["gpu"]})
        found = raw.ok("queues.get_all", {"tags": ["gpu"]})["queues"]
        assert [q["id"] for q in found] == [queue]
        found = raw.ok("queues.get_all", {"tags": ["-gpu"]})["queues"]
        assert queue not in {q["id"] for q in found}

    def test_get_all_lists_entries(self, raw, queue, three):
        found = raw.ok("queues.get_all", {"id": [queue]})["queues"]
        assert [e["task"] for e in found[0]["entries"]] == three


class TestUpdateAndDelete:
    def test_update_tags_replaces_the_list(self, raw, queue):
        raw.ok("queues.update", {"queue": queue, "tags": ["a", "b"]})
        data = raw.ok("queues.update", {"queue": queue, "tags": ["c"]})
        assert data["updated"] == 1
        assert raw.ok("queues.get_by_id", {"queue": queue})["queue"]["tags"] == ["c"]

    def test_update_name_must_stay_unique(self, raw, queue):
        assert raw.call("queues.update", {"queue": queue, "name": "default"}).subcode == 801
        raw.ok("queues.update", {"queue": queue, "name": "renamed-queue"})
        assert raw.ok("queues.get_by_id", {"queue": queue})["queue"]["name"] == "renamed-queue"

    def test_delete_empty(self, raw, queue):
        assert raw.ok("queues.delete", {"queue": queue})["deleted"] == 1
        assert raw.call("queues.get_by_id", {"queue": queue}).subcode == 701

    def test_delete_non_empty_needs_force(self, raw, queue, three):
        reply = raw.call("queues.delete", {"queue": queue})
        assert (reply.status, reply.subcode) == (400, 702)
        assert entries(raw, queue) == three
        raw.ok("queues.delete", {"queue": queue, "force": True})
        assert raw.call("queues.get_by_id", {"queue": queue}).subcode == 701

    def test_delete_unknown(self, raw):
        assert raw.call("queues.delete", {"queue": "0" * 32}).subcode == 701


class TestEntries:
    def test_add_task_sets_execution_queue_not_status(self, raw, queue):
        task = raw.new_task("added directly")
        raw.ok("queues.add_task", {"queue": queue, "task": task})
        doc = raw.ok("tasks.get_by_id", {"task": task})["task"]
        assert doc["execution"]["queue"] == queue
        assert doc["status"] == "created"

    def test_add_task_twice_is_706(self, raw, queue, three):
        reply = raw.call("queues.add_task", {"queue": queue, "task": three[0]})
        assert (reply.status, reply.subcode) == (400, 706)
        assert entries(raw, queue) == three

    def test_add_task_unknown_queue_or_task(self, raw, queue):
        task = raw.new_task("lonely task")
        assert raw.call("queues.add_task", {"queue": "0" * 32, "task": task}).subcode == 701
        assert raw.call("queues.add_task", {"queue": queue, "task": "0" * 32}).subcode == 101

    def test_remove_task(self, raw, queue, three):
        assert raw.ok("queues.remove_task", {"queue": queue, "task": three[1]}) == {"removed": 1}
        assert entries(raw, queue) == [three[0], three[2]]

    def test_remove_task_not_queued_is_703(self, raw, queue, three):
        other = raw.new_task("not queued")
        reply = raw.call("queues.remove_task", {"queue": queue, "task": other})
        assert (reply.status, reply.subcode) == (400, 703)

    def test_remove_task_with_update_task_status(self, raw, queue):
        task = raw.new_task("restore me")
        raw.ok("tasks.enqueue", {"task": task, "queue": queue})
        raw.ok("queues.remove_task", {"queue": queue, "task": task, "update_task_status": True})
        assert raw.ok("tasks.get_by_id", {"task": task})["task"]["status"] == "created"

    def test_move_to_front_and_back(self, raw, queue, three):
        a, b, c = three
        assert raw.ok("queues.move_task_to_front", {"queue": queue, "task": c}) == {"position": 0}
        assert entries(raw, queue) == [c, a, b]
        assert raw.ok("queues.move_task_to_back", {"queue": queue, "task": c}) == {"position": 2}
        assert entries(raw, queue) == [a, b, c]
        assert raw.ok("queues.get_next_task", {"queue": queue})["entry"]["task"] == a

    def test_move_forward_and_backward(self, raw, queue, three):
        a, b, c = three
        raw.ok("queues.move_task_forward", {"queue": queue, "task": c})
        assert entries(raw, queue) == [a, c, b]
        raw.ok("queues.move_task_backward", {"queue": queue, "task": a, "count": 5})
        assert entries(raw, queue) == [c, b, a]

    def test_move_task_not_queued_is_703(self, raw, queue):
        task = raw.new_task("not here")
        assert raw.call("queues.move_task_to_front", {"queue": queue, "task": task}).subcode == 703

    def test_add_after_move_goes_to_the_back(self, raw, queue, three):
        raw.ok("queues.move_task_to_front", {"queue": queue, "task": three[2]})
        late = raw.new_task("late comer")
        raw.ok("queues.add_task", {"queue": queue, "task": late})
        assert entries(raw, queue) == [three[2], three[0], three[1], late]

    def test_num_entries_and_peek(self, raw, queue, three):
        assert raw.ok("queues.get_num_entries", {"queue": queue}) == {"num": 3}
        assert raw.ok("queues.peek_task", {"queue": queue}) == {"task": three[0]}
        assert entries(raw, queue) == three  # peek does not pop
        assert raw.ok("queues.clear_queue", {"queue": queue}, version="2.31") == {"removed_tasks": three}
        assert raw.call("queues.clear_queue", {"queue": queue}, version="2.30").status == 404
        assert raw.ok("queues.get_num_entries", {"queue": queue}) == {"num": 0}
        assert raw.ok("queues.peek_task", {"queue": queue}) == {}
