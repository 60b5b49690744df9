"""Handlers of the embedded server, one module per ClearML service; importing this package registers them."""

from notebook_agent.server.services import (
    events,
    projects,
    queues,
    system,
    task_params,
    task_status,
    tasks,
    workers,
)

__all__ = ["events", "projects", "queues", "system", "task_params", "task_status", "tasks", "workers"]
