"""The worker's gate before each pull: working hours and force switches, with the server reads they need."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from notebook_agent import api
from notebook_agent.api import APIError, TransportError
from notebook_agent.engine.queue_order import QueueRef
from notebook_agent.engine.schedule import FORCE_KEY, Decision, RuntimeProperty, Schedule, decide

logger = logging.getLogger(__name__)

PROPERTIES_EVERY_SEC = 5.0  # how stale the worker's runtime properties (force on/off) may be
QUEUE_TAGS_EVERY_SEC = 30.0  # how stale the queues' tags (force_workers:on/off) may be


class PullGate:
    """Which of the worker's queues it may pull from now (`schedule.decide` per queue).

    Runtime properties and queue tags are read at most every `properties_every` / `tags_every` seconds. A server
    without runtime properties (the OSS one answers 404) has none, and is not asked again, as in clearml-agent.
    When the server cannot be reached, the last values stand: the pull that follows reports that failure.
    """

    def __init__(
        self,
        session: api.Session,
        worker_id: str,
        schedule: Schedule,
        *,
        clock: Callable[[], datetime] = datetime.now,
        monotonic: Callable[[], float] = time.monotonic,
        properties_every: float = PROPERTIES_EVERY_SEC,
        tags_every: float = QUEUE_TAGS_EVERY_SEC,
    ) -> None:
        self.session = session
        self.worker_id = worker_id
        self.schedule = schedule
        self.clock = clock
        self.monotonic = monotonic
        self.properties_every = properties_every
        self.tags_every = tags_every
        self.properties_supported = True
        self._properties: list[RuntimeProperty] = []
        self._tags: dict[str, list[str]] = {}
        self._properties_at: float | None = None
        self._tags_at: float | None = None
        self._warned: set[str] = set()

    def invalidate(self) -> None:
        """Read the runtime properties and queue tags again before the next decision (a switch may have changed)."""
        self._properties_at = self._tags_at = None

    def decisions(self, queues: Sequence[QueueRef]) -> list[tuple[QueueRef, Decision]]:
        """A decision for each queue, in the given order."""
        self._refresh_properties()
        self._refresh_tags(queues)
        now = self.clock()
        return [(q, decide(now, self.schedule, self._properties, self._tags.get(q.id, ()))) for q in queues]

    def open_queues(self, queues: Sequence[QueueRef]) -> tuple[list[QueueRef], str]:
        """The queues that may be pulled from now (order kept); when none, why not (the idle state's detail)."""
        decisions = self.decisions(queues)
        open_ = [q for q, d in decisions if d.pull]
        if open_:
            return open_, ""
        reasons: list[str] = []
        for queue, decision in decisions:
            reason = decision.reason + (f" on queue {queue.name}" if decision.source == "queue_tag" else "")
            if reason not in reasons:
                reasons.append(reason)
        return [], "; ".join(reasons)

    # server reads ------------------------------------------------------------------------------------------
    def _due(self, last: float | None, every: float) -> bool:
        return last is None or self.monotonic() - last >= every

    def _refresh_properties(self) -> None:
        if not self.properties_supported or not self._due(self._properties_at, self.properties_every):
            return
        self._properties_at = self.monotonic()  # failed reads, too, are retried only when due again
        try:
            docs = api.workers.get_runtime_properties(self.session, self.worker_id)
        except TransportError as err:
            logger.debug("runtime properties not read (%s); keeping the last ones", err)
            return
        except APIError as err:
            # clearml-agent does the same: no runtime properties on this server, so only tags and the schedule.
            logger.info("the server has no worker runtime properties (%s); force on/off is not available", err)
            self.properties_supported, self._properties = False, []
            return
        fetched_at = self.clock()
        self._properties = [RuntimeProperty.from_api(doc, fetched_at) for doc in docs if isinstance(doc, dict)]
        self._warn_unknown_force()

    def _warn_unknown_force(self) -> None:
        for prop in self._properties:
            known = prop.value.strip().lower() in ("on", "off")
            if prop.key == FORCE_KEY and not known and prop.value not in self._warned:
                self._warned.add(prop.value)
                logger.warning("ignoring runtime property force=%r: the values are 'on' and 'off'", prop.value)

    def _refresh_tags(self, queues: Sequence[QueueRef]) -> None:
        if not self._due(self._tags_at, self.tags_every):
            return
        self._tags_at = self.monotonic()
        try:
            docs = api.queues.get_all(self.session, ids=[q.id for q in queues], only_fields=["id", "name", "tags"])
        except APIError as err:
            logger.debug("queue tags not read (%s); keeping the last ones", err)
            return
        self._tags = {str(doc.get("id")): list(doc.get("tags") or []) for doc in docs}
