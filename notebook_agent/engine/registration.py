"""Keeps the worker registered: a server that forgot it (400/1001 on a status report, 400/1004) or that was
unreachable for a while (its registry may have expired the worker meanwhile) gets a fresh `workers.register`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from notebook_agent.api import APIError, Codes, TransportError

logger = logging.getLogger(__name__)

FORGOTTEN = (Codes.INVALID_WORKER_ID, Codes.WORKER_NOT_REGISTERED)


class Registration:
    """`register` registers the worker (with its queues); `stopping` says the worker leaves (never re-register
    then: it unregisters on purpose)."""

    def __init__(self, register: Callable[[], None], stopping: Callable[[], bool]) -> None:
        self._register = register
        self._stopping = stopping
        self._lock = threading.Lock()
        self._stale = False  # the server was unreachable (or forgot us) since the last registration
        self.renewals = 0

    def failed(self, err: BaseException) -> bool:
        """Note a failed call; True when the server had forgotten the worker and it is registered again now (the
        caller may repeat its call)."""
        if isinstance(err, TransportError):
            self._stale = True
            return False
        if isinstance(err, APIError) and err.is_(*FORGOTTEN):
            logger.info("the server does not know this worker (%s); registering again", err)
            self._stale = True
            return self.renew()
        return False

    def renew(self) -> bool:
        """Register again if an outage or a forgetful server asked for it; True when that happened now."""
        if not self._stale or self._stopping():
            return False
        with self._lock:
            if not self._stale:
                return False
            try:
                self._register()
            except APIError as err:
                logger.info("registering the worker again failed: %s", err)
                return False
            self._stale = False
            self.renewals += 1
            return True
