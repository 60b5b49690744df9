"""`queues.*` endpoints: FIFO queues of task ids with an atomic pop (`get_next_task`); a task popped by a worker
that died before starting it goes back to its queue when queues are read (services/popped.py)."""

from __future__ import annotations

from typing import Any

from notebook_agent.server import documents, errors
from notebook_agent.server.backend import new_id
from notebook_agent.server.registry import Call, endpoint
from notebook_agent.server.services import popped
from notebook_agent.server.services.projects import validate_name

KIND = "queue"


def get_queue(call: Call, queue_id: str) -> dict:
    doc = call.backend.store.get(KIND, queue_id) if isinstance(queue_id, str) else None
    if doc is None:
        raise errors.invalid_queue_id(f"queue_id={queue_id}")
    return doc


def with_entries(call: Call, doc: dict, max_entries: int | None = None) -> dict:
    entries = call.backend.store.entries(doc["id"])
    if max_entries is not None:
        entries = entries[: int(max_entries)]
    return {**doc, "entries": entries}


def default_queue(call: Call) -> dict:
    found = [q for q in call.backend.store.all(KIND) if "default" in (q.get("system_tags") or [])]
    if not found:
        raise errors.no_default_queue()
    if len(found) > 1:
        raise errors.multiple_default_queues()
    return found[0]


def create_queue(call: Call, name: str, tags: list | None = None, system_tags: list | None = None) -> dict:
    name = validate_name(name)
    store = call.backend.store
    with store.transaction():
        documents.ensure_unique_name(store, KIND, name)
        doc = {
            "id": new_id(),
            "name": name,
            "display_name": call.data.get("display_name") or name,
            "user": call.user,
            "company": call.company,
            "created": call.backend.now_iso(),
            "tags": tags or [],
            "system_tags": system_tags or [],
            "metadata": call.data.get("metadata") or {},
        }
        store.put(KIND, doc)
    return doc


@endpoint("queues.create", "2.4")
def create(call: Call) -> dict[str, Any]:
    (name,) = call.require("name")
    doc = create_queue(call, name, call.data.get("tags"), call.data.get("system_tags"))
    return {"id": doc["id"]}


@endpoint("queues.get_by_id", "2.4")
def get_by_id(call: Call) -> dict[str, Any]:
    (queue_id,) = call.require("queue")
    popped.requeue_lost(call)
    return {"queue": with_entries(call, get_queue(call, queue_id), call.data.get("max_task_entries"))}


@endpoint("queues.get_all", "2.4")
@endpoint("queues.get_all_ex", "2.4")
def get_all(call: Call) -> dict[str, Any]:
    data = call.data
    store = call.backend.store
    popped.requeue_lost(call)
    docs = documents.select(store, KIND, data, ("name", "id"))
    docs = documents.order_and_page(docs, data)
    only = data.get("only_fields")
    max_entries = data.get("max_task_entries")
    out = []
    for doc in docs:
        if not only or any(f == "entries" or f.startswith("entries.") for f in only):
            doc = with_entries(call, doc, max_entries)
        out.append(documents.project(doc, only))
    return {"queues": out}


@endpoint("queues.get_default", "2.4")
def get_default(call: Call) -> dict[str, Any]:
    doc = default_queue(call)
    return {"id": doc["id"], "name": doc["name"]}


@endpoint("queues.update", "2.4")
def update(call: Call) -> dict[str, Any]:
    (queue_id,) = call.require("queue")
    store = call.backend.store
    with store.transaction():
        doc = get_queue(call, queue_id)
        fields = {
            k: call.data[k] for k in ("name", "tags", "system_tags", "metadata", "display_name") if k in call.data
        }
        if "name" in fields:
            fields["name"] = validate_name(fields["name"])
            documents.ensure_unique_name(store, KIND, fields["name"], queue_id)
        doc.update(fields)
        store.put(KIND, doc)
    if "tags" in fields:  # force_workers:on/off decides what workers pull: make them read it now
        call.backend.wake_all()
    return {"updated": 1, "fields": fields}


@endpoint("queues.delete", "2.4")
def delete(call: Call) -> dict[str, Any]:
    (queue_id,) = call.require("queue")
    store = call.backend.store
    with store.transaction():
        get_queue(call, queue_id)
        if store.count_entries(queue_id) and not call.data.get("force"):
            raise errors.queue_not_empty(f"queue_id={queue_id}")
        store.clear_entries(queue_id)
        store.delete(KIND, queue_id)
    return {"deleted": 1}


def add_entry(call: Call, queue_id: str, task_id: str) -> None:
    store = call.backend.store
    with store.transaction():
        get_queue(call, queue_id)
        if queue_id in store.queues_of_task(task_id):
            raise errors.task_already_queued(f"task={task_id}, queue={queue_id}")
        store.push_entry(queue_id, task_id, call.backend.now_iso())
    call.backend.notify_queues()


@endpoint("queues.add_task", "2.4")
def add_task(call: Call) -> dict[str, Any]:
    queue_id, task_id = call.require("queue", "task")
    store = call.backend.store
    with store.transaction():
        task = store.get("task", task_id)
        if task is None:
            raise errors.invalid_task_id(f"id={task_id}")
        add_entry(call, queue_id, task_id)
        if call.data.get("update_execution_queue", True):
            task.setdefault("execution", {})["queue"] = queue_id
            store.put("task", task)
    return {"added": 1}


@endpoint("queues.remove_task", "2.4")
def remove_task(call: Call) -> dict[str, Any]:
    queue_id, task_id = call.require("queue", "task")
    store = call.backend.store
    with store.transaction():
        get_queue(call, queue_id)
        if not store.remove_entry(queue_id, task_id):
            raise errors.invalid_queue_or_task_not_queued(f"task={task_id}, queue={queue_id}")
        if call.data.get("update_task_status"):
            from notebook_agent.server.services.task_status import restore_enqueue_status

            restore_enqueue_status(call, task_id, "removed from queue")
    return {"removed": 1}


MAX_WAIT_SEC = 25.0  # below the clients' 30 s read timeout
LAPSE_SLACK_SEC = 0.1  # a long poll waiting for a lapse wakes just after it


def _wait_for_entries(call: Call, queue_id: str) -> bool:
    """The long-poll extension: `X-NotebookAgent-Wait: SEC` (+ `X-NotebookAgent-Watch: ids`) holds an empty
    answer until one of the watched queues gets an entry. True if the caller asked to wait."""
    wait = call.header("X-NotebookAgent-Wait")
    if not wait:
        return False
    try:
        seconds = min(max(float(wait), 0.0), MAX_WAIT_SEC)
    except ValueError:
        raise errors.validation_error(f"X-NotebookAgent-Wait must be seconds, got {wait!r}") from None
    watch = [q for q in (call.header("X-NotebookAgent-Watch") or queue_id).split(",") if q] or [queue_id]
    lapse = popped.seconds_to_next_lapse(call, watch)
    if lapse is not None:  # a task popped from these queues may come back then: wake to take it
        seconds = min(seconds, lapse + LAPSE_SLACK_SEC)
    call.backend.wait_for_entries(watch, call.worker or "", seconds)
    popped.requeue_lost(call)
    return True


@endpoint("queues.get_next_task", "2.4")
def get_next_task(call: Call) -> dict[str, Any]:
    (queue_id,) = call.require("queue")
    store = call.backend.store
    get_queue(call, queue_id)
    popped.requeue_lost(call)
    entry = store.pop_entry(queue_id, call.data.get("task"))
    if entry is None and _wait_for_entries(call, queue_id):
        entry = store.pop_entry(queue_id, call.data.get("task"))
    with store.transaction():
        if entry is None:
            return {}
        task = store.get("task", entry["task"])
        if task is not None and task.get("status") == "stopped":
            # The real server re-queues a task that was stopped while being popped.
            task["status"] = "queued"
            store.put("task", task)
        popped.remember(call, queue_id, entry["task"])
    result: dict[str, Any] = {"entry": entry}
    if call.data.get("get_task_info") and task is not None:
        result["task_info"] = {"company": task.get("company", ""), "user": task.get("user", "")}
    return result


@endpoint("queues.peek_task", "2.15")
def peek_task(call: Call) -> dict[str, Any]:
    (queue_id,) = call.require("queue")
    get_queue(call, queue_id)
    popped.requeue_lost(call)
    entries = call.backend.store.entries(queue_id)
    return {"task": entries[0]["task"]} if entries else {}


@endpoint("queues.get_num_entries", "2.15")
def get_num_entries(call: Call) -> dict[str, Any]:
    (queue_id,) = call.require("queue")
    get_queue(call, queue_id)
    popped.requeue_lost(call)
    return {"num": call.backend.store.count_entries(queue_id)}


@endpoint("queues.clear_queue", "2.31")
def clear_queue(call: Call) -> dict[str, Any]:
    (queue_id,) = call.require("queue")
    get_queue(call, queue_id)
    return {"removed_tasks": call.backend.store.clear_entries(queue_id)}


def _move(call: Call, where: str) -> dict[str, Any]:
    queue_id, task_id = call.require("queue", "task")
    store = call.backend.store
    with store.transaction():
        get_queue(call, queue_id)
        order = [e["task"] for e in store.entries(queue_id)]
        if task_id not in order:
            raise errors.invalid_queue_or_task_not_queued(f"task={task_id}, queue={queue_id}")
        index = order.index(task_id)
        order.pop(index)
        count = int(call.data.get("count") or 1)
        target = {
            "forward": max(index - count, 0),
            "backward": min(index + count, len(order)),
            "to_front": 0,
            "to_back": len(order),
        }[where]
        order.insert(target, task_id)
        store.reorder(queue_id, order)
    return {"position": target}


for _where in ("forward", "backward", "to_front", "to_back"):
    endpoint(f"queues.move_task_{_where}", "2.4")(lambda call, w=_where: _move(call, w))


@endpoint("queues.get_queue_metrics", "2.4")
def get_queue_metrics(call: Call) -> dict[str, Any]:
    ids = call.data.get("queue_ids") or [q["id"] for q in call.backend.store.all(KIND)]
    return {"queues": [{"queue": q, "dates": [], "avg_waiting_times": [], "queue_lengths": []} for q in ids]}
