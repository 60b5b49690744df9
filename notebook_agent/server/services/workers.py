"""`workers.*` endpoints: registration, status reports with machine stats, and runtime properties."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from notebook_agent.server import errors
from notebook_agent.server.registry import Call, endpoint
from notebook_agent.server.services import queues
from notebook_agent.server.services.tasks import get_task, save_task

KIND = "worker"
DEFAULT_TIMEOUT = 600


def _alive(call: Call, worker: dict, within: float | None = None) -> bool:
    last = datetime.fromisoformat(worker["last_activity_time"])
    timeout = float(worker.get("timeout") or DEFAULT_TIMEOUT)
    if within is not None:
        timeout = min(timeout, within)
    return call.backend.now() - last < timedelta(seconds=timeout)


def live_workers(call: Call) -> list[dict]:
    return [w for w in call.backend.store.all(KIND) if _alive(call, w)]


def _check_queues(call: Call, queue_ids: list[str] | None) -> None:
    for queue_id in queue_ids or []:
        queues.get_queue(call, queue_id)


def _upsert(call: Call, worker_id: str, **fields: Any) -> dict:
    store = call.backend.store
    now = call.backend.now_iso()
    doc = store.get(KIND, worker_id) or {
        "id": worker_id,
        "user": call.user,
        "company": call.company,
        "register_time": now,
        "timeout": DEFAULT_TIMEOUT,
        "queues": [],
        "tags": [],
        "system_tags": [],
        "runtime_properties": [],
    }
    doc.update(fields, last_activity_time=now, ip=call.remote_addr)
    store.put(KIND, doc)
    return doc


@endpoint("workers.register", "2.4")
def register(call: Call) -> dict[str, Any]:
    (worker_id,) = call.require("worker")
    data = call.data
    with call.backend.store.transaction():
        _check_queues(call, data.get("queues"))
        fields: dict[str, Any] = {"timeout": int(data.get("timeout") or DEFAULT_TIMEOUT)}
        for key in ("queues", "tags", "system_tags"):
            if data.get(key) is not None:
                fields[key] = data[key]
        _upsert(call, worker_id, **fields)
    return {}


@endpoint("workers.unregister", "2.4")
def unregister(call: Call) -> dict[str, Any]:
    (worker_id,) = call.require("worker")
    call.backend.store.delete(KIND, worker_id)
    call.backend.wake_worker(worker_id)
    return {}


@endpoint("workers.status_report", "2.4")
def status_report(call: Call) -> dict[str, Any]:
    """Like the real server without auto_register: a worker it does not know, or whose registration timed out,
    gets 400/1001 (the agent then registers again)."""
    (worker_id,) = call.require("worker")
    data = call.data
    store = call.backend.store
    with store.transaction():
        known = store.get(KIND, worker_id)
        if known is None or not _alive(call, known):
            if known is not None:
                store.delete(KIND, worker_id)  # expired: the real server's registry has let it go too
            raise errors.invalid_worker_id(f"worker={worker_id}")
        task_id = data.get("task")
        now = call.backend.now_iso()
        if task_id:
            task = get_task(call, task_id)
            task.update(last_worker=worker_id, last_worker_report=now, last_update=now)
            save_task(call, task)
        fields: dict[str, Any] = {"task": task_id, "queue": data.get("queue"), "last_report_time": now}
        if data.get("queues") is not None:
            _check_queues(call, data["queues"])
            fields["queues"] = data["queues"]
        for key in ("tags", "system_tags"):
            if data.get(key) is not None:
                fields[key] = data[key]
        if data.get("machine_stats") is not None:
            fields["machine_stats"] = data["machine_stats"]
        _upsert(call, worker_id, **fields)
    call.backend.wake_worker(worker_id)
    return {}


def _queue_ref(call: Call, queue_id: str) -> dict[str, Any]:
    store = call.backend.store
    doc = store.get(queues.KIND, queue_id) or {"id": queue_id, "name": queue_id}
    entries = store.entries(queue_id)
    ref: dict[str, Any] = {
        "id": queue_id,
        "name": doc.get("name"),
        "display_name": doc.get("display_name") or doc.get("name"),
        "num_tasks": len(entries),
    }
    if entries:
        nxt = store.get("task", entries[0]["task"])
        ref["next_task"] = {"id": entries[0]["task"], "name": (nxt or {}).get("name", "")}
    return ref


def _public(call: Call, worker: dict) -> dict[str, Any]:
    ident = call.backend.identity
    out: dict[str, Any] = {
        "id": worker["id"],
        "ip": worker.get("ip", ""),
        "key": worker["id"],
        "user": {"id": worker.get("user") or ident.user, "name": ident.user_name},
        "company": {"id": worker.get("company") or ident.company, "name": ident.company_name},
        "register_time": worker.get("register_time"),
        "last_activity_time": worker.get("last_activity_time"),
        "last_report_time": worker.get("last_report_time") or worker.get("last_activity_time"),
        "queues": [_queue_ref(call, q) for q in worker.get("queues") or []],
        "tags": worker.get("tags") or [],
        "system_tags": worker.get("system_tags") or [],
    }
    if worker.get("queue"):
        out["queue"] = _queue_ref(call, worker["queue"])
    if worker.get("task"):
        task = call.backend.store.get("task", worker["task"]) or {}
        started = task.get("started")
        running = 0
        if started:
            running = int((call.backend.now() - datetime.fromisoformat(started)).total_seconds() * 1000)
        out["task"] = {
            "id": worker["task"],
            "name": task.get("name", ""),
            "running_time": running,
            "last_iteration": task.get("last_iteration", 0),
        }
    return out


@endpoint("workers.get_all", "2.4")
def get_all(call: Call) -> dict[str, Any]:
    last_seen = float(call.data.get("last_seen") or 3600)
    tags = call.data.get("tags")
    found = []
    for worker in call.backend.store.all(KIND):
        if not _alive(call, worker, within=last_seen):
            continue
        if tags and not set(tags) & set(worker.get("tags") or []):
            continue
        found.append(_public(call, worker))
    return {"workers": found}


def _properties(call: Call, worker: dict) -> list[dict]:
    now = call.backend.clock()
    return [p for p in worker.get("runtime_properties") or [] if not p.get("expires") or p["expires"] > now]


@endpoint("workers.get_runtime_properties", "2.10")
def get_runtime_properties(call: Call) -> dict[str, Any]:
    """[{key, value, expiry}]: expiry is the seconds left (None: never), which clearml-agent's --status reads."""
    (worker_id,) = call.require("worker")
    worker = call.backend.store.get(KIND, worker_id)
    props = _properties(call, worker) if worker else []
    now = call.backend.clock()
    # Rounded up: a property with 0.3 s left must not read as 0, which means "no expiry" to clients.
    left = [math.ceil(p["expires"] - now) if p.get("expires") else None for p in props]
    return {
        "runtime_properties": [
            {"key": p["key"], "value": p["value"], "expiry": expiry} for p, expiry in zip(props, left, strict=True)
        ]
    }


def _expiry(prop: dict) -> float | None:
    """A property's `expiry` in seconds: None when absent (no expiry), 0 to delete it (as the ClearML docs say)."""
    expiry = prop.get("expiry")
    if expiry is None:
        return None
    if isinstance(expiry, bool) or not isinstance(expiry, (int, float)) or expiry < 0:
        raise errors.validation_error(f"runtime property {prop['key']!r}: expiry must be seconds >= 0, not {expiry!r}")
    return float(expiry)


@endpoint("workers.set_runtime_properties", "2.10")
def set_runtime_properties(call: Call) -> dict[str, Any]:
    worker_id, props = call.require("worker", "runtime_properties")
    if not isinstance(props, list) or not all(isinstance(p, dict) and "key" in p for p in props):
        raise errors.validation_error("runtime_properties must be a list of {key, value, expiry?}")
    expiries = [_expiry(prop) for prop in props]  # all checked before anything is stored
    store = call.backend.store
    with store.transaction():
        worker = store.get(KIND, worker_id)
        if worker is None:
            raise errors.worker_not_registered(f"worker={worker_id}")
        current = {p["key"]: p for p in _properties(call, worker)}
        now = call.backend.clock()
        for prop, expiry in zip(props, expiries, strict=True):
            if expiry == 0:
                current.pop(prop["key"], None)
                continue
            current[prop["key"]] = {
                "key": prop["key"],
                "value": str(prop.get("value", "")),
                "expires": now + expiry if expiry else None,
            }
        worker["runtime_properties"] = list(current.values())
        store.put(KIND, worker)
    # A force switch must count now, not after the worker's pending long poll times out.
    call.backend.wake_worker(worker_id)
    return {}
