"""`tasks.*` endpoints for a task's parts: hyperparameters, configuration, artifacts, models and runtime."""

from __future__ import annotations

from typing import Any

from notebook_agent.server import errors
from notebook_agent.server.registry import Call, endpoint
from notebook_agent.server.services.tasks import get_task, save_task

# bll/task/utils.py get_task_for_update: these statuses accept changes with force.
_FORCE_STATUSES = {"created", "queued", "in_progress"}


def _task_for_update(call: Call, task_id: str, allow_any: bool = False) -> dict:
    task = get_task(call, task_id)
    status = task.get("status")
    if allow_any or status == "created":
        return task
    if call.data.get("force") and status in _FORCE_STATUSES:
        return task
    raise errors.invalid_task_status("task must be in created status (or queued/in_progress with force)", status=status)


def _touch(call: Call, task: dict) -> None:
    task["last_update"] = task["last_change"] = call.backend.now_iso()
    save_task(call, task)


@endpoint("tasks.get_hyper_params", "2.9")
def get_hyper_params(call: Call) -> dict[str, Any]:
    (task_ids,) = call.require("tasks")
    params = []
    for task_id in task_ids:
        task = get_task(call, task_id)
        items = [item for section in (task.get("hyperparams") or {}).values() for item in section.values()]
        params.append({"task": task_id, "hyperparams": items})
    return {"params": params}


@endpoint("tasks.edit_hyper_params", "2.9")
def edit_hyper_params(call: Call) -> dict[str, Any]:
    task_id, items = call.require("task", "hyperparams")
    replace = call.data.get("replace_hyperparams", "none")
    with call.backend.store.transaction():
        only_properties = all(i.get("section") == "properties" for i in items)
        task = _task_for_update(call, task_id, allow_any=only_properties)
        params = {} if replace == "all" else dict(task.get("hyperparams") or {})
        if replace == "section":
            for section in {i.get("section", "") for i in items}:
                params[section] = {}
        for item in items:
            section = item.get("section", "")
            params.setdefault(section, {})[item["name"]] = {
                k: item.get(k, "") for k in ("section", "name", "value", "type", "description")
            }
        task["hyperparams"] = params
        _touch(call, task)
    return {"updated": 1}


@endpoint("tasks.delete_hyper_params", "2.9")
def delete_hyper_params(call: Call) -> dict[str, Any]:
    task_id, items = call.require("task", "hyperparams")
    with call.backend.store.transaction():
        task = _task_for_update(call, task_id, allow_any=all(i.get("section") == "properties" for i in items))
        params = task.get("hyperparams") or {}
        deleted = 0
        for item in items:
            section = params.get(item.get("section", ""), {})
            if item.get("name") is None:
                deleted += int(params.pop(item.get("section", ""), None) is not None)
            elif section.pop(item["name"], None) is not None:
                deleted += 1
        _touch(call, task)
    return {"deleted": deleted}


@endpoint("tasks.get_configurations", "2.9")
def get_configurations(call: Call) -> dict[str, Any]:
    (task_ids,) = call.require("tasks")
    names = call.data.get("names")
    result = []
    for task_id in task_ids:
        config = get_task(call, task_id).get("configuration") or {}
        items = [v for k, v in config.items() if not names or k in names]
        result.append({"task": task_id, "configuration": items})
    return {"configurations": result}


@endpoint("tasks.get_configuration_names", "2.9")
def get_configuration_names(call: Call) -> dict[str, Any]:
    (task_ids,) = call.require("tasks")
    return {
        "configurations": [
            {"task": t, "names": sorted((get_task(call, t).get("configuration") or {}).keys())} for t in task_ids
        ]
    }


@endpoint("tasks.edit_configuration", "2.9")
def edit_configuration(call: Call) -> dict[str, Any]:
    task_id, items = call.require("task", "configuration")
    with call.backend.store.transaction():
        task = _task_for_update(call, task_id)
        config = {} if call.data.get("replace_configuration") else dict(task.get("configuration") or {})
        for item in items:
            config[item["name"]] = {k: item.get(k, "") for k in ("name", "value", "type", "description")}
        task["configuration"] = config
        _touch(call, task)
    return {"updated": 1}


@endpoint("tasks.delete_configuration", "2.9")
def delete_configuration(call: Call) -> dict[str, Any]:
    task_id, names = call.require("task", "configuration")
    with call.backend.store.transaction():
        task = _task_for_update(call, task_id)
        config = task.get("configuration") or {}
        deleted = sum(config.pop(n, None) is not None for n in names)
        _touch(call, task)
    return {"deleted": deleted}


@endpoint("tasks.add_or_update_artifacts", "2.10")
def add_or_update_artifacts(call: Call) -> dict[str, Any]:
    task_id, artifacts = call.require("task", "artifacts")
    with call.backend.store.transaction():
        task = _task_for_update(call, task_id)
        execution = task.setdefault("execution", {})
        by_key = {(a["key"], a.get("mode", "output")): a for a in execution.get("artifacts") or []}
        for artifact in artifacts:
            artifact = {"mode": "output", **artifact}
            by_key[(artifact["key"], artifact["mode"])] = artifact
        execution["artifacts"] = sorted(by_key.values(), key=lambda a: a["key"])
        _touch(call, task)
    return {"updated": len(artifacts)}


@endpoint("tasks.delete_artifacts", "2.10")
def delete_artifacts(call: Call) -> dict[str, Any]:
    task_id, artifacts = call.require("task", "artifacts")
    with call.backend.store.transaction():
        task = _task_for_update(call, task_id)
        execution = task.setdefault("execution", {})
        drop = {(a["key"], a.get("mode", "output")) for a in artifacts}
        kept = [a for a in execution.get("artifacts") or [] if (a["key"], a.get("mode", "output")) not in drop]
        deleted = len(execution.get("artifacts") or []) - len(kept)
        execution["artifacts"] = kept
        _touch(call, task)
    return {"deleted": deleted}


@endpoint("tasks.add_or_update_model", "2.13")
def add_or_update_model(call: Call) -> dict[str, Any]:
    task_id, name, model, kind = call.require("task", "name", "model", "type")
    if kind not in ("input", "output"):
        raise errors.validation_error(f"type must be input or output, got {kind!r}")
    with call.backend.store.transaction():
        task = get_task(call, task_id)
        models = task.setdefault("models", {"input": [], "output": []})
        entries = [m for m in models.get(kind) or [] if m.get("name") != name]
        entries.append({"name": name, "model": model, "updated": call.backend.now_iso()})
        models[kind] = entries
        _touch(call, task)
    return {"updated": 1}


@endpoint("tasks.edit_runtime", "2.34")
def edit_runtime(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    with call.backend.store.transaction():
        task = get_task(call, task_id)
        runtime = dict(task.get("runtime") or {})
        runtime.update(call.data.get("add_or_update") or {})
        for key in call.data.get("remove") or []:
            runtime.pop(key, None)
        task["runtime"] = runtime
        _touch(call, task)
    return {"updated": 1}
