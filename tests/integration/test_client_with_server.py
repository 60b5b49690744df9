"""Our REST client, configured from the embedded server's clearml.conf, drives a task's whole life on it."""

from __future__ import annotations

import time

import pytest

from notebook_agent import api
from notebook_agent.api import Codes, Session
from notebook_agent.config import load_config


@pytest.fixture
def session(server):
    config = load_config(server.config_file, env={})
    assert config.api.configured
    with Session.from_config(config.api, worker="client-host:cpu:0") as sess:
        yield sess


def test_task_lifecycle_through_the_client(session):
    assert session.api_at_least("2.23")
    project = api.projects.get_or_create(session, "client project")
    assert api.projects.get_or_create(session, "client project") == project
    queue = api.queues.create(session, "client queue")
    assert api.queues.find_by_name(session, "client queue")["id"] == queue

    task = api.tasks.create(session, "client task", "training", project=project, script={"entry_point": "x.py"})
    api.tasks.enqueue(session, task, queue=queue)
    api.workers.register(session, "client-host:cpu:0", queues=[queue])
    entry = api.queues.get_next_task(session, queue)
    assert entry is not None and entry.task == task
    assert api.queues.get_next_task(session, queue) is None

    api.tasks.started(session, task, force=True, status_message="pulled by agent")
    api.workers.status_report(
        session,
        "client-host:cpu:0",
        int(time.time() * 1000),
        task=task,
        queue=queue,
        machine_stats={"cpu_usage": [12.5], "memory_used": 1024.4, "memory_free": 2048, "disk_free_home": 50.0},
    )
    api.events.add_batch(
        session, [api.events.log_event(task, f"line {i}", worker="client-host:cpu:0") for i in range(3)]
    )
    api.tasks.ping(session, task)
    api.tasks.completed(session, task, status_reason="worker execution done")

    assert api.tasks.get_status(session, task) == ("completed", "")
    log = api.events.get_task_log(session, task, order="asc")
    assert [e["msg"] for e in log["events"]] == ["line 0", "line 1", "line 2"]
    (worker,) = [w for w in api.workers.get_all(session) if w["id"] == "client-host:cpu:0"]
    assert worker["task"]["id"] == task
    assert [q["name"] for q in worker["queues"]] == ["client queue"]
    api.workers.unregister(session, "client-host:cpu:0")


def test_typed_errors_from_the_server(session):
    with pytest.raises(api.APIError) as info:
        api.tasks.get_by_id(session, "no-such-task")
    assert info.value.is_(Codes.INVALID_TASK_ID)
    assert info.value.endpoint == "tasks.get_by_id"
    task = api.tasks.create(session, "never started", "training")
    with pytest.raises(api.APIError) as info:
        api.tasks.completed(session, task)
    assert info.value.is_(Codes.INVALID_TASK_STATUS)


def test_client_logs_in_again_after_server_restart_with_new_token(server, session):
    api.queues.get_default(session)
    # The token survives a restart (the signing secret persists), and a forced re-login works too.
    server.stop()
    server.start()
    session.base_url = server.url  # the port may change with port=0
    assert api.queues.get_default(session)["name"] == "default"
