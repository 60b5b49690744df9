"""Endpoint registry of the embedded server: `service.action` names, minimum versions and the call object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from notebook_agent.server import errors

if TYPE_CHECKING:
    from notebook_agent.server.backend import Backend

MAX_VERSION = "2.34"


def parse_version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


@dataclass(frozen=True)
class Identity:
    """Who made a call: the JWT `identity` claim, or the owner of the Basic credentials."""

    user: str
    company: str
    user_name: str
    company_name: str
    role: str = "admin"


@dataclass
class Call:
    """One API request as the handlers see it."""

    endpoint: str
    version: str
    data: dict[str, Any]
    backend: Backend
    identity: Identity | None = None
    batch: list[dict[str, Any]] | None = None
    worker: str | None = None
    remote_addr: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    # Headers a handler adds to its answer (auth.login's token cookie): never taken from request data.
    response_headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """A request header, looked up without regard to case."""
        name = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == name), None)

    def require(self, *names: str) -> list[Any]:
        """The values of required fields, or 400/11 naming the missing ones."""
        missing = [n for n in names if self.data.get(n) in (None, "")]
        if missing:
            raise errors.missing_required_fields(", ".join(missing), fields=missing)
        return [self.data[n] for n in names]

    @property
    def user(self) -> str:
        return self.identity.user if self.identity else ""

    @property
    def company(self) -> str:
        return self.identity.company if self.identity else ""


Handler = Callable[[Call], dict[str, Any]]


@dataclass(frozen=True)
class Endpoint:
    name: str
    handler: Handler
    min_version: str
    authorize: bool = True

    @property
    def min_version_tuple(self) -> tuple[int, int]:
        return parse_version(self.min_version)


_ENDPOINTS: dict[str, list[Endpoint]] = {}


def endpoint(name: str, min_version: str = "2.1", authorize: bool = True) -> Callable[[Handler], Handler]:
    """Register a handler for `name`, served to requests of `min_version` and above."""

    def register(handler: Handler) -> Handler:
        versions = _ENDPOINTS.setdefault(name, [])
        versions.append(Endpoint(name, handler, min_version, authorize))
        versions.sort(key=lambda e: e.min_version_tuple)
        return handler

    return register


def resolve(name: str, version: str | None) -> Endpoint:
    """The endpoint definition with the highest min_version <= version (the real server's rule)."""
    candidates = _ENDPOINTS.get(name)
    requested = parse_version(version or MAX_VERSION)
    if candidates:
        usable = [e for e in candidates if e.min_version_tuple <= requested]
        if usable:
            return usable[-1]
    raise errors.ServerError(404, 0, f"Unable to find endpoint for name {name} and version {version or MAX_VERSION}")


def endpoint_names() -> list[str]:
    return sorted(_ENDPOINTS)


def versions(name: str) -> list[Endpoint]:
    """Every definition of `name`, lowest min_version first."""
    return list(_ENDPOINTS.get(name, []))
