"""Shared bits of the service helpers: the API version they speak and the body builder."""

from __future__ import annotations

from typing import Any, Protocol

# Every helper speaks 2.23: the newest level of the real SDK (clearml 2.1.x), so request bodies can be
# checked against its schemas. Nothing we send needs more (queues.create `display_name` is 2.31: not sent).
API_VERSION = "2.23"


class Sender(Protocol):
    """Anything with Session.send's signature (a Session, or a recording fake in tests)."""

    def send(
        self,
        endpoint: str,
        data: dict[str, Any] | None = None,
        *,
        version: str | None = None,
        lines: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]: ...


def body(**fields: Any) -> dict[str, Any]:
    """A request body without the None fields: the server treats absent and null differently in places."""
    return {k: v for k, v in fields.items() if v is not None}


def call(session: Sender, endpoint: str, /, **fields: Any) -> dict[str, Any]:
    """Send `endpoint` at API_VERSION with the non-None `fields` as the body; returns the response data."""
    return session.send(endpoint, body(**fields), version=API_VERSION)
