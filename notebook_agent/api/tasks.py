"""Typed helpers for the `tasks.*` endpoints."""

from __future__ import annotations

from typing import Any

from notebook_agent.api._common import Sender, call
from notebook_agent.api.errors import APIError, Codes


def get_by_id(session: Sender, task: str) -> dict[str, Any]:
    """The whole task document; an unknown ID gives 400/101 (Codes.INVALID_TASK_ID)."""
    return dict(call(session, "tasks.get_by_id", task=task).get("task") or {})


def get_all(
    session: Sender,
    ids: list[str] | None = None,
    status: list[str] | None = None,
    only_fields: list[str] | None = None,
    search_hidden: bool | None = None,
    **filters: Any,
) -> list[dict[str, Any]]:
    """Tasks matching the filters. `filters` go into the body as-is (the schema is open): name (regex),
    project, type, tags, system_tags, order_by, page, page_size, or dotted ones like `execution.queue`."""
    data = call(
        session,
        "tasks.get_all",
        id=ids,
        status=status,
        only_fields=only_fields,
        search_hidden=search_hidden,
        **filters,
    )
    return list(data.get("tasks") or [])


def get_status(session: Sender, task: str) -> tuple[str, str]:
    """(status, status_message) with a cheap projection, the same poll the agent uses to detect aborts."""
    found = get_all(session, ids=[task], only_fields=["status", "status_message"], search_hidden=True)
    if not found:
        invalid = Codes.INVALID_TASK_ID
        raise APIError(invalid.code, invalid.subcode or 0, f"Invalid task id: id={task}", "tasks.get_all")
    return str(found[0].get("status") or ""), str(found[0].get("status_message") or "")


def create(
    session: Sender,
    name: str,
    type: str,
    project: str | None = None,
    script: dict[str, Any] | None = None,
    *,
    comment: str | None = None,
    tags: list[str] | None = None,
    system_tags: list[str] | None = None,
    parent: str | None = None,
    execution: dict[str, Any] | None = None,
    hyperparams: dict[str, Any] | None = None,
    configuration: dict[str, Any] | None = None,
    container: dict[str, str] | None = None,
    output_dest: str | None = None,
) -> str:
    """Create a task (status `created`) and return its ID."""
    data = call(
        session,
        "tasks.create",
        name=name,
        type=type,
        project=project,
        script=script,
        comment=comment,
        tags=tags,
        system_tags=system_tags,
        parent=parent,
        execution=execution,
        hyperparams=hyperparams,
        configuration=configuration,
        container=container,
        output_dest=output_dest,
    )
    return str(data["id"])


def edit(session: Sender, task: str, force: bool = False, **fields: Any) -> dict[str, Any]:
    """Edit task fields (name, script, execution, runtime, ...). Without force only `created` tasks can be
    edited; execution/script are merged one level deep, hyperparams/configuration/runtime replaced."""
    return call(session, "tasks.edit", task=task, force=force, **fields)


def _status_change(
    session: Sender,
    endpoint: str,
    task: str,
    force: bool,
    status_reason: str,
    status_message: str,
    **extra: Any,
) -> dict[str, Any]:
    # Reason and message are always sent ("" is the real server's default) so that every server, the embedded
    # one included, overwrites the previous status's text instead of keeping it.
    return call(
        session,
        endpoint,
        task=task,
        force=force,
        status_reason=status_reason,
        status_message=status_message,
        **extra,
    )


def started(
    session: Sender, task: str, force: bool = False, status_reason: str = "", status_message: str = ""
) -> dict[str, Any]:
    return _status_change(session, "tasks.started", task, force, status_reason, status_message)


def stopped(
    session: Sender, task: str, force: bool = False, status_reason: str = "", status_message: str = ""
) -> dict[str, Any]:
    return _status_change(session, "tasks.stopped", task, force, status_reason, status_message)


def failed(
    session: Sender, task: str, force: bool = False, status_reason: str = "", status_message: str = ""
) -> dict[str, Any]:
    return _status_change(session, "tasks.failed", task, force, status_reason, status_message)


def completed(
    session: Sender,
    task: str,
    force: bool = False,
    status_reason: str = "",
    status_message: str = "",
    publish: bool = False,
) -> dict[str, Any]:
    return _status_change(
        session, "tasks.completed", task, force, status_reason, status_message, publish=publish or None
    )


def stop(
    session: Sender, task: str, force: bool = False, status_reason: str = "", status_message: str = ""
) -> dict[str, Any]:
    """Ask to abort: the server stops a queued/orphan task at once, else sets status_message "stopping"."""
    return _status_change(session, "tasks.stop", task, force, status_reason, status_message)


def reset(
    session: Sender, task: str, force: bool = False, clear_all: bool = False, status_reason: str = ""
) -> dict[str, Any]:
    """Back to `created`: dequeues the task and deletes its events and outputs."""
    return _status_change(session, "tasks.reset", task, force, status_reason, "", clear_all=clear_all or None)


def enqueue(
    session: Sender,
    task: str,
    queue: str | None = None,
    queue_name: str | None = None,
    status_reason: str | None = None,
    status_message: str | None = None,
) -> dict[str, Any]:
    """Queue a task: by queue ID, by name (auto-created), or to the default queue when neither is given."""
    if queue and queue_name:
        raise ValueError("pass queue or queue_name, not both")
    return call(
        session,
        "tasks.enqueue",
        task=task,
        queue=queue,
        queue_name=queue_name,
        status_reason=status_reason or None,
        status_message=status_message or None,
    )


def dequeue(
    session: Sender, task: str, status_reason: str | None = None, status_message: str | None = None
) -> dict[str, Any]:
    """Take a task out of its queue; the status goes back to what it was before enqueue (or `created`)."""
    return call(
        session,
        "tasks.dequeue",
        task=task,
        status_reason=status_reason or None,
        status_message=status_message or None,
    )


def clone(
    session: Sender,
    task: str,
    new_task_name: str | None = None,
    *,
    new_task_comment: str | None = None,
    new_task_project: str | None = None,
    new_task_parent: str | None = None,
    new_task_tags: list[str] | None = None,
    new_task_system_tags: list[str] | None = None,
    new_task_hyperparams: dict[str, Any] | None = None,
    new_task_configuration: dict[str, Any] | None = None,
    new_task_container: dict[str, str] | None = None,
    execution_overrides: dict[str, Any] | None = None,
    new_project_name: str | None = None,
) -> str:
    """Clone a task (status `created`) and return the new task's ID."""
    data = call(
        session,
        "tasks.clone",
        task=task,
        new_task_name=new_task_name,
        new_task_comment=new_task_comment,
        new_task_project=new_task_project,
        new_task_parent=new_task_parent,
        new_task_tags=new_task_tags,
        new_task_system_tags=new_task_system_tags,
        new_task_hyperparams=new_task_hyperparams,
        new_task_configuration=new_task_configuration,
        new_task_container=new_task_container,
        execution_overrides=execution_overrides,
        new_project_name=new_project_name,
    )
    return str(data["id"])


def ping(session: Sender, task: str) -> None:
    """Refresh the task's last_update so the server's watchdog keeps it alive."""
    call(session, "tasks.ping", task=task)


def set_requirements(session: Sender, task: str, requirements: dict[str, Any]) -> dict[str, Any]:
    """Replace script.requirements (e.g. {"pip": "...", "org_pip": "..."}); allowed in any status."""
    return call(session, "tasks.set_requirements", task=task, requirements=requirements)
