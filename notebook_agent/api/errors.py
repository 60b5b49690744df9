"""Errors raised by the ClearML API client, and the server's result codes/subcodes that callers test for."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any


class Codes(Enum):
    """(code, subcode) pairs from the server's `apierrors/errors.conf`; subcode None matches any subcode."""

    MISSING_REQUIRED_FIELDS = (400, 11)
    VALIDATION_ERROR = (400, 12)
    BATCH_CONTAINS_NO_ITEMS = (400, 17)
    INVALID_TASK_ID = (400, 101)
    INVALID_TASK_STATUS = (400, 110)
    FAILED_CHANGING_TASK_STATUS = (400, 121)  # a concurrent status change won the race
    INVALID_PROJECT_ID = (400, 401)
    INVALID_QUEUE_ID = (400, 701)
    QUEUE_NOT_EMPTY = (400, 702)
    INVALID_QUEUE_OR_TASK_NOT_QUEUED = (400, 703)
    TASK_ALREADY_QUEUED = (400, 706)
    NO_DEFAULT_QUEUE = (400, 707)
    MULTIPLE_DEFAULT_QUEUES = (400, 708)
    EXPECTED_UNIQUE_DATA = (400, 801)  # duplicate name
    INVALID_WORKER_ID = (400, 1001)  # status_report of a worker the server does not know (or whose timeout passed)
    WORKER_NOT_REGISTERED = (400, 1004)
    UNAUTHORIZED = (401, None)
    NO_CREDENTIALS = (401, 20)
    BAD_CREDENTIALS = (401, 21)
    INVALID_CREDENTIALS = (401, 22)
    INVALID_TOKEN = (401, 30)
    NOT_FOUND = (404, None)  # unknown endpoint, or a version below every definition
    GENERAL_ERROR = (500, 0)

    @property
    def code(self) -> int:
        return int(self.value[0])

    @property
    def subcode(self) -> int | None:
        return self.value[1]


class APIError(Exception):
    """A call that the server answered with a non-2xx result code (or with something that is no envelope)."""

    def __init__(
        self, code: int, subcode: int, message: str, endpoint: str, data: dict[str, Any] | None = None
    ) -> None:
        self.code = code
        self.subcode = subcode
        self.message = message
        self.endpoint = endpoint
        self.data: dict[str, Any] = data or {}
        super().__init__(str(self))

    def __str__(self) -> str:
        # Same shape as the real SDK's errors, so messages look familiar to ClearML users.
        return f"<{self.code}/{self.subcode}: {self.endpoint} ({self.message})>"

    def is_(self, *codes: Codes) -> bool:
        """True if this error matches any of `codes` (a subcode of None matches every subcode)."""
        return any(self.code == c.code and (c.subcode is None or self.subcode == c.subcode) for c in codes)


class UnauthorizedError(APIError):
    """HTTP 401: missing, bad or expired credentials (raised after the one re-login was tried)."""


class NotFoundError(APIError):
    """HTTP 404: the server does not know this endpoint (or this version of it)."""


class TransportError(APIError):
    """No usable answer within the retry budget: connection errors, timeouts or 429/5xx. `code` is 0.

    `maybe_delivered` is False only when the last attempt surely never reached the server (connection refused,
    connect timeout, 429): then a re-send cannot double anything. After a read timeout, a connection reset once the
    request was sent, or a 502/503/504 from a proxy, the server may have acted on it."""

    def __init__(
        self, endpoint: str, cause: str, *, status: int | None = None, url: str = "", maybe_delivered: bool = True
    ) -> None:
        self.cause = cause
        self.status = status  # the last HTTP status, None when the server was never reached
        self.maybe_delivered = maybe_delivered
        super().__init__(0, 0, f"giving up after retries: {cause}", endpoint, {"url": url, "status": status})


def error_for(code: int, subcode: int, message: str, endpoint: str, data: dict[str, Any] | None = None) -> APIError:
    """Build the most specific APIError subclass for an HTTP/result code."""
    cls = {401: UnauthorizedError, 404: NotFoundError}.get(code, APIError)
    return cls(code, subcode, message, endpoint, data)


# What requests/urllib3 bury in a long chain of wrapped exceptions; the first match is the cause a user can act on.
_CAUSES = (
    re.compile(r"\[Errno -?\d+\] ([^'\")]+)"),  # Connection refused, Name or service not known, ...
    re.compile(r"(certificate verify failed[^'\")]*)", re.IGNORECASE),
    re.compile(r"((?:Read|Connect)(?:ion)? timed out)", re.IGNORECASE),
    re.compile(r"(HTTP \d{3}[^:]*)$"),
)


def short_cause(cause: str) -> str:
    """The part of a transport failure that says why (e.g. "Connection refused"), else the text as it is."""
    for pattern in _CAUSES:
        found = pattern.search(cause)
        if found:
            return found.group(1).strip().rstrip(".")
    return cause.rsplit(": ", 1)[-1][:200]
