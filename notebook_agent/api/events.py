"""Typed helpers for the `events.*` endpoints and a builder for console log events."""

from __future__ import annotations

import time
from typing import Any

from notebook_agent.api._common import API_VERSION, Sender, call

# The embedded server's token claim: it stores a log event that carries an `id` once per task (a re-sent batch
# adds nothing). Real servers lack it and give every event a fresh id, so clients send no `id` there.
EVENT_IDS_CLAIM = "notebook_agent_event_ids"

LOG_LEVELS = frozenset({"notset", "debug", "verbose", "info", "warn", "warning", "error", "fatal", "critical"})


def log_event(
    task: str, msg: str, level: str = "info", worker: str | None = None, timestamp_ms: int | None = None
) -> dict[str, Any]:
    """One console `log` event as the SDK sends it. The timestamp defaults to now (epoch ms), so lines keep
    their own time even when a batch is flushed seconds later; a missing worker defaults server-side to the
    X-ClearML-Worker header."""
    level = level.lower()  # the schema's enum is lower case (the agent's "INFO" only works by leniency)
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    event: dict[str, Any] = {
        "type": "log",
        "task": task,
        "timestamp": int(timestamp_ms) if timestamp_ms is not None else int(time.time() * 1000),
        "level": level,
        "msg": msg,
    }
    if worker:
        event["worker"] = worker
    return event


def add_batch(session: Sender, events: list[dict[str, Any]], *, once: bool = False) -> dict[str, Any]:
    """Send events as json-lines; returns {added, errors, errors_info} (and `duplicates` from a server with
    EVENT_IDS_CLAIM). Bad events are counted, not raised. `once`: a single attempt, no blind re-send after a
    transport failure (the caller decides what to send again; needs a Session)."""
    if not events:
        # The server rejects an empty batch (400/17); nothing to send is not an error for us.
        return {"added": 0, "errors": 0}
    lines = [{k: v for k, v in event.items() if v is not None} for event in events]
    if once:
        extra: dict[str, Any] = {"retry_seconds": 0.0}
        return session.send("events.add_batch", version=API_VERSION, lines=lines, **extra)
    return session.send("events.add_batch", version=API_VERSION, lines=lines)


def get_task_log(
    session: Sender,
    task: str,
    batch_size: int = 500,
    navigate_earlier: bool = True,
    order: str | None = None,
    from_timestamp: float | None = None,
) -> dict[str, Any]:
    """A page of log events: {events, returned, total}. navigate_earlier=True starts from the newest."""
    return call(
        session,
        "events.get_task_log",
        task=task,
        batch_size=int(batch_size),
        navigate_earlier=navigate_earlier,
        order=order,
        from_timestamp=from_timestamp,
    )


def get_task_events(
    session: Sender,
    task: str,
    event_type: str | None = None,
    order: str | None = None,
    scroll_id: str | None = None,
    batch_size: int = 500,
) -> dict[str, Any]:
    """A page of task events: {events, returned, total, scroll_id}; pass scroll_id back for the next page."""
    return call(
        session,
        "events.get_task_events",
        task=task,
        event_type=event_type,
        order=order,
        scroll_id=scroll_id,
        batch_size=int(batch_size),
    )
