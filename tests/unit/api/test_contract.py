"""Every helper's request body validates against the real SDK's (clearml 2.1.12) v2.23 request schemas."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from notebook_agent.api import API_VERSION, events, projects, queues, tasks, workers

from .conftest import RecordingSender

pytest.importorskip("clearml.backend_api.services.v2_23")

SERVICES = (queues, tasks, workers, events, projects)
BUILDERS = {"workers.machine_stats_body", "events.log_event"}  # no call of their own; checked via their users
OPEN_SCHEMAS = {"tasks.get_all"}  # any task field works as a filter there (no additionalProperties:false)
NOT_IN_OSS = {"workers.get_runtime_properties", "workers.set_runtime_properties"}  # enterprise-only calls
EVENT_CLASSES = {"log": "TaskLogEvent", "training_stats_scalar": "MetricsScalarEvent"}

ANSWERS: dict[str, Any] = {
    "queues.get_all": {"queues": [{"id": "q1", "name": "default"}]},
    "queues.get_by_id": {"queue": {"id": "q1", "name": "default"}},
    "queues.get_default": {"id": "q1", "name": "default"},
    "queues.create": {"id": "q2"},
    "queues.get_next_task": {"entry": {"task": "t1", "added": "2026-01-01T00:00:00+00:00"}},
    "tasks.get_by_id": {"task": {"id": "t1", "status": "created"}},
    "tasks.get_all": {"tasks": [{"id": "t1", "status": "in_progress", "status_message": "stopping"}]},
    "tasks.create": {"id": "t2"},
    "tasks.clone": {"id": "t3"},
    "workers.get_all": {"workers": [{"id": "w"}]},
    "workers.get_runtime_properties": {"runtime_properties": [{"key": "k", "value": "v"}]},
    "events.add_batch": {"added": 1, "errors": 0},
    "events.get_task_log": {"events": [], "returned": 0, "total": 0},
    "projects.get_all": {"projects": [{"id": "p1", "name": "proj"}]},
    "projects.create": {"id": "p2"},
}

SCRIPT = {
    "binary": "python3",
    "repository": "",
    "branch": "",
    "version_num": "",
    "entry_point": "train.py",
    "working_dir": ".",
    "requirements": {"pip": "six"},
    "diff": "print('hi')\n",
}
HYPER = {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1", "type": "float", "description": ""}}}
CONFIG = {"cfg": {"name": "cfg", "value": "a: 1", "type": "yaml", "description": ""}}
CONTAINER = {"image": "python:3.11", "arguments": "", "setup_shell_script": ""}
STATS = {"cpu_usage": 12.5, "memory_used": 1024.7, "memory_free": 2048.2, "disk_free_home": 55.5}
STATS |= {"network_rx": 0.3, "network_tx": 0.1, "disk_read": 1.2, "disk_write": 0.0, "gpu_fraction": 1}
STATS |= {
    "gpu_usage": [50.0],
    "gpu_memory_used": [1000.4],
    "gpu_memory_free": [7000.6],
    "gpu_temperature": [60],
}

Call = Callable[[RecordingSender], object]
CASES: list[tuple[str, Call]] = [
    ("queues.get_all", lambda s: queues.get_all(s)),
    ("queues.get_all", lambda s: queues.get_all(s, "^a$", ["q1"], ["id", "tags"], ["t"], ["-x"], True)),
    ("queues.get_by_id", lambda s: queues.get_by_id(s, "q1")),
    ("queues.get_default", lambda s: queues.get_default(s)),
    ("queues.create", lambda s: queues.create(s, "gpu-queue")),
    ("queues.create", lambda s: queues.create(s, "gpu-queue", tags=["a"], system_tags=["default"])),
    ("queues.add_task", lambda s: queues.add_task(s, "q1", "t1")),
    ("queues.remove_task", lambda s: queues.remove_task(s, "q1", "t1")),
    ("queues.delete", lambda s: queues.delete(s, "q1", force=True)),
    ("queues.get_next_task", lambda s: queues.get_next_task(s, "q1")),
    ("queues.get_next_task", lambda s: queues.get_next_task(s, "q1", get_task_info=True)),
    ("queues.find_by_name", lambda s: queues.find_by_name(s, "default")),
    ("tasks.get_by_id", lambda s: tasks.get_by_id(s, "t1")),
    ("tasks.get_all", lambda s: tasks.get_all(s)),
    (
        "tasks.get_all",
        lambda s: tasks.get_all(s, ["t1"], ["queued"], ["id"], True, **{"execution.queue": ["q"]}),
    ),
    ("tasks.get_status", lambda s: tasks.get_status(s, "t1")),
    ("tasks.create", lambda s: tasks.create(s, "my task", "training")),
    (
        "tasks.create",
        lambda s: tasks.create(
            s,
            "my task",
            "training",
            "p1",
            SCRIPT,
            comment="c",
            tags=["a"],
            system_tags=["development"],
            parent="t0",
            execution={"queue": "q1", "artifacts": []},
            hyperparams=HYPER,
            configuration=CONFIG,
            container=CONTAINER,
            output_dest="file:///tmp/out",
        ),
    ),
    ("tasks.edit", lambda s: tasks.edit(s, "t1", force=True, runtime={"_exec_agent_hostname": "vm"})),
    ("tasks.edit", lambda s: tasks.edit(s, "t1", script=SCRIPT, container=CONTAINER, name="renamed")),
    ("tasks.enqueue", lambda s: tasks.enqueue(s, "t1")),
    ("tasks.enqueue", lambda s: tasks.enqueue(s, "t1", "q1", status_reason="r", status_message="m")),
    ("tasks.enqueue", lambda s: tasks.enqueue(s, "t1", queue_name="gpu")),
    ("tasks.dequeue", lambda s: tasks.dequeue(s, "t1", status_reason="r", status_message="m")),
    ("tasks.started", lambda s: tasks.started(s, "t1", True, status_message="pulled by agent")),
    ("tasks.stopped", lambda s: tasks.stopped(s, "t1", status_reason="task was stopped by tasks.stop")),
    ("tasks.failed", lambda s: tasks.failed(s, "t1", status_reason="worker execution exit code 1")),
    ("tasks.completed", lambda s: tasks.completed(s, "t1", status_reason="worker execution done")),
    ("tasks.completed", lambda s: tasks.completed(s, "t1", True, "r", "m", publish=True)),
    ("tasks.stop", lambda s: tasks.stop(s, "t1", force=True, status_reason="user abort")),
    ("tasks.reset", lambda s: tasks.reset(s, "t1", force=True, clear_all=True, status_reason="r")),
    ("tasks.clone", lambda s: tasks.clone(s, "t1")),
    (
        "tasks.clone",
        lambda s: tasks.clone(
            s,
            "t1",
            "copy",
            new_task_comment="c",
            new_task_project="p1",
            new_task_parent="t1",
            new_task_tags=["a"],
            new_task_system_tags=["b"],
            new_task_hyperparams=HYPER,
            new_task_configuration=CONFIG,
            new_task_container=CONTAINER,
            execution_overrides={"queue": "q1"},
            new_project_name="other",
        ),
    ),
    ("tasks.ping", lambda s: tasks.ping(s, "t1")),
    (
        "tasks.set_requirements",
        lambda s: tasks.set_requirements(s, "t1", {"pip": ["six==1.17.0"], "org_pip": "six"}),
    ),
    ("workers.register", lambda s: workers.register(s, "vm:cpu:0")),
    ("workers.register", lambda s: workers.register(s, "vm:cpu:0", ["q1"], 300, ["a"], ["b"])),
    ("workers.unregister", lambda s: workers.unregister(s, "vm:cpu:0")),
    ("workers.status_report", lambda s: workers.status_report(s, "vm:cpu:0", 1_764_000_000_000)),
    (
        "workers.status_report",
        lambda s: workers.status_report(s, "vm:cpu:0", 1_764_000_000_000, "t1", "q1", ["q1"], STATS, ["a"]),
    ),
    ("workers.get_all", lambda s: workers.get_all(s)),
    ("workers.get_runtime_properties", lambda s: workers.get_runtime_properties(s, "vm:cpu:0")),
    (
        "workers.set_runtime_properties",
        lambda s: workers.set_runtime_properties(s, "w", [{"key": "k", "value": "v"}]),
    ),
    (
        "events.add_batch",
        lambda s: events.add_batch(
            s,
            [
                events.log_event("t1", "hi"),
                events.log_event("t1", "x\n", "WARNING", "vm:cpu:0", 1_764_000_000_000),
            ],
        ),
    ),
    ("events.get_task_log", lambda s: events.get_task_log(s, "t1")),
    ("events.get_task_log", lambda s: events.get_task_log(s, "t1", 1, False, "asc", 1_764_000_000_000.5)),
    ("events.get_task_events", lambda s: events.get_task_events(s, "t1")),
    ("events.get_task_events", lambda s: events.get_task_events(s, "t1", "log", "desc", "scroll-1", 100)),
    ("projects.get_all", lambda s: projects.get_all(s)),
    ("projects.get_all", lambda s: projects.get_all(s, "^p$", ["p1"], ["id"], True, False)),
    ("projects.create", lambda s: projects.create(s, "a/b", "desc", ["t"], ["s"], "file:///tmp")),
    ("projects.find_by_name", lambda s: projects.find_by_name(s, "proj")),
    ("projects.get_or_create", lambda s: projects.get_or_create(s, "proj")),
    ("projects.get_or_create", lambda s: projects.get_or_create(s, "new project")),
]


def _schema_for(module: Any, class_name: str) -> dict[str, Any] | None:
    """The class's `_schema`, with `definitions` it refers to but lacks taken from sibling classes
    (e.g. TaskLogEvent refers to log_level_enum, which only other events classes define)."""
    cls = getattr(module, class_name, None)
    schema = getattr(cls, "_schema", None)
    if not isinstance(schema, dict):
        return None
    definitions: dict[str, Any] = {}
    for _, sibling in inspect.getmembers(module, inspect.isclass):
        sibling_schema = getattr(sibling, "_schema", None)
        if isinstance(sibling_schema, dict):
            definitions.update(sibling_schema.get("definitions", {}))
    return {**schema, "definitions": {**definitions, **schema.get("definitions", {})}}


def _request_schema(endpoint: str) -> dict[str, Any] | None:
    service, action = endpoint.split(".")
    module = importlib.import_module(f"clearml.backend_api.services.v2_23.{service}")
    return _schema_for(module, "".join(part.title() for part in action.split("_")) + "Request")


def _check(schema: dict[str, Any], body: dict[str, Any], where: str, *, open_schema: bool = False) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(body)]
    assert not errors, f"{where}: {errors}"
    assert all(v is not None for v in body.values()), f"{where}: None sent in {body}"
    if not open_schema:  # a misspelt field would pass the schema (extra fields are allowed) but do nothing
        unknown = set(body) - set(schema.get("properties", {}))
        assert not unknown, f"{where}: fields not in the schema: {unknown}"


def validate_request(endpoint: str, data: Any, lines: Any) -> None:
    if endpoint == "events.add_batch":
        module = importlib.import_module("clearml.backend_api.services.v2_23.events")
        assert data is None and lines
        for line in lines:
            schema = _schema_for(module, EVENT_CLASSES[line["type"]])
            assert schema is not None
            # `id`: a log event's stable identity, sent only to a server whose token carries the event-ids claim
            # (ours: it stores each id once); a real server never gets it (engine/log_delivery.py).
            line = {k: v for k, v in line.items() if not (k == "id" and line.get("type") == "log")}
            _check(schema, line, f"{endpoint} line")
        return
    schema = _request_schema(endpoint)
    if schema is None:
        # workers.*_runtime_properties exist only on enterprise servers; the SDK has no schema for them.
        assert endpoint in NOT_IN_OSS, f"no v2.23 request schema for {endpoint}"
        return
    _check(schema, data, endpoint, open_schema=endpoint in OPEN_SCHEMAS)


@pytest.mark.parametrize(("name", "call"), CASES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(CASES)])
def test_request_bodies_match_the_sdk_schema(name: str, call: Call, sender: RecordingSender) -> None:
    sender.responses.update(ANSWERS)
    call(sender)
    assert sender.sent, f"{name} sent nothing"
    for endpoint, data, version, lines in sender.sent:
        assert version == API_VERSION
        validate_request(endpoint, data, lines)


def test_every_helper_has_a_contract_case() -> None:
    helpers = {
        f"{module.__name__.rsplit('.', 1)[-1]}.{name}"
        for module in SERVICES
        for name, fn in inspect.getmembers(module, inspect.isfunction)
        if fn.__module__ == module.__name__ and not name.startswith("_")
    }
    assert helpers - BUILDERS == {name for name, _ in CASES}


def test_machine_stats_types_follow_the_schema() -> None:
    schema = _request_schema("workers.status_report")
    assert schema is not None
    props = schema["definitions"]["machine_stats"]["properties"]
    body = workers.machine_stats_body(STATS)
    assert set(body) <= set(props)
    for key in ("memory_used", "memory_free", "disk_free_home", "network_rx", "disk_read"):
        assert "integer" in props[key]["type"] and type(body[key]) is int
    assert body["gpu_memory_used"] == [1000] and body["cpu_usage"] == [12.5]
