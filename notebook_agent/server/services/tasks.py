"""`tasks.*` endpoints for the task document itself: create, read, query, edit, clone, ping, requirements."""

from __future__ import annotations

import copy
from typing import Any

from notebook_agent.server import documents, errors, request_fields
from notebook_agent.server.backend import new_id
from notebook_agent.server.registry import Call, endpoint
from notebook_agent.server.services.projects import get_project, validate_name

KIND = "task"
TASK_TYPES = set(request_fields.TASK_TYPES)
HIDDEN_FIELDS = ("enqueue_status",)
# tasks.edit merges these one level deep; every other field is replaced whole.
MERGED_FIELDS = ("execution", "script", "output")
EDITABLE_FIELDS = (
    "name",
    "tags",
    "system_tags",
    "type",
    "comment",
    "parent",
    "project",
    "execution",
    "script",
    "hyperparams",
    "configuration",
    "models",
    "container",
    "runtime",
    "output",
)
_SEARCH_FIELDS = ("id", "name", "comment", "script.repository", "script.entry_point")


def get_task(call: Call, task_id: Any) -> dict:
    doc = call.backend.store.get(KIND, task_id) if isinstance(task_id, str) else None
    if doc is None:
        raise errors.invalid_task_id(f"id={task_id}")
    return doc


def save_task(call: Call, task: dict) -> None:
    call.backend.store.put(KIND, task)


def public(task: dict) -> dict:
    return documents.public(task, HIDDEN_FIELDS)


def _validate_fields(call: Call, fields: dict[str, Any]) -> None:
    if "name" in fields:
        fields["name"] = validate_name(fields["name"])
    if "type" in fields and fields["type"] not in TASK_TYPES:
        raise errors.validation_error(f"type must be one of {sorted(TASK_TYPES)}, got {fields['type']!r}")
    if fields.get("project"):
        get_project(call, fields["project"])
    if fields.get("script") is not None and not isinstance(fields["script"], dict):
        raise errors.validation_error("script must be an object")
    for key in ("tags", "system_tags"):
        if key in fields and not isinstance(fields[key], list):
            raise errors.validation_error(f"{key} must be a list of strings")


def _output_dest(data: dict[str, Any], fields: dict[str, Any]) -> None:
    if data.get("output_dest") is not None:
        fields.setdefault("output", {})["destination"] = data["output_dest"]


@endpoint("tasks.create", "2.1")
def create(call: Call) -> dict[str, Any]:
    name, task_type = call.require("name", "type")
    fields = {k: copy.deepcopy(call.data[k]) for k in EDITABLE_FIELDS if k in call.data}
    fields["name"], fields["type"] = name, task_type
    _output_dest(call.data, fields)
    _validate_fields(call, fields)
    now = call.backend.now_iso()
    task: dict[str, Any] = {
        "id": new_id(),
        "company": call.company,
        "user": call.user,
        "status": "created",
        "status_reason": "",
        "status_message": "",
        "created": now,
        "status_changed": now,
        "last_update": now,
        "last_change": now,
        "last_changed_by": call.user,
        "comment": "",
        "parent": None,
        "project": None,
        "tags": [],
        "system_tags": [],
        "execution": {},
        "script": {},
        "hyperparams": {},
        "configuration": {},
        "runtime": {},
        "models": {"input": [], "output": []},
        "container": {},
        "output": {},
        "last_iteration": 0,
        "last_metrics": {},
        **fields,
    }
    save_task(call, task)
    return {"id": task["id"]}


@endpoint("tasks.get_by_id", "2.1")
def get_by_id(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    return {"task": public(get_task(call, task_id))}


@endpoint("tasks.get_all", "2.1")
@endpoint("tasks.get_all_ex", "2.1")
def get_all(call: Call) -> dict[str, Any]:
    data = call.data
    store = call.backend.store
    docs = documents.select(store, KIND, data, _SEARCH_FIELDS)
    if not data.get("order_by") and not data.get("id"):
        docs.sort(key=lambda d: d.get("created") or "")
    docs = documents.order_and_page(docs, data)
    return {"tasks": [documents.project(public(d), data.get("only_fields")) for d in docs]}


def apply_edit(call: Call, task: dict, fields: dict[str, Any]) -> dict[str, Any]:
    _validate_fields(call, fields)
    for key, value in fields.items():
        if key in MERGED_FIELDS and isinstance(value, dict) and isinstance(task.get(key), dict):
            task[key] = {**task[key], **value}
        else:
            task[key] = value
    now = call.backend.now_iso()
    task.update(last_update=now, last_change=now, last_changed_by=call.user)
    save_task(call, task)
    return {**fields, "last_update": now, "last_change": now}


@endpoint("tasks.edit", "2.1")
def edit(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    with call.backend.store.transaction():
        task = get_task(call, task_id)
        if task.get("status") != "created" and not call.data.get("force"):
            raise errors.invalid_task_status(
                "only tasks in created status can be edited without force", status=task.get("status")
            )
        fields = {k: copy.deepcopy(call.data[k]) for k in EDITABLE_FIELDS if k in call.data}
        _output_dest(call.data, fields)
        changed = apply_edit(call, task, fields)
    return {"updated": 1, "fields": changed}


@endpoint("tasks.update", "2.1")
def update(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    with call.backend.store.transaction():
        task = get_task(call, task_id)
        fields = {k: call.data[k] for k in ("name", "tags", "system_tags", "comment", "project") if k in call.data}
        if "output__error" in call.data:
            fields["output"] = {**(task.get("output") or {}), "error": call.data["output__error"]}
        changed = apply_edit(call, task, fields)
    return {"updated": 1, "fields": changed}


@endpoint("tasks.set_requirements", "2.1")
def set_requirements(call: Call) -> dict[str, Any]:
    task_id, requirements = call.require("task", "requirements")
    if not isinstance(requirements, dict):
        raise errors.validation_error("requirements must be an object")
    with call.backend.store.transaction():
        task = get_task(call, task_id)
        task.setdefault("script", {})["requirements"] = requirements
        now = call.backend.now_iso()
        task["last_update"] = now
        save_task(call, task)
    return {"updated": 1, "fields": {"script.requirements": requirements, "last_update": now}}


@endpoint("tasks.ping", "2.1")
def ping(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    with call.backend.store.transaction():
        task = get_task(call, task_id)
        task["last_update"] = call.backend.now_iso()
        save_task(call, task)
    return {}


_CLONE_CLEARED = (
    "started",
    "completed",
    "published",
    "last_worker",
    "last_worker_report",
    "active_duration",
    "enqueue_status",
    "last_metrics",
    "last_iteration",
)


@endpoint("tasks.clone", "2.5")
def clone(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    data = call.data
    with call.backend.store.transaction():
        source = get_task(call, task_id)
        task = copy.deepcopy(source)
        for key in _CLONE_CLEARED:
            task.pop(key, None)
        now = call.backend.now_iso()
        new_project = None
        project = data.get("new_task_project", source.get("project"))
        if data.get("new_project_name"):
            from notebook_agent.server.services.projects import KIND as PROJECT

            found = call.backend.store.by_name(PROJECT, data["new_project_name"])
            if not found:
                raise errors.invalid_project_id(f"name={data['new_project_name']}")
            project = found[0]["id"]
            new_project = {"id": project, "name": found[0]["name"]}
        execution = task.get("execution") or {}
        execution.pop("queue", None)
        execution["artifacts"] = [a for a in execution.get("artifacts") or [] if a.get("mode") == "input"]
        execution.update(data.get("execution_overrides") or {})
        task.update(
            id=new_id(),
            name=data.get("new_task_name") or source["name"],
            comment=data.get("new_task_comment", source.get("comment", "")),
            tags=data.get("new_task_tags", source.get("tags", [])),
            system_tags=data.get(
                "new_task_system_tags", [t for t in source.get("system_tags") or [] if t != "archived"]
            ),
            parent=data.get("new_task_parent", source.get("parent")),
            project=project,
            status="created",
            status_reason="",
            status_message="",
            created=now,
            status_changed=now,
            last_update=now,
            last_change=now,
            user=call.user,
            execution=execution,
            runtime={},
            last_iteration=0,
            last_metrics={},
        )
        for key, override in (
            ("hyperparams", "new_task_hyperparams"),
            ("configuration", "new_task_configuration"),
            ("container", "new_task_container"),
        ):
            if data.get(override) is not None:
                task[key] = data[override]
        models = task.get("models") or {}
        task["models"] = {"input": data.get("new_task_input_models", models.get("input", [])), "output": []}
        _validate_fields(call, {"name": task["name"], "project": task["project"]})
        save_task(call, task)
    result: dict[str, Any] = {"id": task["id"]}
    if new_project:
        result["new_project"] = new_project
    return result
