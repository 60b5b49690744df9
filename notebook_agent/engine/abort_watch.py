"""Watches a running task for an abort: the server's `stopping` signal, a status changed under us, or ours.

It also pings the task, so the server knows a live worker runs it (`tasks.stop` relies on that).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from notebook_agent import api
from notebook_agent.api import APIError

logger = logging.getLogger(__name__)

# Statuses that mean someone else took the task over (clearml-agent kills the process and keeps the status).
_TAKEN_OVER = {"closed", "stopped", "failed", "published", "queued"}
_RESET_POLLS = 4  # `created` this many polls in a row: the task was reset


class AbortWatch:
    """A thread that sets `triggered` (with `reason`) when the task must stop."""

    def __init__(
        self,
        session: api.Session,
        task_id: str,
        local_abort: threading.Event,
        *,
        poll_sec: float = 1.0,
        ping_sec: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.task_id = task_id
        self.local_abort = local_abort
        self.poll_sec = poll_sec
        self.ping_sec = ping_sec
        self.clock = clock
        self.triggered = threading.Event()
        self.reason = ""
        self.server_changed_status = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"abort-watch-{self.task_id[:8]}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_sec + 5)

    def trigger(self, reason: str, server_changed: bool = False) -> None:
        """Stop the task for `reason` (the first reason wins)."""
        if not self.triggered.is_set():
            self.reason, self.server_changed_status = reason, server_changed
            self.triggered.set()

    def _loop(self) -> None:
        created_polls = 0
        next_ping = self.clock() + self.ping_sec
        while not self.triggered.is_set():
            if self._closed.wait(self.poll_sec):
                return
            if self.local_abort.is_set():
                self.trigger("user abort")
                return
            try:
                status, message = api.tasks.get_status(self.session, self.task_id)
                if self.clock() >= next_ping:
                    api.tasks.ping(self.session, self.task_id)
                    next_ping = self.clock() + self.ping_sec
            except APIError as err:
                logger.info("abort watch of %s: %s", self.task_id, err)
                continue
            if status == "in_progress" and "stopping" in (message or ""):
                self.trigger("task was stopped by tasks.stop")
            elif status in _TAKEN_OVER:
                self.trigger(f"task status changed to {status}", server_changed=True)
            elif status == "created":
                created_polls += 1
                if created_polls >= _RESET_POLLS:
                    self.trigger("task was reset", server_changed=True)
            else:
                created_polls = 0
