"""Resolve the queues a worker listens to, by name or id, creating missing ones only when asked."""

from __future__ import annotations

import re
from collections.abc import Sequence

from notebook_agent import api
from notebook_agent.api import APIError, Codes
from notebook_agent.engine.queue_order import QueueRef

# clearml-agent treats a string like this as an id, anything else as a name.
_ID = re.compile(r"^[-a-f0-9]{30,}$")


class QueueNotFoundError(LookupError):
    """A queue that does not exist on the server (and --create-queue was not given)."""


def resolve_queues(session: api.Session, queues: Sequence[str], *, create: bool = False) -> list[QueueRef]:
    """QueueRefs in the given (priority) order; the server's default queue when none is given."""
    if not queues:
        default = api.queues.get_default(session)
        return [QueueRef(default["id"], default["name"])]
    resolved: list[QueueRef] = []
    for wanted in queues:
        ref = _find(session, wanted)
        if ref is None:
            if not create:
                raise QueueNotFoundError(
                    f"queue {wanted!r} does not exist on {session.base_url}; create it in the ClearML web app "
                    "or start the agent with --create-queue"
                )
            ref = QueueRef(api.queues.create(session, wanted), wanted)
        if ref not in resolved:
            resolved.append(ref)
    return resolved


def _find(session: api.Session, wanted: str) -> QueueRef | None:
    if _ID.match(wanted):
        try:
            doc = api.queues.get_by_id(session, wanted)
            return QueueRef(doc["id"], doc["name"])
        except APIError as err:
            if not err.is_(Codes.INVALID_QUEUE_ID):
                raise
    doc = api.queues.find_by_name(session, wanted)
    return QueueRef(doc["id"], doc["name"]) if doc else None
