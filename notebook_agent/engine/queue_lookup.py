"""Resolve the queues a worker listens to, by name or id, creating missing ones only when asked."""

from __future__ import annotations

import re
from collections.abc import Sequence

from notebook_agent import api
from notebook_agent.api import APIError, Codes
from notebook_agent.engine.queue_order import QueueRef
from notebook_agent.masking import mask_url

# clearml-agent treats a string like this as an id, anything else as a name.
_ID = re.compile(r"^[-a-f0-9]{30,}$")
_LISTED = 20  # known queue names shown in the error; a big server has hundreds


class QueueNotFoundError(LookupError):
    """A queue that does not exist on the server (and --create-queue was not given)."""


def resolve_queues(session: api.Session, queues: Sequence[str], *, create: bool = False) -> list[QueueRef]:
    """QueueRefs in the given (priority) order; the server's default queue when none is given."""
    if not queues:
        try:
            default = api.queues.get_default(session)
        except APIError as err:
            if not err.is_(Codes.NO_DEFAULT_QUEUE):
                raise
            raise QueueNotFoundError(_no_default(session)) from None
        return [QueueRef(default["id"], default["name"])]
    resolved: list[QueueRef] = []
    for wanted in queues:
        ref = _find(session, wanted)
        if ref is None:
            if not create:
                raise QueueNotFoundError(_not_found(session, wanted))
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


def _not_found(session: api.Session, wanted: str) -> str:
    """The error text for a missing queue: which, where, the queues that do exist, and how to create it."""
    return (
        f"queue {wanted!r} does not exist on {mask_url(session.base_url)} ({_known(session)}); create it in the "
        "ClearML web app (Queues), or pass --create-queue (daemon and submit; create_queue=True in a notebook)"
    )


def _no_default(session: api.Session) -> str:
    return (
        f"no queue given, and {mask_url(session.base_url)} has no default queue ({_known(session)}); name the "
        "queues to listen to: --queue NAME (queues=[...] in a notebook)"
    )


def _known(session: api.Session) -> str:
    try:
        names = sorted(str(q.get("name") or q.get("id")) for q in api.queues.get_all(session, only_fields=["name"]))
    except APIError:
        return "the queues on it could not be listed"  # a help, not the point: still say what is missing
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return f"known queues: {', '.join(names[:_LISTED])}{more}" if names else "it has no queues"
