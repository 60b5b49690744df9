"""A tiny scriptable ClearML-like HTTP server on 127.0.0.1 for the api client tests."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest

ACCESS_KEY = "ACCESSKEY1234567890"
SECRET_KEY = "s3cr3t-SECRET-value-do-not-leak"
JWT_SECRET = "test-signing-secret-that-is-long-enough-for-hs256"


def make_token(**claims: Any) -> str:
    """A JWT like the server's; `exp=None` leaves the claim out."""
    base: dict[str, Any] = {"api_version": "2.31", "server_version": "2.3.0", "feature_set": "basic"}
    base["exp"] = int(time.time()) + 3600
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, JWT_SECRET, algorithm="HS256")


def envelope(data: Any = None, code: int = 200, subcode: int = 0, msg: str = "OK", error_data: Any = None):
    meta = {
        "id": "c1",
        "trx": "c1",
        "endpoint": {"name": "x"},
        "result_code": code,
        "result_subcode": subcode,
    }
    meta.update(result_msg=msg, error_stack=None, error_data=error_data or {})
    return {"meta": meta, "data": {} if data is None else data}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def endpoint(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class FakeServer:
    """Answers scripted (status, body) pairs in order; when none is scripted, auth.login gets `token` and
    everything else a 200 envelope with `data: {}`. Every request is recorded."""

    url: str = ""
    token: str = field(default_factory=make_token)
    script: deque = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)

    def reply(self, status: int = 200, data: Any = None, **kw: Any) -> None:
        """Queue one envelope answer (kw: subcode, msg, error_data); `code` defaults to the HTTP status."""
        self.script.append((status, envelope(data, code=kw.pop("code", status), **kw)))

    def reply_raw(self, status: int, body: str, content_type: str = "text/html") -> None:
        self.script.append((status, (body, content_type)))

    def calls(self, endpoint: str) -> list[Recorded]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def answer(self, req: Recorded) -> tuple[int, Any]:
        self.requests.append(req)
        if self.script:
            return self.script.popleft()
        if req.endpoint == "auth.login":
            return 200, envelope({"token": self.token})
        return 200, envelope({})


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            req = Recorded(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
            status, body = server.answer(req)
            if isinstance(body, tuple):
                payload, content_type = body[0].encode(), body[1]
            else:
                payload, content_type = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _any

        def log_message(self, *args: Any) -> None:  # keep pytest output quiet
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


class FakeClock:
    """A clock that only moves when the fake sleep is called (or a test moves it)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass
class RecordingSender:
    """A stand-in for Session.send: records (endpoint, data, version, lines) and answers from `responses`."""

    responses: dict[str, Any] = field(default_factory=dict)
    sent: list[tuple[str, Any, str | None, Any]] = field(default_factory=list)

    def send(self, endpoint: str, data: Any = None, *, version: str | None = None, lines: Any = None) -> Any:
        self.sent.append((endpoint, data, version, lines))
        answer = self.responses.get(endpoint, {})
        if isinstance(answer, list):  # successive answers
            answer = answer.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer(data) if callable(answer) else answer


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()
