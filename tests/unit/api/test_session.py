"""Session against a real local HTTP server: auth, versions, retries, envelopes, secrecy."""

from __future__ import annotations

import base64
import json
import logging
import socket
from types import SimpleNamespace

import pytest
import requests

from notebook_agent.api import (
    APIError,
    Codes,
    NotFoundError,
    QueueEntry,
    Session,
    TransportError,
    UnauthorizedError,
    events,
    queues,
)

from .conftest import ACCESS_KEY, SECRET_KEY, FakeClock, FakeServer, envelope, make_token


def make(server: FakeServer, clock: FakeClock | None = None, **kw) -> Session:
    if clock is not None:
        kw.setdefault("clock", clock)
        kw.setdefault("sleep", clock.sleep)
    kw.setdefault("worker", "host:cpu:0")
    return Session(server.url + "/", ACCESS_KEY, SECRET_KEY, **kw)


def test_login_with_basic_then_bearer_on_calls(server: FakeServer) -> None:
    server.reply(200, {"token": server.token})  # the lazy login comes first
    server.reply(200, {"task": {"id": "t1"}})
    with make(server) as session:
        data = session.send("tasks.get_by_id", {"task": "t1"}, version="2.23")
    assert data == {"task": {"id": "t1"}}
    login, call = server.requests
    assert login.path == "/auth.login"
    assert login.headers["Authorization"] == "Basic " + base64.b64encode(f"{ACCESS_KEY}:{SECRET_KEY}".encode()).decode()
    assert call.method == "POST" and call.path == "/v2.23/tasks.get_by_id"
    assert call.headers["Authorization"] == f"Bearer {server.token}"
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["X-ClearML-Worker"] == "host:cpu:0"
    assert call.headers["X-ClearML-Client"].startswith("notebook-agent-")
    assert call.json == {"task": "t1"}


def test_auth_token_is_used_without_login(server: FakeServer) -> None:
    token = make_token(api_version="2.30")
    session = make(server, auth_token=token)
    session.send("tasks.ping", {"task": "t"}, version="2.23")
    assert [r.endpoint for r in server.requests] == ["tasks.ping"]
    assert server.requests[0].headers["Authorization"] == f"Bearer {token}"
    assert session.api_version == "2.30"


def test_versions_come_from_the_token_claims(server: FakeServer) -> None:
    session = make(server)
    assert session.api_version == "2.31"
    assert session.server_version == "2.3.0"
    assert session.api_at_least("2.23") and session.api_at_least("2.31")
    assert not session.api_at_least("2.32")
    assert len(server.calls("auth.login")) == 1


@pytest.mark.parametrize("token", [make_token(api_version=None), "not-a-jwt"], ids=["no-claim", "opaque"])
def test_missing_api_version_claim_defaults_like_the_agent(server: FakeServer, token: str) -> None:
    session = make(server, auth_token=token)
    assert session.api_version == "2.1"
    assert session.api_at_least("2.1") and not session.api_at_least("2.10")


def test_token_is_refreshed_when_exp_is_near(server: FakeServer, clock: FakeClock) -> None:
    server.token = make_token(exp=int(clock.now) + 3600)
    session = make(server, clock)
    session.send("tasks.ping", {"task": "t"})
    clock.now += 3600 - 61
    session.send("tasks.ping", {"task": "t"})
    assert len(server.calls("auth.login")) == 1
    clock.now += 2  # 59 s left: under the 60 s margin
    session.send("tasks.ping", {"task": "t"})
    assert len(server.calls("auth.login")) == 2


def test_auth_token_alone_is_renewed_with_bearer_before_exp(server: FakeServer, clock: FakeClock) -> None:
    old = make_token(exp=int(clock.now) + 30)
    session = Session(server.url, None, None, auth_token=old, clock=clock, sleep=clock.sleep)
    session.send("tasks.ping", {"task": "t"})
    login, call = server.requests
    assert login.endpoint == "auth.login" and login.headers["Authorization"] == f"Bearer {old}"
    assert call.headers["Authorization"] == f"Bearer {server.token}"


def test_token_without_exp_never_expires(server: FakeServer, clock: FakeClock) -> None:
    server.token = make_token(exp=None)
    session = make(server, clock)
    session.send("tasks.ping", {"task": "t"})
    clock.now += 10 * 365 * 86400
    session.send("tasks.ping", {"task": "t"})
    assert len(server.calls("auth.login")) == 1


def test_401_logs_in_again_and_retries_once(server: FakeServer) -> None:
    session = make(server)
    session.login()
    new_token = make_token(session_id="second")
    server.reply(401, subcode=30, msg="Invalid token")
    server.reply(200, {"token": new_token})
    server.reply(200, {"ok": 1})
    assert session.send("tasks.ping", {"task": "t"}, version="2.23") == {"ok": 1}
    assert [r.endpoint for r in server.requests] == ["auth.login", "tasks.ping", "auth.login", "tasks.ping"]
    assert server.requests[-1].headers["Authorization"] == f"Bearer {new_token}"


def test_second_401_is_raised(server: FakeServer) -> None:
    session = make(server)
    session.login()
    server.reply(401, subcode=30, msg="Invalid token")
    server.reply(200, {"token": server.token})
    server.reply(401, subcode=30, msg="Invalid token")
    with pytest.raises(UnauthorizedError) as info:
        session.send("tasks.ping", {"task": "t"})
    assert info.value.is_(Codes.INVALID_TOKEN, Codes.UNAUTHORIZED)
    assert len(server.calls("tasks.ping")) == 2


def test_retries_503_and_429_with_backoff(server: FakeServer, clock: FakeClock) -> None:
    session = make(server, clock, auth_token=make_token())
    server.reply_raw(503, "<html>busy</html>")
    server.reply(429, msg="Too many requests")
    server.reply(200, {"ok": 1})
    assert session.send("tasks.ping", {"task": "t"}) == {"ok": 1}
    assert clock.sleeps == [0.2, 0.4]
    assert len(server.requests) == 3


def test_retries_stop_at_the_total_budget(server: FakeServer, clock: FakeClock) -> None:
    session = make(server, clock, auth_token=make_token(), retry_total_seconds=3)
    for _ in range(20):
        server.reply(503, msg="unavailable")
    with pytest.raises(TransportError) as info:
        session.send("queues.get_next_task", {"queue": "q"}, version="2.23")
    err = info.value
    assert clock.sleeps == [0.2, 0.4, 0.8, 1.6] and sum(clock.sleeps) <= 3
    assert err.code == 0 and err.status == 503 and err.endpoint == "queues.get_next_task"
    assert "queues.get_next_task" in str(err) and "HTTP 503" in str(err)


def test_connection_refused_is_retried_then_raises(clock: FakeClock) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    session = Session(
        f"http://127.0.0.1:{port}",
        None,
        None,
        auth_token="tok",
        clock=clock,
        sleep=clock.sleep,
        retry_total_seconds=30,
    )
    with pytest.raises(TransportError) as info:
        session.send("tasks.ping", {"task": "t"})
    assert max(clock.sleeps) == 5.0 and sum(clock.sleeps) <= 30
    assert info.value.status is None and "ConnectionError" in info.value.cause


def test_error_envelope_becomes_api_error(server: FakeServer) -> None:
    session = make(server, auth_token=make_token())
    server.reply(400, subcode=101, msg="Invalid task id: id=abc", error_data={"id": "abc"})
    with pytest.raises(APIError) as info:
        session.send("tasks.get_by_id", {"task": "abc"}, version="2.23")
    err = info.value
    assert type(err) is APIError
    assert (err.code, err.subcode, err.endpoint, err.data) == (400, 101, "tasks.get_by_id", {"id": "abc"})
    assert err.message == "Invalid task id: id=abc"
    assert str(err) == "<400/101: tasks.get_by_id (Invalid task id: id=abc)>"
    assert err.is_(Codes.INVALID_TASK_ID) and not err.is_(Codes.INVALID_QUEUE_ID)


def test_unknown_endpoint_is_not_found(server: FakeServer) -> None:
    session = make(server, auth_token=make_token())
    server.reply(404, msg="Unable to find endpoint for name workers.get_runtime_properties")
    with pytest.raises(NotFoundError) as info:
        session.send("workers.get_runtime_properties", {"worker": "w"})
    assert info.value.is_(Codes.NOT_FOUND)


@pytest.mark.parametrize("status", [200, 500])
def test_non_json_answer_names_url_and_status(server: FakeServer, status: int) -> None:
    session = make(server, auth_token=make_token())
    server.reply_raw(status, "<html><body>Proxy error</body></html>")
    with pytest.raises(APIError) as info:
        session.send("tasks.get_all", {}, version="2.23")
    assert info.value.code == status
    assert f"HTTP {status}" in str(info.value) and f"{server.url}/v2.23/tasks.get_all" in str(info.value)


def test_null_data_becomes_empty_dict(server: FakeServer) -> None:
    session = make(server, auth_token=make_token())
    body = envelope({})
    body["data"] = None
    server.reply_raw(200, json.dumps(body), "application/json")
    assert session.send("tasks.ping", {"task": "t"}) == {}


def test_add_batch_sends_json_lines(server: FakeServer) -> None:
    session = make(server, auth_token=make_token())
    server.reply(200, {"added": 2, "errors": 0})
    batch = [events.log_event("t1", "hello", timestamp_ms=1), events.log_event("t1", "bye", level="ERROR")]
    assert events.add_batch(session, batch) == {"added": 2, "errors": 0}
    req = server.requests[0]
    assert req.path == "/v2.23/events.add_batch"
    assert req.headers["Content-Type"] == "application/json-lines"
    lines = [json.loads(line) for line in req.body.decode().split("\n")]
    assert [(e["msg"], e["level"], e["type"]) for e in lines] == [
        ("hello", "info", "log"),
        ("bye", "error", "log"),
    ]
    assert lines[0]["timestamp"] == 1 and isinstance(lines[1]["timestamp"], int)


def test_versioned_and_unversioned_urls(server: FakeServer) -> None:
    session = make(server, auth_token=make_token())
    session.send("workers.register", {"worker": "w"})
    session.send("tasks.get_all", {"id": ["t"]}, version="2.14")
    assert [r.path for r in server.requests] == ["/workers.register", "/v2.14/tasks.get_all"]


def test_get_next_task_empty_queue_is_none(server: FakeServer) -> None:
    session = make(server, auth_token=make_token())
    server.reply(200, {})
    server.reply(200, {"entry": {"task": "t1", "added": "2026-01-01T00:00:00+00:00"}})
    assert queues.get_next_task(session, "q") is None
    assert queues.get_next_task(session, "q") == QueueEntry("t1", "2026-01-01T00:00:00+00:00")


def test_without_credentials_calls_go_unauthenticated(server: FakeServer) -> None:
    session = Session(server.url, None, None)
    session.send("debug.ping")
    assert "Authorization" not in server.requests[0].headers
    with pytest.raises(UnauthorizedError):
        session.login()


def test_from_config_is_duck_typed(server: FakeServer) -> None:
    creds = SimpleNamespace(access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    config = SimpleNamespace(api_server=server.url, credentials=creds, auth_token=None, verify_certificate=False)
    session = Session.from_config(config, worker="w1")
    assert (session.base_url, session.access_key, session.verify, session.worker) == (
        server.url,
        ACCESS_KEY,
        False,
        "w1",
    )
    no_creds = Session.from_config(SimpleNamespace(api_server=server.url, credentials=None))
    assert no_creds.access_key is None


def test_secrets_never_leak(server: FakeServer, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    session = make(server, clock, retry_total_seconds=1)
    texts = [repr(session)]
    session.send("tasks.ping", {"task": "t"})
    server.reply(401, subcode=21, msg="Invalid token " + server.token)  # even if a server echoed it
    server.reply(401, subcode=21, msg=f"bad secret {SECRET_KEY}")
    for _ in range(10):
        server.reply(503, msg="down")
    for endpoint in ("tasks.ping", "tasks.get_all"):
        with pytest.raises(APIError) as info:
            session.send(endpoint, {})
        texts += [str(info.value), repr(info.value), json.dumps(info.value.data)]
    texts += [r.getMessage() for r in caplog.records] + [caplog.text, repr(session)]
    assert ACCESS_KEY[:4] + "****" in texts[0] and ACCESS_KEY not in texts[0]
    for text in texts:
        assert SECRET_KEY not in text and server.token not in text


def test_retry_seconds_zero_is_one_attempt_and_says_the_server_may_have_acted(
    server: FakeServer, clock: FakeClock
) -> None:
    # events.add_batch must not be re-sent blindly: a 503 from a proxy may come after the server stored the batch.
    session = make(server, clock, auth_token=make_token())
    server.reply(503, msg="unavailable")
    server.reply(200, {"added": 1})
    with pytest.raises(TransportError) as info:
        session.send("events.add_batch", version="2.23", lines=[{"task": "t", "type": "log"}], retry_seconds=0)
    assert len(server.requests) == 1 and clock.sleeps == []
    assert info.value.maybe_delivered and info.value.status == 503
    assert session.send("tasks.ping", {"task": "t"}) == {"added": 1}  # other calls keep the session's budget


def test_429_was_surely_not_acted_on(server: FakeServer, clock: FakeClock) -> None:
    session = make(server, clock, auth_token=make_token())
    server.reply(429, msg="Too many requests")
    with pytest.raises(TransportError) as info:
        session.send("tasks.ping", {"task": "t"}, retry_seconds=0)
    assert not info.value.maybe_delivered


def test_refused_connection_was_surely_not_delivered(clock: FakeClock) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    session = Session(f"http://127.0.0.1:{port}", None, None, auth_token="tok", clock=clock, sleep=clock.sleep)
    with pytest.raises(TransportError) as info:
        session.send("tasks.ping", {"task": "t"}, retry_seconds=0)
    assert not info.value.maybe_delivered and clock.sleeps == []


def test_a_read_timeout_may_have_been_delivered(clock: FakeClock) -> None:
    with socket.socket() as listener:  # accepts (the kernel's backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        session = Session(
            f"http://127.0.0.1:{port}", None, None, auth_token="tok", clock=clock, sleep=clock.sleep, timeout=0.3
        )
        with pytest.raises(TransportError) as info:
            session.send("events.add_batch", lines=[{"task": "t"}], retry_seconds=0)
    assert info.value.maybe_delivered and "ReadTimeout" in info.value.cause


def test_an_outage_is_one_warning_per_call_and_connects_wait_no_longer_than_the_budget(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    timeouts: list[object] = []

    class Refusing:
        def post(self, url, **kw):
            timeouts.append(kw["timeout"])
            raise requests.ConnectionError("[Errno 111] Connection refused")

    session = Session(
        "http://127.0.0.1:9",
        None,
        None,
        auth_token="tok",
        clock=clock,
        sleep=clock.sleep,
        retry_total_seconds=12,
        timeout=30,
        http=Refusing(),  # type: ignore[arg-type]
    )
    with caplog.at_level(logging.DEBUG, logger="notebook_agent.api.session"), pytest.raises(TransportError):
        session.send("tasks.ping", {"task": "t"})
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["tasks.ping failed (Connection refused); retrying for up to 12 s"]
    assert len(timeouts) > 3  # every attempt was made, each one logged at debug level only
    assert timeouts[0] == (12, 30)  # the connect waits at most the budget; the read keeps the whole timeout
    assert all(connect >= 3.0 for connect, _ in timeouts)  # never below the floor, even at the budget's end
