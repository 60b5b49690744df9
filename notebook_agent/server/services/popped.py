"""Tasks popped by a worker that died before starting them go back to the front of their queue.

A pop takes a task out of its queue while it stays `queued`; the worker then marks it `in_progress`. A worker
that dies (or loses the reply) in between leaves the task `queued` in no queue: the real ClearML server keeps it
there for good (a known clearml-agent hole). This server remembers which registered worker popped each task, from
which queue and when. Once that worker has unregistered or its registration has lapsed (its `timeout` since its
last activity) while the task is still `queued` and in no queue, the task goes back to the front of that queue.
The check is lazy, made when queues are read or popped; nothing runs in the background.

A worker that lapsed may still be alive (a long network cut) and try to start the task afterwards, while another
worker runs it: such a task remembers the workers it was taken back from, and `refuse_reclaimed` turns their
status changes away, so the task never runs twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from notebook_agent.server import errors
from notebook_agent.server.registry import Call

logger = logging.getLogger(__name__)

KIND = "pop"  # documents {id: task id, worker, queue, at, reclaimed_from: [worker ids]}
WORKER_KIND = "worker"
DEFAULT_TIMEOUT = 600.0  # workers.DEFAULT_TIMEOUT: a registration without its own timeout


def remember(call: Call, queue_id: str, task_id: str) -> None:
    """`call.worker` popped `task_id` from `queue_id`. Only a registered worker is remembered: an unregistered one
    never lapses, so nothing could ever be decided about its pops. Call inside the pop's transaction."""
    worker_id = call.worker or ""
    store = call.backend.store
    previous = store.get(KIND, task_id) or {}
    reclaimed = [w for w in previous.get("reclaimed_from") or [] if w != worker_id]  # popped again: its own now
    if not worker_id or store.get(WORKER_KIND, worker_id) is None:
        _keep_or_drop(call, {"id": task_id, "reclaimed_from": reclaimed})
        return
    pop = {"id": task_id, "worker": worker_id, "queue": queue_id, "at": call.backend.now_iso()}
    store.put(KIND, {**pop, "reclaimed_from": reclaimed})


def _keep_or_drop(call: Call, pop: dict[str, Any]) -> None:
    """Store the record while it still guards the task (workers it was taken back from), else delete it."""
    store = call.backend.store
    if pop.get("reclaimed_from"):
        store.put(KIND, {"id": pop["id"], "reclaimed_from": pop["reclaimed_from"]})
    else:
        store.delete(KIND, pop["id"])


def _lapses_at(call: Call, worker_id: str) -> datetime | None:
    """When the worker's registration lapses (None: never registered any more, i.e. lapsed already)."""
    worker = call.backend.store.get(WORKER_KIND, worker_id)
    if worker is None or not worker.get("last_activity_time"):
        return None
    timeout = float(worker.get("timeout") or DEFAULT_TIMEOUT)
    return datetime.fromisoformat(worker["last_activity_time"]) + timedelta(seconds=timeout)


def requeue_lost(call: Call) -> list[str]:
    """Put back every task whose popping worker is gone while the task is still `queued` in no queue; the ids."""
    store = call.backend.store
    if not any(p.get("worker") for p in store.all(KIND)):  # the usual case: one cheap read, no write transaction
        return []
    requeued = []
    with store.transaction():
        now = call.backend.now()
        # Newest pop first: each goes to the front, so the oldest ends up first, as they were popped.
        for pop in reversed(store.all(KIND)):
            worker_id = pop.get("worker")
            if not worker_id:
                if store.get("task", pop["id"]) is None:
                    store.delete(KIND, pop["id"])
                continue
            task = store.get("task", pop["id"])
            if task is None or task.get("status") != "queued" or store.queues_of_task(pop["id"]):
                _keep_or_drop(call, pop)  # started, stopped, reset or enqueued again: the pop is settled
                continue
            lapses = _lapses_at(call, worker_id)
            if lapses is not None and now < lapses:
                continue
            if store.get("queue", pop["queue"]) is None:
                logger.warning("task %s was lost by worker %s but its queue is gone", pop["id"], worker_id)
                _keep_or_drop(call, pop)
                continue
            store.push_entry(pop["queue"], pop["id"], call.backend.now_iso(), front=True)
            _keep_or_drop(call, {"id": pop["id"], "reclaimed_from": [*pop.get("reclaimed_from", []), worker_id]})
            requeued.append(pop["id"])
            logger.info("task %s popped by worker %s, which is gone, is back in its queue", pop["id"], worker_id)
    if requeued:
        call.backend.notify_queues()
    return requeued


def seconds_to_next_lapse(call: Call, queue_ids: list[str]) -> float | None:
    """How long until a worker that popped a task from one of `queue_ids` (and has not started it) lapses: a long
    poll on those queues wakes then, so the task taken back is pulled at once. None: no such pop."""
    store = call.backend.store
    pops = [p for p in store.all(KIND) if p.get("worker") and p.get("queue") in queue_ids]
    if not pops:
        return None
    now = call.backend.now()
    left = []
    for pop in pops:
        task = store.get("task", pop["id"])
        if task is None or task.get("status") != "queued":
            continue
        lapses = _lapses_at(call, pop["worker"])
        left.append(0.0 if lapses is None else max((lapses - now).total_seconds(), 0.0))
    return min(left) if left else None


def refuse_reclaimed(call: Call, task_id: str) -> None:
    """400/110 when `call.worker` lost this task to a lapse and the task went back to its queue: the worker's
    late start (or end) would run it twice or end another worker's run."""
    worker_id = call.worker
    if not worker_id:
        return
    pop = call.backend.store.get(KIND, task_id)
    if pop is not None and worker_id in (pop.get("reclaimed_from") or []):
        raise errors.invalid_task_status(
            f"task {task_id} went back to its queue after worker {worker_id} lapsed", task=task_id, worker=worker_id
        )
