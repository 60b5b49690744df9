"""Authentication of the embedded server: Basic credentials, HS256 JWTs with the claims ClearML clients read."""

from __future__ import annotations

import base64
import binascii
import os
import secrets

import jwt

from notebook_agent import __version__
from notebook_agent.server import errors
from notebook_agent.server.backend import Backend
from notebook_agent.server.registry import MAX_VERSION, Identity

DEFAULT_EXPIRATION_SEC = 30 * 24 * 3600
MAX_EXPIRATION_SEC = 365 * 24 * 3600
SERVER_VERSION = "2.3.0"
LONG_POLL_CLAIM = "notebook_agent_long_poll"
EVENT_IDS_CLAIM = "notebook_agent_event_ids"  # api.events.EVENT_IDS_CLAIM: log events with an `id` are stored once
# "0" turns the event-id extension off (no claim, no dedup), so the server stores log events as a real one does:
# tests use it to exercise the agent's read-back path.
EVENT_IDS_ENV = "NOTEBOOK_AGENT_SERVER_EVENT_IDS"


def event_ids_enabled() -> bool:
    """Whether this server advertises and honours log event ids (read at each use, so tests may switch it)."""
    return os.environ.get(EVENT_IDS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


TOKEN_COOKIE = "clearml_token_basic"


def issue_token(backend: Backend, identity: Identity, expiration_sec: int | None = None) -> str:
    """A JWT signed with the data directory's secret, carrying `api_version` so clients pick their API level."""
    expiration = min(int(expiration_sec or DEFAULT_EXPIRATION_SEC), MAX_EXPIRATION_SEC)
    now = int(backend.clock())
    claims = {
        "identity": {
            "user": identity.user,
            "company": identity.company,
            "role": identity.role,
            "user_name": identity.user_name,
            "company_name": identity.company_name,
        },
        "iat": now,
        "exp": now + expiration,
        "session_id": secrets.token_hex(16),
        "env": "notebook-agent",
        "api_version": MAX_VERSION,
        "server_version": SERVER_VERSION,
        "server_build": f"notebook-agent-{__version__}",
        "feature_set": "basic",
        # Our extension: queues.get_next_task may wait for a task (see services/queues.py). Real servers
        # lack the claim, so clients fall back to plain polling there.
        LONG_POLL_CLAIM: 1,
    }
    if event_ids_enabled():
        claims[EVENT_IDS_CLAIM] = 1
    return jwt.encode(claims, backend.token_secret, algorithm="HS256")


def _identity_from_claims(claims: dict) -> Identity:
    ident = claims.get("identity") or {}
    return Identity(
        user=str(ident.get("user", "")),
        company=str(ident.get("company", "")),
        user_name=str(ident.get("user_name", "")),
        company_name=str(ident.get("company_name", "")),
        role=str(ident.get("role", "user")),
    )


def verify_token(backend: Backend, token: str) -> Identity:
    try:
        # Time claims are checked against the backend's clock below (injectable in tests), not PyJWT's.
        claims = jwt.decode(
            token,
            backend.token_secret,
            algorithms=["HS256"],
            options={"require": ["exp"], "verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.InvalidTokenError:
        raise errors.invalid_token("invalid token") from None
    if claims["exp"] <= backend.clock():
        raise errors.invalid_token("expired token")
    return _identity_from_claims(claims)


def authenticate(backend: Backend, authorization: str | None, cookie_token: str | None) -> Identity:
    """Identity of a request from its Authorization header (which wins) or the token cookie."""
    if not authorization:
        if cookie_token:
            return verify_token(backend, cookie_token)
        raise errors.no_credentials()
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return verify_token(backend, value.strip())
    if scheme != "basic":
        raise errors.bad_auth_type(f"unsupported authorization type {scheme!r}")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise errors.bad_credentials("basic credentials are not base64 'key:secret'") from None
    access_key, sep, secret_key = decoded.partition(":")
    if not sep:
        raise errors.bad_credentials("basic credentials are not 'key:secret'")
    if not backend.check_credentials(access_key, secret_key):
        raise errors.invalid_credentials("failed to locate provided credentials")
    return backend.identity
