"""`auth.*`, `server.*`, `debug.*` and `users.*` endpoints: login, version and liveness."""

from __future__ import annotations

from typing import Any

from notebook_agent import __version__
from notebook_agent.server.auth import SERVER_VERSION, issue_token
from notebook_agent.server.registry import MAX_VERSION, Call, endpoint


@endpoint("auth.login", "1.5")
def login(call: Call) -> dict[str, Any]:
    token = issue_token(call.backend, call.identity or call.backend.identity, call.data.get("expiration_sec"))
    return {"token": token, "__set_token_cookie__": token}


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
