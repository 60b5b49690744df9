"""Sends batches of log events so that each lands once, on our embedded server and on a real ClearML server alike.

A batch goes out in one attempt (no blind re-send). With the embedded server's event-id claim every event carries
its stable id and a re-sent batch adds nothing there. A real server gives each event a fresh id, so after an
*ambiguous* failure (the request may have reached it: read timeout, reset after sending, 502/503/504) the next
attempt first reads the task's log back from the batch's first timestamp and sends only the events not there,
matched on (timestamp, level, msg): a shipper's timestamps are strictly increasing, so that triple names one event.
A failure that surely never reached the server (connection refused) is simply sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from notebook_agent import api
from notebook_agent.api import APIError, TransportError

logger = logging.getLogger(__name__)

ENDPOINT = "events.add_batch"
READ_BACK_PAGE = 1000
_Key = tuple[int, str, str]


def _key(event: dict[str, Any]) -> _Key:
    return int(event.get("timestamp") or 0), str(event.get("level") or ""), str(event.get("msg") or "")


def maybe_delivered(exc: BaseException) -> bool:
    """True when a failed add_batch may still have been stored: the server (or a proxy) may have acted on it."""
    if isinstance(exc, TransportError):
        # A TransportError of another endpoint (the login before it) means the batch itself was never sent.
        return exc.endpoint == ENDPOINT and exc.maybe_delivered
    if isinstance(exc, APIError):
        return exc.code >= 500  # the server answered an error while storing: part of it may be stored
    return True  # an unexpected error: assume the worst, a read-back costs one call


class EventDelivery:
    """The `send` of a LogShipper: `deliver(batch)` returns once every event of the batch is on the server (or
    raises, leaving the batch to be given again). `uncertain=True` starts with a read-back: a batch that a dead
    agent may have sent already (a spool replay)."""

    def __init__(self, session: api.Session, task_id: str, *, uncertain: bool = False) -> None:
        self.session = session
        self.task_id = task_id
        self.uncertain = uncertain  # the last attempt may have been stored: read back before sending again
        self.read_backs = 0
        self.skipped = 0  # events found on the server by a read-back, not sent again

    def __call__(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return self.deliver(batch)

    def deliver(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not batch:
            return {"added": 0, "errors": 0}
        with_ids = bool(self.session.claim(api.events.EVENT_IDS_CLAIM))
        events = list(batch)
        if self.uncertain and not with_ids:
            events = self._not_on_server(events)
            if not events:
                self.uncertain = False
                return {"added": 0, "errors": 0}
        if not with_ids:
            # A real server: the SDK's exact event shape, without our id field.
            events = [{k: v for k, v in e.items() if k != "id"} for e in events]
        try:
            result = api.events.add_batch(self.session, events, once=True)
        except Exception as exc:
            if maybe_delivered(exc):
                self.uncertain = True
            raise
        self.uncertain = False
        return result

    def _not_on_server(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events of the batch that the task's log on the server lacks (raises if it cannot be read)."""
        self.read_backs += 1
        first = min(int(e.get("timestamp") or 0) for e in events)
        last = max(int(e.get("timestamp") or 0) for e in events)
        wanted = {_key(e) for e in events}
        found: set[_Key] = set()
        since = first - 1
        while True:
            page = api.events.get_task_log(
                self.session,
                self.task_id,
                batch_size=READ_BACK_PAGE,
                navigate_earlier=False,
                order="asc",
                from_timestamp=since,
            )
            got = page.get("events") or []
            found.update(k for k in map(_key, got) if k in wanted)
            newest = max((int(e.get("timestamp") or 0) for e in got), default=since)
            if not got or newest >= last or newest <= since or found >= wanted:
                break
            since = newest
        missing = [e for e in events if _key(e) not in found]
        self.skipped += len(events) - len(missing)
        if len(missing) < len(events):
            logger.info(
                "task %s: %d of %d log events were on the server already; sending the other %d",
                self.task_id,
                len(events) - len(missing),
                len(events),
                len(missing),
            )
        return missing
