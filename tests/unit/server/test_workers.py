"""`workers.*` of the embedded server: registration, status reports, liveness and runtime properties."""

from __future__ import annotations

import time

import pytest

WORKER = "host:gpu0"


def now_ms() -> int:
    return int(time.time()) * 1000  # what the agent sends


def workers(raw) -> dict[str, dict]:
    return {w["id"]: w for w in raw.ok("workers.get_all")["workers"]}


class TestRegister:
    def test_register_with_unknown_queue_is_701(self, raw):
        reply = raw.call("workers.register", {"worker": WORKER, "queues": ["0" * 32]})
        assert (reply.status, reply.subcode) == (400, 701)
        assert WORKER not in workers(raw)

    def test_register_needs_worker(self, raw):
        assert raw.call("workers.register", {}).subcode == 11

    def test_registered_worker_in_get_all(self, raw, server):
        queue = raw.default_queue()
        task = raw.new_task("waiting task")
        raw.ok("tasks.enqueue", {"task": task, "queue": queue})
        assert raw.ok("workers.register", {"worker": WORKER, "queues": [queue], "tags": ["t1"]}) == {}
        worker = workers(raw)[WORKER]
        assert worker["queues"] == [
            {
                "id": queue,
                "name": "default",
                "display_name": "default",
                "num_tasks": 1,
                "next_task": {"id": task, "name": "waiting task"},
            }
        ]
        assert worker["user"] == {"id": server.backend.user, "name": server.backend.identity.user_name}
        assert worker["company"] == {"id": server.backend.company, "name": server.backend.identity.company_name}
        assert worker["tags"] == ["t1"]
        assert worker["register_time"]
        assert worker["last_activity_time"]
        assert worker["ip"]

    def test_register_again_updates(self, raw):
        queue = raw.default_queue()
        raw.ok("workers.register", {"worker": WORKER})
        assert workers(raw)[WORKER]["queues"] == []
        raw.ok("workers.register", {"worker": WORKER, "queues": [queue]})
        assert [q["id"] for q in workers(raw)[WORKER]["queues"]] == [queue]
        assert len(workers(raw)) == 1

    def test_unregister(self, raw):
        raw.ok("workers.register", {"worker": WORKER})
        assert raw.ok("workers.unregister", {"worker": WORKER}) == {}
        assert WORKER not in workers(raw)

    def test_unregister_unknown_is_ignored(self, raw):
        assert raw.ok("workers.unregister", {"worker": "never-registered"}) == {}


class TestStatusReport:
    @pytest.fixture(autouse=True)
    def registered(self, raw):
        raw.ok("workers.register", {"worker": WORKER})

    def test_status_report_keeps_a_registered_worker(self, raw):
        assert raw.ok("workers.status_report", {"worker": WORKER, "timestamp": now_ms()}) == {}
        assert WORKER in workers(raw)

    def test_status_report_of_an_unknown_worker_is_1001(self, raw):
        # Like the real server without auto_register: the agent then registers again.
        reply = raw.call("workers.status_report", {"worker": "never-registered", "timestamp": now_ms()})
        assert (reply.status, reply.subcode) == (400, 1001)
        assert "never-registered" not in workers(raw)

    def test_status_report_after_the_registration_expired_is_1001(self, raw, clock):
        raw.ok("workers.register", {"worker": WORKER, "timeout": 60})
        clock.advance(61)
        reply = raw.call("workers.status_report", {"worker": WORKER, "timestamp": now_ms()})
        assert (reply.status, reply.subcode) == (400, 1001)
        raw.ok("workers.register", {"worker": WORKER, "timeout": 60})
        assert raw.ok("workers.status_report", {"worker": WORKER, "timestamp": now_ms()}) == {}

    def test_status_report_with_task_sets_last_worker(self, raw, clock):
        task = raw.new_task("running task")
        raw.ok("tasks.started", {"task": task})
        before = raw.ok("tasks.get_by_id", {"task": task})["task"]["last_update"]
        clock.advance(5)
        raw.ok("workers.status_report", {"worker": WORKER, "timestamp": now_ms(), "task": task})
        doc = raw.ok("tasks.get_by_id", {"task": task})["task"]
        assert doc["last_worker"] == WORKER
        assert doc["last_worker_report"]
        assert doc["last_update"] > before
        worker = workers(raw)[WORKER]
        assert worker["task"]["id"] == task
        assert worker["task"]["name"] == "running task"
        assert worker["task"]["running_time"] >= 5000

    def test_status_report_without_task_clears_it(self, raw):
        task = raw.new_task("running task")
        raw.ok("workers.status_report", {"worker": WORKER, "timestamp": now_ms(), "task": task})
        raw.ok("workers.status_report", {"worker": WORKER, "timestamp": now_ms()})
        assert "task" not in workers(raw)[WORKER]

    def test_status_report_with_unknown_task_is_101(self, raw):
        reply = raw.call("workers.status_report", {"worker": WORKER, "timestamp": now_ms(), "task": "0" * 32})
        assert (reply.status, reply.subcode) == (400, 101)

    def test_status_report_keeps_queues_when_absent(self, raw):
        queue = raw.default_queue()
        raw.ok("workers.register", {"worker": WORKER, "queues": [queue]})
        raw.ok("workers.status_report", {"worker": WORKER, "timestamp": now_ms()})
        assert [q["id"] for q in workers(raw)[WORKER]["queues"]] == [queue]
        raw.ok("workers.status_report", {"worker": WORKER, "timestamp": now_ms(), "queues": []})
        assert workers(raw)[WORKER]["queues"] == []

    def test_machine_stats_are_stored(self, raw, server):
        stats = {"cpu_usage": [12.5], "memory_used": 1024.0, "gpu_usage": [50.0, 10.0], "disk_free_home": 40.0}
        raw.ok("workers.status_report", {"worker": WORKER, "timestamp": now_ms(), "machine_stats": stats})
        assert server.backend.store.get("worker", WORKER)["machine_stats"] == stats


class TestLiveness:
    def test_worker_gone_after_its_timeout(self, raw, clock):
        raw.ok("workers.register", {"worker": WORKER, "timeout": 60})
        raw.ok("workers.register", {"worker": "long-lived", "timeout": 600})
        clock.advance(30)
        assert set(workers(raw)) == {WORKER, "long-lived"}
        clock.advance(90)
        assert set(workers(raw)) == {"long-lived"}

    def test_report_keeps_worker_alive(self, raw, clock):
        raw.ok("workers.register", {"worker": WORKER, "timeout": 60})
        for _ in range(3):
            clock.advance(45)
            raw.ok("workers.status_report", {"worker": WORKER, "timestamp": now_ms()})
        assert WORKER in workers(raw)

    def test_last_seen_limits_get_all(self, raw, clock):
        raw.ok("workers.register", {"worker": WORKER})
        clock.advance(100)
        assert WORKER in workers(raw)
        assert raw.ok("workers.get_all", {"last_seen": 50})["workers"] == []


class TestRuntimeProperties:
    def test_new_worker_has_none(self, raw):
        raw.ok("workers.register", {"worker": WORKER})
        assert raw.ok("workers.get_runtime_properties", {"worker": WORKER}) == {"runtime_properties": []}

    def test_unknown_worker_has_none(self, raw):
        assert raw.ok("workers.get_runtime_properties", {"worker": "nobody"}) == {"runtime_properties": []}

    def test_not_served_below_2_10(self, raw):
        assert raw.call("workers.get_runtime_properties", {"worker": WORKER}, version="2.5").status == 404

    def test_set_then_get(self, raw):
        raw.ok("workers.register", {"worker": WORKER})
        props = [{"key": "k8s-pod", "value": "abc"}, {"key": "gpus", "value": "0,1"}]
        assert raw.ok("workers.set_runtime_properties", {"worker": WORKER, "runtime_properties": props}) == {}
        got = raw.ok("workers.get_runtime_properties", {"worker": WORKER})["runtime_properties"]
        want = [{**p, "expiry": None} for p in props]  # expiry: seconds left, None when there is none
        assert sorted(got, key=lambda p: p["key"]) == sorted(want, key=lambda p: p["key"])
        raw.ok(
            "workers.set_runtime_properties",
            {"worker": WORKER, "runtime_properties": [{"key": "gpus", "value": "2"}]},
        )
        got = {
            p["key"]: p["value"]
            for p in raw.ok("workers.get_runtime_properties", {"worker": WORKER})["runtime_properties"]
        }
        assert got == {"k8s-pod": "abc", "gpus": "2"}

    def test_expiry(self, raw, clock):
        raw.ok("workers.register", {"worker": WORKER})
        props = [{"key": "short", "value": "1", "expiry": 60}, {"key": "forever", "value": "2"}]
        raw.ok("workers.set_runtime_properties", {"worker": WORKER, "runtime_properties": props})
        clock.advance(30)
        keys = {p["key"] for p in raw.ok("workers.get_runtime_properties", {"worker": WORKER})["runtime_properties"]}
        assert keys == {"short", "forever"}
        clock.advance(60)
        got = raw.ok("workers.get_runtime_properties", {"worker": WORKER})["runtime_properties"]
        assert got == [{"key": "forever", "value": "2", "expiry": None}]

    @pytest.mark.parametrize("props", ["abc", [{"value": "no key"}]])
    def test_bad_properties_are_validation_errors(self, raw, props):
        raw.ok("workers.register", {"worker": WORKER})
        reply = raw.call("workers.set_runtime_properties", {"worker": WORKER, "runtime_properties": props})
        assert (reply.status, reply.subcode) == (400, 12)
