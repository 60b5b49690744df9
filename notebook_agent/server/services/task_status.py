"""Task status changes: the real server's state machine, enqueue/dequeue, abort (`tasks.stop`) and reset."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from notebook_agent.server import errors
from notebook_agent.server.registry import Call, endpoint
from notebook_agent.server.services import popped, queues
from notebook_agent.server.services.tasks import KIND, get_task, save_task
from notebook_agent.server.services.workers import live_workers

# bll/task/utils.py state_machine: allowed targets per current status (same status is always allowed).
TRANSITIONS: dict[str, set[str]] = {
    "created": {"queued", "in_progress"},
    "queued": {"created", "in_progress", "stopped"},
    "in_progress": {"stopped", "failed", "created", "completed"},
    "stopped": {
        "closed",
        "created",
        "failed",
        "queued",
        "in_progress",
        "published",
        "publishing",
        "completed",
    },
    "closed": {"created", "failed", "published", "publishing", "stopped"},
    "failed": {"created", "stopped", "published", "queued"},
    "publishing": {"published"},
    "published": set(),
    "completed": {"published", "in_progress", "created"},
}
# apiserver.workers.task_update_timeout: a task not updated for this long has no live worker.
TASK_UPDATE_TIMEOUT = timedelta(seconds=600)


def check_transition(task: dict, new_status: str, force: bool) -> None:
    current = task.get("status", "created")
    if force or current == new_status:
        return
    if new_status not in TRANSITIONS.get(current, set()):
        raise errors.invalid_task_status(
            "Invalid status change", current_status=current, new_status=new_status, task=task["id"]
        )


def change_status(
    call: Call,
    task: dict,
    new_status: str,
    *,
    force: bool = False,
    reason: str | None = None,
    message: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Move a task to `new_status` (checked unless forced), store it and return the changed fields."""
    check_transition(task, new_status, force)
    now = call.backend.now_iso()
    fields: dict[str, Any] = {
        "status": new_status,
        "status_reason": call.data.get("status_reason", "") if reason is None else reason,
        "status_message": call.data.get("status_message", "") if message is None else message,
        "status_changed": now,
        "last_update": now,
        "last_change": now,
        "last_changed_by": call.user,
        **(extra or {}),
    }
    task.update(fields)
    save_task(call, task)
    return fields


def _status_endpoint(name: str, new_status: str, min_version: str, result_key: str | None, stamp: str | None):
    def handler(call: Call) -> dict[str, Any]:
        (task_id,) = call.require("task")
        with call.backend.store.transaction():
            task = get_task(call, task_id)
            popped.refuse_reclaimed(call, task_id)  # a worker that lapsed must not start (or end) it any more
            extra: dict[str, Any] = {}
            if stamp:
                extra[stamp] = call.backend.now_iso()
            if new_status == "in_progress":
                extra["completed"] = None
            fields = change_status(call, task, new_status, force=bool(call.data.get("force")), extra=extra)
        result: dict[str, Any] = {"updated": 1, "fields": fields}
        if result_key:
            result[result_key] = 1
        if name == "tasks.completed":
            result["published"] = 0
        return result

    endpoint(name, min_version)(handler)


_status_endpoint("tasks.started", "in_progress", "2.1", "started", "started")
_status_endpoint("tasks.stopped", "stopped", "2.1", None, "completed")
_status_endpoint("tasks.failed", "failed", "2.1", None, "completed")
_status_endpoint("tasks.completed", "completed", "2.2", None, "completed")
_status_endpoint("tasks.close", "closed", "2.1", None, None)
_status_endpoint("tasks.publish", "published", "2.1", "committed_versions_results", "published")


def _has_live_worker(call: Call, task: dict) -> bool:
    if not task.get("last_worker") or not task.get("last_update"):
        return False
    last = datetime.fromisoformat(task["last_update"])
    return call.backend.now() - last < TASK_UPDATE_TIMEOUT


@endpoint("tasks.stop", "2.1")
def stop(call: Call) -> dict[str, Any]:
    """Abort: immediate `stopped` when nobody runs the task, else ask its worker through status_message."""
    (task_id,) = call.require("task")
    force = bool(call.data.get("force"))
    store = call.backend.store
    user_name = call.identity.user_name if call.identity else "user"
    with store.transaction():
        task = get_task(call, task_id)
        status = task.get("status")
        if status == "created" and not force:
            raise errors.invalid_task_status("cannot stop a task in created status", current_status=status)
        development = "development" in (task.get("system_tags") or [])
        if status == "in_progress" and not development and _has_live_worker(call, task):
            fields = change_status(call, task, "in_progress", force=True, message="stopping")
            return {"updated": 1, "fields": fields}
        if status == "queued":
            store.remove_entry(None, task_id)
        fields = change_status(
            call,
            task,
            "stopped",
            force=force,
            message=f"Stopped by {user_name}",
            extra={"completed": call.backend.now_iso()},
        )
    return {"updated": 1, "fields": fields}


def _resolve_queue(call: Call) -> dict:
    queue_id, queue_name = call.data.get("queue"), call.data.get("queue_name")
    if queue_id and queue_name:
        raise errors.validation_error("queue and queue_name cannot be both provided")
    if queue_id:
        return queues.get_queue(call, queue_id)
    if queue_name:
        found = call.backend.store.by_name(queues.KIND, queue_name)
        return found[0] if found else queues.create_queue(call, queue_name)
    return queues.default_queue(call)


def _queue_watched(call: Call, queue_id: str) -> bool:
    return any(queue_id in (w.get("queues") or []) for w in live_workers(call))


@endpoint("tasks.enqueue", "1.5")
def enqueue(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    store = call.backend.store
    with store.transaction():
        task = get_task(call, task_id)
        queue = _resolve_queue(call)
        force = bool(call.data.get("force"))
        check_transition(task, "queued", force)
        if task.get("status") != "queued":
            task["enqueue_status"] = task.get("status", "created")
        queues.add_entry(call, queue["id"], task_id)  # 400/706 rolls the whole transaction back
        for other in store.queues_of_task(task_id):
            if other != queue["id"]:
                store.remove_entry(other, task_id)
        task.setdefault("execution", {})["queue"] = queue["id"]
        task["system_tags"] = [t for t in task.get("system_tags") or [] if t != "development"]
        fields = change_status(call, task, "queued", force=True)
    result: dict[str, Any] = {"queued": 1, "updated": 1, "fields": {**fields, "execution.queue": queue["id"]}}
    if call.data.get("verify_watched_queue"):
        result["queue_watched"] = _queue_watched(call, queue["id"])
    return result


def restore_enqueue_status(call: Call, task_id: str, reason: str, new_status: str | None = None) -> dict:
    task = get_task(call, task_id)
    target = new_status or task.pop("enqueue_status", None) or "created"
    task.pop("enqueue_status", None)
    return change_status(call, task, target, force=True, reason=reason, message="")


@endpoint("tasks.dequeue", "1.5")
def dequeue(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    store = call.backend.store
    with store.transaction():
        task = get_task(call, task_id)
        status = task.get("status")
        if status not in ("queued", "in_progress") and not call.data.get("force"):
            raise errors.invalid_task_status("task is not queued", current_status=status)
        removed = store.remove_entry(None, task_id)
        fields = restore_enqueue_status(call, task_id, call.data.get("status_reason", ""), call.data.get("new_status"))
    return {"dequeued": int(removed > 0), "updated": 1, "fields": fields}


@endpoint("tasks.reset", "2.1")
def reset(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    store = call.backend.store
    with store.transaction():
        task = get_task(call, task_id)
        if task.get("status") == "published" and not call.data.get("force"):
            raise errors.invalid_task_status("cannot reset a published task without force")
        check_transition(task, "created", bool(call.data.get("force")))  # publishing -> created is not allowed
        removed = store.remove_entry(None, task_id)
        deleted_events = store.delete_events(task_id)
        for key in (
            "last_iteration",
            "last_metrics",
            "runtime",
            "last_worker",
            "last_worker_report",
            "started",
            "completed",
            "active_duration",
            "enqueue_status",
        ):
            task.pop(key, None)
        task["last_iteration"], task["last_metrics"], task["runtime"] = 0, {}, {}
        execution = task.setdefault("execution", {})
        execution.pop("queue", None)
        execution["artifacts"] = [a for a in execution.get("artifacts") or [] if a.get("mode") == "input"]
        models = task.get("models") or {}
        models["output"] = []
        task["models"] = models
        if call.data.get("clear_all"):
            task["execution"] = {}
            task.pop("script", None)
        fields = change_status(call, task, "created", force=True, reason="reset", message="reset")
    return {
        "updated": 1,
        "fields": fields,
        "dequeued": {"removed": removed},
        "events": {"deleted": deleted_events},
        "deleted_models": 0,
        "urls": {},
    }


__all__ = ["KIND", "TRANSITIONS", "change_status", "restore_enqueue_status"]
