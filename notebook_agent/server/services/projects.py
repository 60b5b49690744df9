"""`projects.*` endpoints: create, look up by (regex) name, update and delete projects."""

from __future__ import annotations

from typing import Any

from notebook_agent.server import documents, errors
from notebook_agent.server.backend import new_id
from notebook_agent.server.registry import Call, endpoint

KIND = "project"


def validate_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or len(name.strip()) < 3:
        raise errors.validation_error(f"{field} must be a string of at least 3 characters, got {name!r}")
    return name.strip()


def get_project(call: Call, project_id: str) -> dict:
    doc = call.backend.store.get(KIND, project_id)
    if doc is None:
        raise errors.invalid_project_id(f"id={project_id}")
    return doc


@endpoint("projects.create", "2.1")
def create(call: Call) -> dict[str, Any]:
    (name,) = call.require("name")
    name = validate_name(name)
    store = call.backend.store
    with store.transaction():
        documents.ensure_unique_name(store, KIND, name)
        now = call.backend.now_iso()
        doc = {
            "id": new_id(),
            "name": name,
            "basename": name.rsplit("/", 1)[-1],
            "description": call.data.get("description", ""),
            "user": call.user,
            "company": call.company,
            "created": now,
            "last_update": now,
            "tags": call.data.get("tags") or [],
            "system_tags": call.data.get("system_tags") or [],
            "default_output_destination": call.data.get("default_output_destination"),
        }
        store.put(KIND, doc)
    return {"id": doc["id"]}


@endpoint("projects.get_by_id", "2.1")
def get_by_id(call: Call) -> dict[str, Any]:
    (project_id,) = call.require("project")
    return {"project": get_project(call, project_id)}


@endpoint("projects.get_all", "2.1")
@endpoint("projects.get_all_ex", "2.1")
def get_all(call: Call) -> dict[str, Any]:
    data = call.data
    store = call.backend.store
    basename = data.get("basename")
    docs = [
        d
        for d in documents.select(store, KIND, data, ("name", "description", "id"), ("name", "description"))
        if basename is None or d.get("basename") == basename
    ]
    docs = documents.order_and_page(docs, data)
    return {"projects": [documents.project(d, data.get("only_fields")) for d in docs]}


@endpoint("projects.update", "2.1")
def update(call: Call) -> dict[str, Any]:
    (project_id,) = call.require("project")
    store = call.backend.store
    with store.transaction():
        doc = get_project(call, project_id)
        fields = {}
        for key in ("name", "description", "tags", "system_tags", "default_output_destination"):
            if key in call.data:
                fields[key] = call.data[key]
        if "name" in fields:
            fields["name"] = validate_name(fields["name"])
            documents.ensure_unique_name(store, KIND, fields["name"], project_id)
            fields["basename"] = fields["name"].rsplit("/", 1)[-1]
        doc.update(fields, last_update=call.backend.now_iso())
        store.put(KIND, doc)
    return {"updated": 1, "fields": fields}


@endpoint("projects.delete", "2.1")
def delete(call: Call) -> dict[str, Any]:
    (project_id,) = call.require("project")
    store = call.backend.store
    with store.transaction():
        get_project(call, project_id)
        tasks = [t for t in store.all("task") if t.get("project") == project_id]
        if tasks and not call.data.get("force"):
            raise errors.ServerError(400, 403, "Project has associated non-archived tasks", {"tasks": len(tasks)})
        for task in tasks:
            task["project"] = None
            store.put("task", task)
        store.delete(KIND, project_id)
    return {
        "deleted": 1,
        "disassociated_tasks": len(tasks),
        "urls": {},
        "deleted_models": 0,
        "deleted_tasks": 0,
    }
