"""Shared fixtures: an embedded server on a free loopback port, a raw HTTP caller, and a controllable clock."""

from __future__ import annotations

import base64
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from notebook_agent.server import EmbeddedServer


class FakeClock:
    """A clock that follows real time but can be moved forward (token expiry, worker timeouts)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Reply:
    status: int
    meta: dict[str, Any]
    data: dict[str, Any]

    @property
    def subcode(self) -> int:
        return self.meta["result_subcode"]


class RawClient:
    """Plain HTTP calls to a server, to assert on the wire format itself (our own client is tested apart)."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server
        self.http = requests.Session()
        self._token: str | None = None

    @property
    def basic(self) -> str:
        creds = self.server.credentials
        assert creds is not None
        raw = f"{creds.access_key}:{creds.secret_key}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def token(self) -> str:
        if self._token is None:
            reply = self.call("auth.login", version=None, authorization=self.basic)
            assert reply.status == 200, reply.meta
            self._token = reply.data["token"]
        return self._token

    def call(
        self,
        endpoint: str,
        data: dict | None = None,
        *,
        version: str | None = "2.23",
        authorization: str | None = "bearer",
        lines: list[dict] | None = None,
        body: bytes | None = None,
        method: str = "POST",
    ) -> Reply:
        headers = {}
        if authorization == "bearer":
            headers["Authorization"] = "Bearer " + self.token()
        elif authorization:
            headers["Authorization"] = authorization
        if lines is not None:
            import json

            body = "\n".join(json.dumps(line) for line in lines).encode()
            headers["Content-Type"] = "application/json-lines"
        path = f"/v{version}/{endpoint}" if version else f"/{endpoint}"
        if body is None:
            response = self.http.request(method, self.server.url + path, json=data or {}, headers=headers, timeout=30)
        else:
            response = self.http.request(method, self.server.url + path, data=body, headers=headers, timeout=30)
        payload = response.json()
        assert payload["meta"]["result_code"] == response.status_code
        assert payload["data"] is not None
        return Reply(response.status_code, payload["meta"], payload["data"])

    def ok(self, endpoint: str, data: dict | None = None, **kwargs: Any) -> dict[str, Any]:
        reply = self.call(endpoint, data, **kwargs)
        assert reply.status == 200, (
            f"{endpoint}: {reply.meta['result_code']}/{reply.subcode} {reply.meta['result_msg']}"
        )
        return reply.data

    # shortcuts used across tests
    def default_queue(self) -> str:
        return self.ok("queues.get_default")["id"]

    def new_task(self, name: str = "a task", **fields: Any) -> str:
        return self.ok("tasks.create", {"name": name, "type": "training", **fields})["id"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(tmp_path: Path, clock: FakeClock) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(tmp_path / "server", clock=clock).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def raw(server: EmbeddedServer) -> RawClient:
    return RawClient(server)


@pytest.fixture
def client_env(server: EmbeddedServer, tmp_path: Path) -> dict[str, str]:
    """Environment for a real clearml/clearml-agent subprocess pointed at the embedded server."""
    home = tmp_path / "home"
    home.mkdir()
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    return {
        **keep,
        **server.client_env(),
        "HOME": str(home),
        "CLEARML_OFFLINE_MODE": "0",
        "PYTHONUNBUFFERED": "1",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }
