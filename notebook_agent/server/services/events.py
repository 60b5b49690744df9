"""`events.*` endpoints: log and metric events in, console logs and scalar histories out.

Our extension (token claim `notebook_agent_event_ids`): a log event with a string `id` is stored once per task; a
re-sent batch adds nothing and the answer counts those events in `duplicates`, not in `added`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from notebook_agent.server import errors
from notebook_agent.server.auth import event_ids_enabled
from notebook_agent.server.registry import Call, endpoint
from notebook_agent.server.services.tasks import KIND as TASK
from notebook_agent.server.store import LOG_EVENT_ID_KIND

EVENT_TYPES = {"log", "training_stats_scalar", "training_stats_vector", "training_debug_image", "plot"}
_LOCKED = {"publishing", "published"}
_INT64 = 2**63
_DROPPED_FIELDS = ("method", "allow_locked", "model_event")
SEEN_ID = LOG_EVENT_ID_KIND  # documents of this kind mark a log event id as stored: "<task>:<id>"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _update_metrics(task: dict, event: dict) -> None:
    """Keep `last_iteration` and `last_metrics` current, as the real server does on scalar events."""
    iteration = int(event.get("iter") or 0)
    task["last_iteration"] = max(int(task.get("last_iteration") or 0), iteration)
    metric, variant = str(event.get("metric", "")), str(event.get("variant", ""))
    value = event.get("value")
    slot = task.setdefault("last_metrics", {}).setdefault(_md5(metric), {}).setdefault(_md5(variant), {})
    if isinstance(value, int | float):
        slot["min_value"] = min(slot.get("min_value", value), value)
        slot["max_value"] = max(slot.get("max_value", value), value)
    slot.update(metric=metric, variant=variant, value=value, iter=iteration)


def add_events(call: Call, items: list[dict]) -> dict[str, Any]:
    if not items:
        raise errors.batch_contains_no_items()
    store = call.backend.store
    errors_info: Counter[str] = Counter()
    accepted: list[dict] = []
    duplicates = 0
    dedup = event_ids_enabled()
    with store.transaction():
        tasks: dict[str, dict | None] = {}
        for item in items:
            task_id = item.get("task")
            if item.get("type") not in EVENT_TYPES:
                errors_info[f"invalid event type {item.get('type')!r}"] += 1
                continue
            if not isinstance(task_id, str) or not task_id:
                errors_info["missing task id"] += 1
                continue
            if task_id not in tasks:
                tasks[task_id] = store.get(TASK, task_id)
            task = tasks[task_id]
            if task is None:
                errors_info["Invalid task id"] += 1
                continue
            if task.get("status") in _LOCKED and not item.get("allow_locked"):
                errors_info["Task is locked (published)"] += 1
                continue
            try:  # a bad number is one counted error, not a failed batch
                iteration = int(item.get("iter") or 0)
                stamp = call.backend.now_ms() if item.get("timestamp") is None else int(item["timestamp"])
            except (TypeError, ValueError, OverflowError):
                errors_info["invalid iter or timestamp"] += 1
                continue
            if "iter" in item and not (-_INT64 <= iteration < _INT64):
                errors_info["iter out of range"] += 1
                continue
            event = {k: v for k, v in item.items() if k not in _DROPPED_FIELDS}
            event["timestamp"] = stamp
            if event["type"] == "log":
                if dedup and isinstance(event.get("id"), str) and event["id"]:
                    seen = f"{task_id}:{event['id']}"
                    if store.get(SEEN_ID, seen) is not None:
                        duplicates += 1
                        continue
                    store.put(SEEN_ID, {"id": seen})
                event.setdefault("worker", call.worker or "")
                event.setdefault("level", "info")
            elif event["type"] == "training_stats_scalar":
                _update_metrics(task, event)
            accepted.append(event)
        store.add_events(accepted)
        now = call.backend.now_iso()
        for task in tasks.values():
            if task is not None and any(e["task"] == task["id"] for e in accepted):
                task["last_update"] = now
                store.put(TASK, task)
    result = {"added": len(accepted), "errors": sum(errors_info.values()), "errors_info": dict(errors_info)}
    if duplicates:
        result["duplicates"] = duplicates
    return result


@endpoint("events.add_batch", "2.1")
def add_batch(call: Call) -> dict[str, Any]:
    items = call.batch if call.batch is not None else ([call.data] if call.data else [])
    return add_events(call, items)


@endpoint("events.add", "2.1")
def add(call: Call) -> dict[str, Any]:
    return add_events(call, [call.data] if call.data else [])


def _with_iso(event: dict) -> dict:
    stamp = datetime.fromtimestamp(event["timestamp"] / 1000, tz=timezone.utc)
    return {**event, "@timestamp": stamp.isoformat(timespec="milliseconds")}


@endpoint("events.get_task_log", "2.9")
def get_task_log(call: Call) -> dict[str, Any]:
    """Pages of console lines: newest first when navigating earlier, in the requested order within a page."""
    (task_id,) = call.require("task")
    data = call.data
    store = call.backend.store
    if store.get(TASK, task_id) is None:
        raise errors.invalid_task_id(f"id={task_id}")
    batch = max(1, min(int(data.get("batch_size") or 5000), 10000))
    earlier = data.get("navigate_earlier", True)
    since = data.get("from_timestamp")
    cursor = (int(since), 0 if earlier else 2**62) if since is not None else None
    rows = store.events(
        task_id,
        ["log"],
        before=cursor if earlier else None,
        after=cursor if not earlier else None,
        descending=bool(earlier),
        limit=batch,
    )
    if rows:
        # As the real server does, bring every event of the page's last timestamp (even past batch_size), so
        # that the next page, which starts strictly beyond from_timestamp, loses none of the lines sharing it.
        seq, last = rows[-1]
        ts = int(last["timestamp"])
        rows += store.events(
            task_id,
            ["log"],
            before=(ts, seq) if earlier else (ts + 1, 0),
            after=(ts - 1, 2**62) if earlier else (ts, seq),
            descending=bool(earlier),
            limit=10000,
        )
    events = [_with_iso(e) for _, e in rows]
    order = data.get("order") or ("desc" if earlier else "asc")
    if (order == "asc") == bool(earlier):
        events.reverse()
    total = store.count_events(task_id, ["log"])
    return {"events": events, "returned": len(events), "total": total}


@endpoint("events.get_task_events", "2.1")
def get_task_events(call: Call) -> dict[str, Any]:
    """All events of a task in pages; the scroll id is the (timestamp, seq) of the last event returned."""
    (task_id,) = call.require("task")
    data = call.data
    event_type = data.get("event_type")
    types = None if event_type in (None, "", "all") else [event_type]
    descending = data.get("order") == "desc"
    cursor = None
    if data.get("scroll_id"):
        try:
            ts, seq = (int(x) for x in str(data["scroll_id"]).split(":"))
            cursor = (ts, seq)
        except ValueError:
            raise errors.validation_error("invalid scroll_id") from None
    rows = call.backend.store.events(
        task_id,
        types,
        before=cursor if descending else None,
        after=cursor if not descending else None,
        descending=descending,
        limit=max(1, min(int(data.get("batch_size") or 500), 10000)),
    )
    scroll = f"{rows[-1][1]['timestamp']}:{rows[-1][0]}" if rows else data.get("scroll_id")
    return {
        "events": [_with_iso(e) for _, e in rows],
        "returned": len(rows),
        "total": call.backend.store.count_events(task_id, types),
        "scroll_id": scroll,
    }


def _scalars(call: Call, task_id: str) -> list[dict]:
    return [e for _, e in call.backend.store.events(task_id, ["training_stats_scalar"], limit=10**7)]


@endpoint("events.scalar_metrics_iter_histogram", "2.1")
def scalar_metrics_iter_histogram(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for event in _scalars(call, task_id):
        series = out.setdefault(event.get("metric", ""), {}).setdefault(
            event.get("variant", ""), {"name": event.get("variant", ""), "x": [], "y": []}
        )
        series["x"].append(event.get("iter", 0))
        series["y"].append(event.get("value"))
    return out


@endpoint("events.get_scalar_metrics_and_variants", "2.1")
def get_scalar_metrics_and_variants(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    metrics: dict[str, dict[str, dict]] = {}
    for event in _scalars(call, task_id):
        metrics.setdefault(event.get("metric", ""), {})[event.get("variant", "")] = {"name": event.get("variant")}
    return {"metrics": metrics}


@endpoint("events.delete_for_task", "2.1")
def delete_for_task(call: Call) -> dict[str, Any]:
    (task_id,) = call.require("task")
    return {"deleted": call.backend.store.delete_events(task_id)}
