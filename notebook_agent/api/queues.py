"""Typed helpers for the `queues.*` endpoints."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from notebook_agent.api._common import API_VERSION, Sender, body, call


@dataclass(frozen=True)
class QueueEntry:
    """One popped queue entry: the task ID, when it was added (ISO date) and, if asked for, task_info."""

    task: str
    added: str | None = None
    task_info: dict[str, Any] | None = None


def get_all(
    session: Sender,
    name: str | None = None,
    ids: list[str] | None = None,
    only_fields: list[str] | None = None,
    tags: list[str] | None = None,
    system_tags: list[str] | None = None,
    search_hidden: bool | None = None,
) -> list[dict[str, Any]]:
    """Queues matching the filters; `name` is a regular expression on the server."""
    data = call(
        session,
        "queues.get_all",
        name=name,
        id=ids,
        only_fields=only_fields,
        tags=tags,
        system_tags=system_tags,
        search_hidden=search_hidden,
    )
    return list(data.get("queues") or [])


def get_by_id(session: Sender, queue: str) -> dict[str, Any]:
    return dict(call(session, "queues.get_by_id", queue=queue).get("queue") or {})


def get_default(session: Sender) -> dict[str, Any]:
    """{id, name} of the queue with system tag `default`; 400/707 (Codes.NO_DEFAULT_QUEUE) if none."""
    return call(session, "queues.get_default")


def create(session: Sender, name: str, tags: list[str] | None = None, system_tags: list[str] | None = None) -> str:
    """Create a queue and return its ID; a duplicate name gives 400/801."""
    return str(call(session, "queues.create", name=name, tags=tags, system_tags=system_tags)["id"])


def add_task(session: Sender, queue: str, task: str) -> dict[str, Any]:
    """Append a task to a queue ({added}); this does not change the task's status, tasks.enqueue does."""
    return call(session, "queues.add_task", queue=queue, task=task)


def remove_task(session: Sender, queue: str, task: str) -> dict[str, Any]:
    return call(session, "queues.remove_task", queue=queue, task=task)


def delete(session: Sender, queue: str, force: bool = False) -> dict[str, Any]:
    return call(session, "queues.delete", queue=queue, force=force)


LONG_POLL_CLAIM = "notebook_agent_long_poll"
WAIT_HEADER = "X-NotebookAgent-Wait"
WATCH_HEADER = "X-NotebookAgent-Watch"


def get_next_task(
    session: Sender,
    queue: str,
    get_task_info: bool = False,
    *,
    wait_sec: float | None = None,
    watch: Sequence[str] = (),
) -> QueueEntry | None:
    """Pop the first entry of a queue; None when the queue is empty (the server answers `data: {}`).

    `wait_sec` (only for servers whose token has the `notebook_agent_long_poll` claim: ours) makes the server
    hold an empty answer until `queue` or one of the `watch` queues gets a task, for at most that long. It
    travels in headers, so the body stays the real schema's.
    """
    # get_task_info is 2.14+; leave it out unless asked so older servers see the plain 2.4 request.
    fields = body(queue=queue, get_task_info=get_task_info or None)
    if wait_sec:
        headers = {WAIT_HEADER: f"{wait_sec:g}", WATCH_HEADER: ",".join(watch or [queue])}
        data = session.send("queues.get_next_task", fields, version=API_VERSION, headers=headers)
    else:
        data = session.send("queues.get_next_task", fields, version=API_VERSION)
    entry = data.get("entry")
    if not entry or not entry.get("task"):
        return None
    return QueueEntry(task=entry["task"], added=entry.get("added"), task_info=data.get("task_info"))


def find_by_name(session: Sender, name: str) -> dict[str, Any] | None:
    """The queue named exactly `name`, or None. The server matches names as regexes, hence anchor+escape."""
    for queue in get_all(session, name="^" + re.escape(name) + "$"):
        if queue.get("name") == name:
            return queue
    return None
