"""Typed client for the ClearML Server REST API: a Session plus thin helpers per service."""

from notebook_agent.api import events, projects, queues, tasks, workers
from notebook_agent.api._common import API_VERSION
from notebook_agent.api.errors import APIError, Codes, NotFoundError, TransportError, UnauthorizedError
from notebook_agent.api.queues import QueueEntry
from notebook_agent.api.session import Session

__all__ = [
    "API_VERSION",
    "APIError",
    "Codes",
    "NotFoundError",
    "QueueEntry",
    "Session",
    "TransportError",
    "UnauthorizedError",
    "events",
    "projects",
    "queues",
    "tasks",
    "workers",
]
