"""Acceptance: a restarted embedded server still has its tasks, statuses, logs, queues, keys and tokens."""

from __future__ import annotations

import os
import stat

from notebook_agent.server import EmbeddedServer
from tests.conftest import RawClient


def test_restart_keeps_everything(tmp_path, clock):
    data_dir = tmp_path / "server"
    first = EmbeddedServer(data_dir, clock=clock).start()
    raw = RawClient(first)
    task_id = raw.new_task("survives restarts")
    queue_id = raw.ok("queues.create", {"name": "persistent queue"})["id"]
    other = raw.new_task("still queued")
    raw.ok("tasks.enqueue", {"task": other, "queue": queue_id})
    raw.ok("tasks.started", {"task": task_id})
    raw.ok(
        "events.add_batch",
        lines=[{"type": "log", "task": task_id, "msg": f"line {i}", "level": "info"} for i in range(5)],
    )
    raw.ok("tasks.completed", {"task": task_id})
    raw.ok("workers.register", {"worker": "host:cpu:0"})
    raw.ok(
        "workers.set_runtime_properties",
        {"worker": "host:cpu:0", "runtime_properties": [{"key": "force", "value": "on"}]},
    )
    token = raw.token()
    keys = first.credentials
    first.stop()

    second = EmbeddedServer(data_dir, clock=clock).start()
    try:
        assert second.credentials == keys
        again = RawClient(second)
        again._token = token  # a token issued before the restart is still valid
        task = again.ok("tasks.get_by_id", {"task": task_id})["task"]
        assert task["status"] == "completed"
        log = again.ok("events.get_task_log", {"task": task_id, "order": "asc"})
        assert [e["msg"] for e in log["events"]] == [f"line {i}" for i in range(5)]
        queue = again.ok("queues.get_by_id", {"queue": queue_id})["queue"]
        assert [e["task"] for e in queue["entries"]] == [other]
        props = again.ok("workers.get_runtime_properties", {"worker": "host:cpu:0"})["runtime_properties"]
        assert props == [{"key": "force", "value": "on", "expiry": None}]
        # Exactly one default queue, however many restarts.
        defaults = again.ok("queues.get_all", {"system_tags": ["default"]})["queues"]
        assert len(defaults) == 1
        assert stat.S_IMODE(os.stat(second.config_file).st_mode) == 0o600
    finally:
        second.stop()


def test_given_keys_are_used_and_written(tmp_path):
    with EmbeddedServer(tmp_path / "s", access_key="MYACCESSKEY", secret_key="my-secret-key-value") as server:
        conf = server.config_file.read_text()
        assert "MYACCESSKEY" in conf and "my-secret-key-value" in conf
        assert "my-secret-key-value" not in repr(server) and "my-secret-key-value" not in repr(server.credentials)
        raw = RawClient(server)
        assert raw.call("auth.login", version=None, authorization=raw.basic).status == 200
