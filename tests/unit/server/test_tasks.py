"""`tasks.*` of the embedded server: the document, queries, edits, the state machine, enqueue and abort."""

from __future__ import annotations

import pytest

TASK_FIELDS = {
    "id",
    "name",
    "type",
    "status",
    "project",
    "script",
    "execution",
    "hyperparams",
    "configuration",
    "models",
    "container",
    "runtime",
    "tags",
    "system_tags",
    "created",
    "last_update",
    "company",
}


def get(raw, task: str) -> dict:
    return raw.ok("tasks.get_by_id", {"task": task})["task"]


def started(raw, name: str = "running task", **fields) -> str:
    task = raw.new_task(name, **fields)
    raw.ok("tasks.started", {"task": task})
    return task


def entries(raw, queue: str) -> list[str]:
    return [e["task"] for e in raw.ok("queues.get_by_id", {"queue": queue})["queue"]["entries"]]


class TestCreate:
    def test_created_task_has_full_document(self, raw, server):
        task = raw.new_task("full document")
        assert len(task) == 32
        doc = get(raw, task)
        assert set(doc) >= TASK_FIELDS
        assert doc["id"] == task
        assert doc["name"] == "full document"
        assert doc["type"] == "training"
        assert doc["status"] == "created"
        assert set(doc["models"]) == {"input", "output"}
        assert isinstance(doc["company"], str)
        assert doc["company"] == server.backend.company
        assert doc["tags"] == [] and doc["system_tags"] == []
        assert "enqueue_status" not in doc

    def test_create_stores_given_fields(self, raw):
        project = raw.ok("projects.create", {"name": "my project"})["id"]
        fields = {
            "project": project,
            "tags": ["a"],
            "system_tags": ["development"],
            "comment": "hello",
            "script": {"repository": "https://example.com/r.git", "entry_point": "train.py"},
            "execution": {"parameters": {}, "artifacts": []},
            "hyperparams": {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1"}}},
            "configuration": {"cfg": {"name": "cfg", "value": "x: 1", "type": "yaml"}},
            "container": {"image": "python:3.11"},
            "output_dest": "file:///tmp/out",
        }
        doc = get(raw, raw.new_task("with fields", **fields))
        for key in ("project", "tags", "system_tags", "comment", "script", "hyperparams", "configuration", "container"):
            assert doc[key] == fields[key], key
        assert doc["output"]["destination"] == "file:///tmp/out"

    @pytest.mark.parametrize("name", ["ab", "  x  ", 123])
    def test_short_name_is_validation_error(self, raw, name):
        reply = raw.call("tasks.create", {"name": name, "type": "training"})
        assert (reply.status, reply.subcode) == (400, 12)

    def test_bad_type_is_validation_error(self, raw):
        reply = raw.call("tasks.create", {"name": "bad type", "type": "not-a-type"})
        assert (reply.status, reply.subcode) == (400, 12)

    def test_unknown_project_is_401(self, raw):
        reply = raw.call("tasks.create", {"name": "no project", "type": "training", "project": "f" * 32})
        assert (reply.status, reply.subcode) == (400, 401)

    @pytest.mark.parametrize("data", [{"type": "training"}, {"name": "", "type": "training"}, {"name": "no type"}])
    def test_missing_required_field_is_400_11(self, raw, data):
        reply = raw.call("tasks.create", data)
        assert (reply.status, reply.subcode) == (400, 11)

    def test_get_by_id_unknown_is_400_101(self, raw):
        reply = raw.call("tasks.get_by_id", {"task": "0" * 32})
        assert (reply.status, reply.subcode) == (400, 101)


class TestEdit:
    def test_edit_non_created_needs_force(self, raw):
        task = started(raw)
        reply = raw.call("tasks.edit", {"task": task, "comment": "nope"})
        assert (reply.status, reply.subcode) == (400, 110)
        assert get(raw, task)["comment"] == ""
        data = raw.ok("tasks.edit", {"task": task, "comment": "forced", "force": True})
        assert data["updated"] == 1
        assert get(raw, task)["comment"] == "forced"

    def test_edit_merges_script_and_replaces_hyperparams(self, raw):
        task = raw.new_task(
            "merge me",
            script={"repository": "repo", "branch": "main", "requirements": {"pip": "a"}},
            hyperparams={"Args": {"a": {"section": "Args", "name": "a", "value": "1"}}},
        )
        raw.ok(
            "tasks.edit",
            {
                "task": task,
                "script": {"branch": "dev", "requirements": {"conda": "b"}},
                "hyperparams": {"General": {"b": {"section": "General", "name": "b", "value": "2"}}},
            },
        )
        doc = get(raw, task)
        # one level deep: top-level keys merge, a nested object is replaced whole
        assert doc["script"] == {"repository": "repo", "branch": "dev", "requirements": {"conda": "b"}}
        assert doc["hyperparams"] == {"General": {"b": {"section": "General", "name": "b", "value": "2"}}}

    def test_edit_validates_fields(self, raw):
        task = raw.new_task("validated")
        assert raw.call("tasks.edit", {"task": task, "name": "no"}).subcode == 12
        assert raw.call("tasks.edit", {"task": task, "type": "bogus"}).subcode == 12
        assert raw.call("tasks.edit", {"task": task, "project": "1" * 32}).subcode == 401
        assert get(raw, task)["name"] == "validated"

    def test_edit_unknown_task_is_400_101(self, raw):
        reply = raw.call("tasks.edit", {"task": "0" * 32, "comment": "x"})
        assert (reply.status, reply.subcode) == (400, 101)

    def test_edit_runtime_with_force(self, raw):
        task = started(raw)
        raw.ok("tasks.edit", {"task": task, "force": True, "runtime": {"_abort_callback_x": "1"}})
        assert get(raw, task)["runtime"] == {"_abort_callback_x": "1"}


class TestGetAll:
    @pytest.fixture
    def tasks(self, raw, clock):
        ids = {}
        for name in ("alpha task", "beta task", "gamma task"):
            ids[name] = raw.new_task(name)
            clock.advance(1)  # distinct `created`
        raw.ok("tasks.started", {"task": ids["beta task"]})
        return ids

    def test_by_id_list(self, raw, tasks):
        wanted = [tasks["alpha task"], tasks["gamma task"]]
        found = raw.ok("tasks.get_all", {"id": wanted})["tasks"]
        assert sorted(t["id"] for t in found) == sorted(wanted)

    def test_by_name_regex(self, raw, tasks):
        found = raw.ok("tasks.get_all", {"name": "^beta task$"})["tasks"]
        assert [t["id"] for t in found] == [tasks["beta task"]]
        assert raw.ok("tasks.get_all", {"name": "^beta$"})["tasks"] == []
        found = raw.ok("tasks.get_all", {"name": "a task$"})["tasks"]
        assert {t["name"] for t in found} == {"alpha task", "beta task", "gamma task"}

    def test_invalid_regex_is_validation_error(self, raw, tasks):
        assert raw.call("tasks.get_all", {"name": "(unclosed"}).subcode == 12

    def test_by_status_list(self, raw, tasks):
        found = raw.ok("tasks.get_all", {"status": ["in_progress"]})["tasks"]
        assert [t["id"] for t in found] == [tasks["beta task"]]
        found = raw.ok("tasks.get_all", {"status": ["created", "in_progress"]})["tasks"]
        assert len(found) == 3
        found = raw.ok("tasks.get_all", {"status": ["-in_progress"]})["tasks"]
        assert tasks["beta task"] not in {t["id"] for t in found}
        assert len(found) == 2

    def test_only_fields_with_dotted_paths(self, raw, tasks):
        task = tasks["alpha task"]
        raw.ok("tasks.edit", {"task": task, "script": {"repository": "r", "branch": "b"}})
        found = raw.ok(
            "tasks.get_all", {"id": [task], "only_fields": ["status", "script.repository", "execution.queue"]}
        )["tasks"]
        assert found == [{"id": task, "status": "created", "script": {"repository": "r"}}]

    def test_hidden_excluded_unless_search_hidden(self, raw, tasks):
        hidden = raw.new_task("hidden task", system_tags=["hidden"])
        assert hidden not in {t["id"] for t in raw.ok("tasks.get_all", {})["tasks"]}
        assert hidden in {t["id"] for t in raw.ok("tasks.get_all", {"search_hidden": True})["tasks"]}
        # asking by id finds it too
        assert [t["id"] for t in raw.ok("tasks.get_all", {"id": [hidden]})["tasks"]] == [hidden]

    def test_order_by_and_paging(self, raw, tasks):
        newest_first = ["gamma task", "beta task", "alpha task"]
        found = raw.ok("tasks.get_all", {"order_by": ["-created"], "only_fields": ["name"]})["tasks"]
        assert [t["name"] for t in found] == newest_first
        pages = [
            raw.ok("tasks.get_all", {"order_by": ["-created"], "page": page, "page_size": 2, "only_fields": ["name"]})[
                "tasks"
            ]
            for page in range(3)
        ]
        assert [[t["name"] for t in p] for p in pages] == [newest_first[:2], newest_first[2:], []]
        found = raw.ok("tasks.get_all", {"order_by": ["name"], "only_fields": ["name"]})["tasks"]
        assert [t["name"] for t in found] == sorted(newest_first)

    def test_bad_page_size_is_validation_error(self, raw, tasks):
        assert raw.call("tasks.get_all", {"page": 0, "page_size": "many"}).subcode == 12

    def test_filter_by_system_tags_and_created_range(self, raw, tasks):
        later = raw.new_task("later task", system_tags=["development"])
        found = raw.ok("tasks.get_all", {"system_tags": ["development"]})["tasks"]
        assert [t["id"] for t in found] == [later]
        created = get(raw, later)["created"]
        found = raw.ok("tasks.get_all", {"created": [">=" + created]})["tasks"]
        assert [t["id"] for t in found] == [later]


class TestSmallUpdates:
    def test_set_requirements_in_any_status(self, raw):
        task = started(raw)
        requirements = {"pip": "numpy==1.26\n", "org_pip": "numpy\n"}
        data = raw.ok("tasks.set_requirements", {"task": task, "requirements": requirements})
        assert data["fields"]["script.requirements"] == requirements
        assert get(raw, task)["script"]["requirements"] == requirements

    def test_set_requirements_needs_an_object(self, raw):
        task = raw.new_task("reqs")
        assert raw.call("tasks.set_requirements", {"task": task, "requirements": "numpy"}).subcode == 12
        assert raw.call("tasks.set_requirements", {"task": task}).subcode == 11

    def test_ping_updates_last_update(self, raw, clock):
        task = started(raw)
        before = get(raw, task)["last_update"]
        clock.advance(30)
        assert raw.ok("tasks.ping", {"task": task}) == {}
        assert get(raw, task)["last_update"] > before

    def test_ping_unknown_task(self, raw):
        assert raw.call("tasks.ping", {"task": "0" * 32}).subcode == 101


class TestClone:
    def test_clone_is_a_new_created_task(self, raw):
        queue = raw.default_queue()
        source = raw.new_task("original", script={"repository": "r"}, tags=["t"])
        raw.ok("tasks.enqueue", {"task": source, "queue": queue})
        raw.ok("tasks.started", {"task": source, "force": True})
        data = raw.ok("tasks.clone", {"task": source, "new_task_name": "the clone"})
        clone = get(raw, data["id"])
        assert data["id"] != source
        assert clone["status"] == "created"
        assert clone["name"] == "the clone"
        assert clone["script"] == {"repository": "r"}
        assert clone["tags"] == ["t"]
        assert "queue" not in clone["execution"]
        assert "started" not in clone
        assert get(raw, source)["status"] == "in_progress"

    def test_clone_keeps_name_without_override(self, raw):
        source = raw.new_task("keep my name")
        clone = get(raw, raw.ok("tasks.clone", {"task": source})["id"])
        assert clone["name"] == "keep my name"

    def test_clone_unknown_task(self, raw):
        assert raw.call("tasks.clone", {"task": "0" * 32}).subcode == 101


class TestStateMachine:
    def test_created_to_completed_is_invalid(self, raw):
        task = raw.new_task("state machine")
        reply = raw.call("tasks.completed", {"task": task})
        assert (reply.status, reply.subcode) == (400, 110)
        assert get(raw, task)["status"] == "created"

    def test_created_started_completed(self, raw):
        task = raw.new_task("state machine")
        data = raw.ok("tasks.started", {"task": task})
        assert data["started"] == 1
        assert data["fields"]["status"] == "in_progress"
        doc = get(raw, task)
        assert doc["status"] == "in_progress"
        assert doc["started"]
        raw.ok("tasks.completed", {"task": task, "status_reason": "worker execution done"})
        doc = get(raw, task)
        assert doc["status"] == "completed"
        assert doc["status_reason"] == "worker execution done"

    def test_completed_to_failed_is_invalid(self, raw):
        task = started(raw)
        raw.ok("tasks.completed", {"task": task})
        assert raw.call("tasks.failed", {"task": task}).subcode == 110
        assert get(raw, task)["status"] == "completed"

    def test_force_skips_the_check(self, raw):
        task = raw.new_task("state machine")
        raw.ok("tasks.completed", {"task": task, "force": True})
        assert get(raw, task)["status"] == "completed"
        raw.ok("tasks.failed", {"task": task, "force": True})
        assert get(raw, task)["status"] == "failed"

    def test_same_status_is_allowed(self, raw):
        task = started(raw)
        raw.ok("tasks.started", {"task": task})
        assert get(raw, task)["status"] == "in_progress"

    @pytest.mark.parametrize("call,status", [("tasks.failed", "failed"), ("tasks.stopped", "stopped")])
    def test_failed_and_stopped_set_completed(self, raw, call, status):
        task = started(raw)
        assert "completed" not in get(raw, task) or get(raw, task)["completed"] is None
        raw.ok(call, {"task": task, "status_reason": "why"})
        doc = get(raw, task)
        assert doc["status"] == status
        assert doc["completed"]
        assert doc["status_reason"] == "why"

    def test_started_clears_completed(self, raw):
        task = started(raw)
        raw.ok("tasks.completed", {"task": task})
        raw.ok("tasks.started", {"task": task})
        assert get(raw, task)["completed"] is None

    @pytest.mark.parametrize("call", ["tasks.stopped", "tasks.failed"])
    def test_stopped_and_failed_rejected_from_created(self, raw, call):
        task = raw.new_task("state machine")
        assert raw.call(call, {"task": task}).subcode == 110

    def test_published_is_final(self, raw):
        task = started(raw)
        raw.ok("tasks.completed", {"task": task})
        raw.ok("tasks.publish", {"task": task})
        assert get(raw, task)["status"] == "published"
        assert raw.call("tasks.started", {"task": task}).subcode == 110


class TestEnqueue:
    def test_enqueue_from_created(self, raw):
        queue = raw.default_queue()
        task = raw.new_task("to enqueue", system_tags=["development", "keep"])
        data = raw.ok("tasks.enqueue", {"task": task, "queue": queue})
        assert data["queued"] == 1
        assert data["fields"]["status"] == "queued"
        assert data["fields"]["execution.queue"] == queue
        doc = get(raw, task)
        assert doc["status"] == "queued"
        assert doc["execution"]["queue"] == queue
        assert doc["system_tags"] == ["keep"]
        assert entries(raw, queue) == [task]

    def test_enqueue_by_queue_name_creates_the_queue(self, raw):
        task = raw.new_task("by name")
        data = raw.ok("tasks.enqueue", {"task": task, "queue_name": "brand-new"})
        found = raw.ok("queues.get_all", {"name": "^brand-new$"})["queues"]
        assert len(found) == 1
        assert data["fields"]["execution.queue"] == found[0]["id"]
        assert entries(raw, found[0]["id"]) == [task]
        # a second task by the same name reuses it
        other = raw.new_task("by name too")
        raw.ok("tasks.enqueue", {"task": other, "queue_name": "brand-new"})
        assert entries(raw, found[0]["id"]) == [task, other]
        assert len(raw.ok("queues.get_all", {"name": "^brand-new$"})["queues"]) == 1

    def test_enqueue_with_queue_and_queue_name_is_invalid(self, raw):
        task = raw.new_task("both")
        reply = raw.call("tasks.enqueue", {"task": task, "queue": raw.default_queue(), "queue_name": "x-y-z"})
        assert reply.status == 400
        assert get(raw, task)["status"] == "created"

    def test_enqueue_without_queue_uses_default(self, raw):
        task = raw.new_task("default queue")
        data = raw.ok("tasks.enqueue", {"task": task})
        assert data["fields"]["execution.queue"] == raw.default_queue()
        assert entries(raw, raw.default_queue()) == [task]

    def test_enqueue_unknown_queue(self, raw):
        task = raw.new_task("unknown queue")
        assert raw.call("tasks.enqueue", {"task": task, "queue": "0" * 32}).subcode == 701
        assert get(raw, task)["status"] == "created"

    def test_enqueue_completed_needs_force(self, raw):
        queue = raw.default_queue()
        task = started(raw)
        raw.ok("tasks.completed", {"task": task})
        reply = raw.call("tasks.enqueue", {"task": task, "queue": queue})
        assert (reply.status, reply.subcode) == (400, 110)
        assert entries(raw, queue) == []
        raw.ok("tasks.enqueue", {"task": task, "queue": queue, "force": True})
        assert get(raw, task)["status"] == "queued"
        assert entries(raw, queue) == [task]

    def test_enqueue_twice_into_the_same_queue(self, raw):
        queue = raw.default_queue()
        task = raw.new_task("twice")
        raw.ok("tasks.enqueue", {"task": task, "queue": queue})
        before = get(raw, task)
        reply = raw.call("tasks.enqueue", {"task": task, "queue": queue})
        assert (reply.status, reply.subcode) == (400, 706)
        after = get(raw, task)
        assert after["status"] == "queued"
        assert after["status_changed"] == before["status_changed"]
        assert entries(raw, queue) == [task]
        # the status before the first enqueue is still what dequeue restores
        raw.ok("tasks.dequeue", {"task": task})
        assert get(raw, task)["status"] == "created"

    def test_enqueue_into_another_queue_moves_the_task(self, raw):
        first, second = raw.default_queue(), raw.ok("queues.create", {"name": "second"})["id"]
        task = raw.new_task("moving")
        raw.ok("tasks.enqueue", {"task": task, "queue": first})
        raw.ok("tasks.enqueue", {"task": task, "queue": second})
        assert entries(raw, first) == []
        assert entries(raw, second) == [task]
        assert get(raw, task)["execution"]["queue"] == second

    def test_verify_watched_queue(self, raw):
        queue = raw.default_queue()
        first, second = raw.new_task("watch one"), raw.new_task("watch two")
        data = raw.ok("tasks.enqueue", {"task": first, "queue": queue, "verify_watched_queue": True})
        assert data["queue_watched"] is False
        raw.ok("workers.register", {"worker": "watcher", "queues": [queue]})
        data = raw.ok("tasks.enqueue", {"task": second, "queue": queue, "verify_watched_queue": True})
        assert data["queue_watched"] is True

    def test_enqueue_from_failed(self, raw):
        task = started(raw)
        raw.ok("tasks.failed", {"task": task})
        raw.ok("tasks.enqueue", {"task": task})
        assert get(raw, task)["status"] == "queued"


class TestDequeue:
    def test_dequeue_restores_status_before_enqueue(self, raw):
        queue = raw.default_queue()
        task = started(raw)
        raw.ok("tasks.stopped", {"task": task})
        raw.ok("tasks.enqueue", {"task": task, "queue": queue})
        data = raw.ok("tasks.dequeue", {"task": task})
        assert data["dequeued"] == 1
        assert data["fields"]["status"] == "stopped"
        assert get(raw, task)["status"] == "stopped"
        assert entries(raw, queue) == []

    def test_dequeue_created_task_restores_created(self, raw):
        task = raw.new_task("dequeue me")
        raw.ok("tasks.enqueue", {"task": task})
        raw.ok("tasks.dequeue", {"task": task})
        doc = get(raw, task)
        assert doc["status"] == "created"
        assert "enqueue_status" not in doc

    def test_dequeue_not_queued_is_invalid(self, raw):
        task = raw.new_task("dequeue me")
        assert raw.call("tasks.dequeue", {"task": task}).subcode == 110


class TestStop:
    def test_stop_queued_task(self, raw):
        queue = raw.default_queue()
        task = raw.new_task("stop queued")
        raw.ok("tasks.enqueue", {"task": task, "queue": queue})
        data = raw.ok("tasks.stop", {"task": task})
        assert data["fields"]["status"] == "stopped"
        assert get(raw, task)["status"] == "stopped"
        assert entries(raw, queue) == []

    def test_stop_running_task_with_live_worker_asks_it(self, raw):
        task = started(raw)
        raw.ok("workers.register", {"worker": "host:gpu0"})  # status_report wants a registered worker
        raw.ok("workers.status_report", {"worker": "host:gpu0", "timestamp": 1, "task": task})
        raw.ok("tasks.stop", {"task": task})
        doc = get(raw, task)
        assert doc["status"] == "in_progress"
        assert doc["status_message"] == "stopping"
        # the worker then reports the abort
        raw.ok("tasks.stopped", {"task": task, "status_reason": "task was stopped by tasks.stop"})
        assert get(raw, task)["status"] == "stopped"

    def test_stop_running_task_without_worker(self, raw):
        task = started(raw)
        raw.ok("tasks.stop", {"task": task})
        doc = get(raw, task)
        assert doc["status"] == "stopped"
        assert doc["status_message"].startswith("Stopped by")
        assert doc["completed"]

    def test_stop_running_task_whose_worker_went_silent(self, raw, clock):
        task = started(raw)
        raw.ok("workers.register", {"worker": "host:gpu0"})  # status_report wants a registered worker
        raw.ok("workers.status_report", {"worker": "host:gpu0", "timestamp": 1, "task": task})
        clock.advance(700)
        raw.ok("tasks.stop", {"task": task})
        assert get(raw, task)["status"] == "stopped"

    def test_stop_development_task_is_immediate(self, raw):
        task = started(raw, system_tags=["development"])
        raw.ok("workers.register", {"worker": "host:gpu0"})  # status_report wants a registered worker
        raw.ok("workers.status_report", {"worker": "host:gpu0", "timestamp": 1, "task": task})
        raw.ok("tasks.stop", {"task": task})
        assert get(raw, task)["status"] == "stopped"

    def test_stop_created_task_is_invalid(self, raw):
        task = raw.new_task("not running")
        reply = raw.call("tasks.stop", {"task": task})
        assert (reply.status, reply.subcode) == (400, 110)
        assert get(raw, task)["status"] == "created"


class TestReset:
    def test_reset(self, raw):
        queue = raw.default_queue()
        task = started(raw)
        raw.ok("events.add_batch", lines=[{"task": task, "type": "log", "msg": "hello"}])
        raw.ok(
            "events.add_batch",
            lines=[
                {"task": task, "type": "training_stats_scalar", "metric": "m", "variant": "v", "value": 1, "iter": 3}
            ],
        )
        raw.ok("workers.register", {"worker": "w-1"})  # status_report wants a registered worker
        raw.ok("workers.status_report", {"worker": "w-1", "timestamp": 1, "task": task})
        raw.ok("tasks.edit", {"task": task, "force": True, "runtime": {"k": "v"}})
        raw.ok("tasks.stopped", {"task": task})
        raw.ok("tasks.enqueue", {"task": task, "queue": queue})
        data = raw.ok("tasks.reset", {"task": task})
        assert data["fields"]["status"] == "created"
        assert data["events"]["deleted"] == 2
        doc = get(raw, task)
        assert doc["status"] == "created"
        assert doc["status_reason"] == "reset"
        assert doc["runtime"] == {}
        assert doc["last_iteration"] == 0
        assert doc["last_metrics"] == {}
        assert "queue" not in doc["execution"]
        for key in ("started", "completed", "last_worker"):
            assert not doc.get(key), key
        assert entries(raw, queue) == []
        assert raw.ok("events.get_task_log", {"task": task})["total"] == 0

    def test_reset_keeps_script_unless_clear_all(self, raw):
        task = raw.new_task("keep script", script={"repository": "r"})
        raw.ok("tasks.reset", {"task": task})
        assert get(raw, task)["script"] == {"repository": "r"}
        raw.ok("tasks.reset", {"task": task, "clear_all": True})
        assert not get(raw, task).get("script")

    def test_reset_published_needs_force(self, raw):
        task = raw.new_task("published")
        raw.ok("tasks.publish", {"task": task, "force": True})
        assert raw.call("tasks.reset", {"task": task}).subcode == 110
        raw.ok("tasks.reset", {"task": task, "force": True})
        assert get(raw, task)["status"] == "created"
