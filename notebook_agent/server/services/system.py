"""`auth.*`, `server.*`, `debug.*` and `users.*` endpoints: login, version, liveness and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from notebook_agent import __version__
from notebook_agent.server import openapi
from notebook_agent.server.auth import SERVER_VERSION, TOKEN_COOKIE, issue_token
from notebook_agent.server.registry import MAX_VERSION, Call, endpoint


@endpoint("auth.login", "1.5")
def login(call: Call) -> dict[str, Any]:
    token = issue_token(call.backend, call.identity or call.backend.identity, call.data.get("expiration_sec"))
    call.response_headers["Set-Cookie"] = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
    return {"token": token}


@endpoint("auth.logout", "2.2", authorize=False)
def logout(call: Call) -> dict[str, Any]:
    return {}


@endpoint("login.supported_modes", "2.1", authorize=False)
def supported_modes(call: Call) -> dict[str, Any]:
    return {"authenticated": False, "basic": {"enabled": True, "guest": {"enabled": False}}, "sso": {}}


@endpoint("server.info", "2.1")
def server_info(call: Call) -> dict[str, Any]:
    return {
        "version": SERVER_VERSION,
        "build": f"notebook-agent-{__version__}",
        "commit": "",
        "api_version": MAX_VERSION,
        "uid": call.backend.company,
    }


@endpoint("debug.ping", "1.5", authorize=False)
def ping(call: Call) -> dict[str, Any]:
    return {"msg": "ClearML server", **call.data}


@endpoint("debug.openapi", "2.1")
def openapi_document(call: Call) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint served here. Authenticated like every call but debug.ping:
    it maps the whole attack surface, which a caller without the key has no use for."""
    return openapi.document()


@endpoint("users.get_current_user", "1.5")
def get_current_user(call: Call) -> dict[str, Any]:
    ident = call.identity or call.backend.identity
    return {
        "user": {
            "id": ident.user,
            "name": ident.user_name,
            "company": {"id": ident.company, "name": ident.company_name},
            "role": ident.role,
        },
        "getting_started": {},
        "settings": {},
    }
