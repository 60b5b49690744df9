"""The embedded server under bad input: request limits, malformed bodies, wrongly typed fields and invalid ids each
get a 4xx envelope naming the problem (never a 5xx, never a stored bad value), and the server keeps serving.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from notebook_agent.cli.server_cmd import _positive_mb, add_parser
from notebook_agent.server import EmbeddedServer, registry
from notebook_agent.server.http_handler import DEFAULT_MAX_BODY
from notebook_agent.server.request_fields import REQUESTS
from tests.conftest import FakeClock, RawClient
from tests.reliability.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY

SMALL_LIMIT = 256 * 1024
BASIC = "Basic " + base64.b64encode(f"{FAKE_ACCESS_KEY}:{FAKE_SECRET_KEY}".encode()).decode()


@pytest.fixture
def small(tmp_path: Path, clock: FakeClock) -> Iterator[EmbeddedServer]:
    """A server with a small body limit and a short body timeout, so that the limits are cheap to hit."""
    srv = EmbeddedServer(
        tmp_path / "small",
        clock=clock,
        access_key=FAKE_ACCESS_KEY,
        secret_key=FAKE_SECRET_KEY,
        max_body=SMALL_LIMIT,
        body_timeout=0.5,
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


def exchange(server: EmbeddedServer, head: str, body: bytes = b"", *, half_close: bool = False) -> tuple[int, dict]:
    """Send raw bytes (a request head and what follows it) and read the one answer: (status, envelope)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        envelope = json.loads(response.read())
        return response.status, envelope


def request_head(endpoint: str, length: int | str | None, *extra: str) -> str:
    lines = [f"POST /v2.23/{endpoint} HTTP/1.1", "Host: x", f"Authorization: {BASIC}", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return "\n".join(lines) + "\n"


def assert_envelope(status: int, envelope: dict, code: int, words: str) -> None:
    meta = envelope["meta"]
    assert status == meta["result_code"] == code, meta
    assert envelope["data"] == {}
    assert words.lower() in meta["result_msg"].lower(), meta["result_msg"]


def still_serving(server: EmbeddedServer) -> None:
    assert RawClient(server).ok("queues.get_default")["name"] == "default"


# request limits


def test_the_default_body_limit_is_sane_and_settable_from_the_cli() -> None:
    import argparse

    assert DEFAULT_MAX_BODY == 32 * 1024 * 1024
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert parser.parse_args(["server"]).max_body_mb == 32
    assert parser.parse_args(["server", "--max-body-mb", "4"]).max_body_mb == 4
    with pytest.raises(argparse.ArgumentTypeError):  # argparse would print a usage line (and exit) with it
        _positive_mb("0")


def test_an_oversized_body_gets_413_without_being_read(small: EmbeddedServer) -> None:
    started = time.monotonic()
    # Announced but never sent: an answer proves the server did not wait for (or read) the body.
    status, envelope = exchange(small, request_head("tasks.get_all", 50 * SMALL_LIMIT))
    assert_envelope(status, envelope, 413, "too large")
    assert str(SMALL_LIMIT) in envelope["meta"]["result_msg"]
    assert time.monotonic() - started < 5
    still_serving(small)


def test_an_oversized_body_sent_whole_still_reads_the_413(small: EmbeddedServer) -> None:
    # requests sends the whole body before reading: the server drains it after answering instead of resetting.
    reply = requests.post(
        f"{small.url}/v2.23/events.add_batch",
        data=b"x" * (4 * SMALL_LIMIT),
        headers={"Authorization": BASIC},
        timeout=10,
    )
    assert_envelope(reply.status_code, reply.json(), 413, "too large")
    still_serving(small)


def test_expect_100_continue_gets_the_413_instead_of_continue(small: EmbeddedServer) -> None:
    status, envelope = exchange(small, request_head("tasks.get_all", 10 * SMALL_LIMIT, "Expect: 100-continue"))
    assert_envelope(status, envelope, 413, "too large")


@pytest.mark.parametrize(
    ("length", "words"),
    [("abc", "invalid Content-Length"), ("-5", "invalid Content-Length"), ("1e3", "invalid Content-Length")],
)
def test_a_wrong_content_length_is_400(small: EmbeddedServer, length: str, words: str) -> None:
    status, envelope = exchange(small, request_head("tasks.get_all", length), b"{}")
    assert_envelope(status, envelope, 400, words)
    still_serving(small)


def test_two_different_content_lengths_are_400(small: EmbeddedServer) -> None:
    head = request_head("tasks.get_all", 2, "Content-Length: 3")
    status, envelope = exchange(small, head, b"{} ")
    assert_envelope(status, envelope, 400, "invalid Content-Length")


def test_a_truncated_body_is_400_naming_the_sizes(small: EmbeddedServer) -> None:
    status, envelope = exchange(small, request_head("tasks.get_all", 100), b'{"only_fields": [', half_close=True)
    assert_envelope(status, envelope, 400, "truncated request body: got 17 of 100 bytes")
    still_serving(small)


def test_a_stalled_body_times_out_with_408(small: EmbeddedServer) -> None:
    started = time.monotonic()
    status, envelope = exchange(small, request_head("tasks.get_all", 100), b'{"only')
    assert_envelope(status, envelope, 408, "not received within 0.5 s")
    assert time.monotonic() - started < 5
    still_serving(small)


def test_a_chunked_body_is_411(small: EmbeddedServer) -> None:
    status, envelope = exchange(
        small, request_head("tasks.get_all", None, "Transfer-Encoding: chunked"), b"2\r\n{}\r\n0\r\n\r\n"
    )
    assert_envelope(status, envelope, 411, "Content-Length")
    still_serving(small)


@pytest.mark.parametrize(
    ("head", "code", "words"),
    [
        ("BREW /v2.23/tasks.get_all HTTP/1.1\nHost: x\n", 501, "Unsupported method ('BREW')"),
        ("POST /v2.23/tasks.get_all HTTP/1.1\nX-Long: " + "a" * 70000 + "\n", 431, "Line too long"),
    ],
    ids=["unknown method", "header too long"],
)
def test_what_http_server_refuses_itself_is_an_envelope_too(
    small: EmbeddedServer, head: str, code: int, words: str
) -> None:
    status, envelope = exchange(small, head)
    assert_envelope(status, envelope, code, words)
    still_serving(small)


# malformed bodies

MALFORMED: dict[str, tuple[str, bytes, str, str]] = {
    "malformed json": ("tasks.get_all", b'{"name": ', "application/json", "Failed to decode JSON"),
    "a json list": ("tasks.get_all", b"[1, 2]", "application/json", "must be a JSON object, found list"),
    "a json string": ("tasks.create", b'"name"', "application/json", "must be a JSON object, found str"),
    "a json number": ("queues.create", b"17", "application/json", "must be a JSON object, found int"),
    "non-utf-8 bytes": ("tasks.create", b'{"name": "caf\xe9"}', "application/json", "not valid UTF-8 (byte 13)"),
    "NaN": ("events.get_task_log", b'{"task": "t", "from_timestamp": NaN}', "application/json", "NaN"),
    "Infinity": ("workers.get_all", b'{"last_seen": Infinity}', "application/json", "Infinity"),
    "deep nesting": ("debug.ping", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json", "deeper"),
    "a lone surrogate": ("projects.create", b'{"name": "ab\\ud800cd"}', "application/json", "lone surrogate"),
    "a bad json-lines line": (
        "events.add_batch",
        b'{"type": "log", "task": "T", "msg": "one"}\n{"type": "log", "msg": \n',
        "application/json-lines",
        "line 2",
    ),
    "a json-lines line that is no object": (
        "events.add_batch",
        b'{"type": "log", "task": "T", "msg": "one"}\n[1]\n',
        "application/json-lines",
        "line 2 must be a JSON object",
    ),
    "non-utf-8 json lines": (
        "events.add_batch",
        b'{"type": "log", "task": "T", "msg": "\xff"}\n',
        "application/json-lines",
        "not valid UTF-8",
    ),
    "a batch list with a non-object": ("events.add_batch", b"[{}, 3]", "application/json", "batch item #1"),
    "a conflicting query string": ("tasks.get_all?a=1&a.b=2", b"", "application/json", "conflicts"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_body_is_400_naming_the_problem_and_nothing_is_stored(
    server: EmbeddedServer, raw: RawClient, case: str
) -> None:
    endpoint, body, content_type, words = MALFORMED[case]
    task = raw.new_task("log target")
    body = body.replace(b'"T"', json.dumps(task).encode())
    reply = raw.http.post(
        f"{server.url}/v2.23/{endpoint}",
        data=body,
        headers={"Authorization": "Bearer " + raw.token(), "Content-Type": content_type},
        timeout=10,
    )
    assert_envelope(reply.status_code, reply.json(), 400, words)
    assert raw.ok("events.get_task_log", {"task": task})["total"] == 0, "no line of a refused batch is stored"
    assert [p["name"] for p in raw.ok("projects.get_all")["projects"]] == []
    still_serving(server)


# fields


def test_unknown_fields_are_ignored(raw: RawClient) -> None:
    task = raw.ok("tasks.create", {"name": "extra", "type": "training", "method": "GET", "no_such_field": [1]})["id"]
    doc = raw.ok("tasks.get_by_id", {"task": task, "whatever": {"x": 1}})["task"]
    assert "no_such_field" not in doc and "method" not in doc


def test_null_for_an_optional_field_means_not_given(raw: RawClient) -> None:
    task = raw.ok("tasks.create", {"name": "nulls", "type": "training", "comment": None, "tags": None})["id"]
    doc = raw.ok("tasks.get_by_id", {"task": task})["task"]
    assert doc["tags"] == [] and doc["comment"] == ""


WRONG_TYPES: list[tuple[str, dict[str, Any], str, str]] = [
    # endpoint, body ("TASK"/"QUEUE" are replaced by real ids), field named, expected type named
    ("tasks.create", {"name": 5, "type": "training"}, "name", "string"),
    ("tasks.create", {"name": None, "type": "training"}, "name", "string"),
    ("tasks.create", {"name": "good name", "type": "training", "tags": "a,b"}, "tags", "array"),
    ("tasks.create", {"name": "good name", "type": "training", "tags": [1]}, "tags[0]", "string"),
    (
        "tasks.create",
        {"name": "good name", "type": "training", "hyperparams": {"Args": 5}},
        "hyperparams.Args",
        "object",
    ),
    ("tasks.create", {"name": "good name", "type": "training", "script": "python x.py"}, "script", "object"),
    ("tasks.edit", {"task": "TASK", "execution": {"artifacts": [{"key": 1}]}}, "execution.artifacts[0]", "type"),
    ("tasks.edit", {"task": "TASK", "force": "yes"}, "force", "boolean"),
    ("tasks.edit", {"task": "TASK", "models": {"input": {}}}, "models.input", "array"),
    ("tasks.started", {"task": "TASK", "status_reason": ["x"]}, "status_reason", "string"),
    ("tasks.get_all", {"page_size": "10"}, "page_size", "integer"),
    ("tasks.get_all", {"page_size": 1.5}, "page_size", "integer"),
    ("tasks.get_all", {"only_fields": "name"}, "only_fields", "array"),
    ("tasks.get_all", {"search_text": 7}, "search_text", "string"),
    ("tasks.dequeue", {"task": "TASK", "new_status": "bogus"}, "new_status", "one of"),
    ("tasks.edit_hyper_params", {"task": "TASK", "hyperparams": [{"section": "a"}]}, "hyperparams[0]", "name"),
    ("tasks.edit_hyper_params", {"task": "TASK", "hyperparams": [{"name": "a", "value": 3}]}, "value", "string"),
    ("tasks.set_requirements", {"task": "TASK", "requirements": "numpy"}, "requirements", "object"),
    ("queues.create", {"name": "queue name", "tags": {"a": 1}}, "tags", "array"),
    ("queues.get_by_id", {"queue": "QUEUE", "max_task_entries": True}, "max_task_entries", "integer"),
    ("events.get_task_log", {"task": "TASK", "batch_size": 2**70}, "batch_size", "range"),
    ("events.get_task_log", {"task": "TASK", "from_timestamp": 1e300}, "from_timestamp", "range"),
    ("auth.login", {"expiration_sec": "60"}, "expiration_sec", "integer"),
    ("workers.get_all", {"last_seen": "recent"}, "last_seen", "number"),
    ("workers.register", {"worker": "w", "timeout": [1]}, "timeout", "integer"),
]


@pytest.mark.parametrize(("endpoint", "body", "field", "expected"), WRONG_TYPES, ids=lambda v: str(v)[:40])
def test_a_wrong_type_is_400_12_naming_field_and_type_and_nothing_changes(
    raw: RawClient, endpoint: str, body: dict, field: str, expected: str
) -> None:
    task, queue = raw.new_task("typed target"), raw.default_queue()
    body = json.loads(json.dumps(body).replace('"TASK"', json.dumps(task)).replace('"QUEUE"', json.dumps(queue)))
    before = raw.ok("tasks.get_all", {"id": [task]})["tasks"]
    count = len(raw.ok("tasks.get_all")["tasks"])
    reply = raw.call(endpoint, body)
    assert (reply.status, reply.subcode) == (400, 12), reply.meta
    message = reply.meta["result_msg"]
    assert field in message and expected in message, message
    assert raw.ok("tasks.get_all", {"id": [task]})["tasks"] == before, "no bad value is stored"
    assert len(raw.ok("tasks.get_all")["tasks"]) == count


ID_CASES = [
    ("tasks.get_by_id", "task", 101),
    ("tasks.started", "task", 101),
    ("tasks.enqueue", "task", 101),
    ("queues.get_by_id", "queue", 701),
    ("queues.add_task", "queue", 701),
    ("queues.get_next_task", "queue", 701),
    ("projects.get_by_id", "project", 401),
    ("projects.update", "project", 401),
]


@pytest.mark.parametrize("bad", ["0123456789abcdef0123456789abcdef", "", 17, ["x"], {"id": "x"}])
@pytest.mark.parametrize(("endpoint", "field", "subcode"), ID_CASES)
def test_an_invalid_id_gets_the_real_subcode(raw: RawClient, endpoint: str, field: str, subcode: int, bad: Any) -> None:
    body: dict[str, Any] = {"task": raw.new_task("an id holder"), "queue": raw.default_queue()}
    body[field] = bad
    reply = raw.call(endpoint, body)
    assert (reply.status, reply.subcode) == (400, subcode), reply.meta
    assert reply.meta["result_msg"]


def test_numbers_too_big_for_the_store_are_400_and_nothing_is_stored(raw: RawClient) -> None:
    task = raw.new_task("big numbers")
    good = {"task": task, "type": "log", "msg": "fine"}
    reply = raw.call("events.add_batch", lines=[good, {**good, "timestamp": 10**30}])
    assert (reply.status, reply.subcode) == (400, 12), reply.meta
    assert "too large" in reply.meta["result_msg"]
    assert raw.ok("events.get_task_log", {"task": task})["total"] == 0, "the batch is refused whole"
    reply = raw.call("events.get_task_events", {"task": task, "scroll_id": f"{10**30}:1"})
    assert (reply.status, reply.subcode) == (400, 12), reply.meta


def test_a_missing_required_field_is_400_11_naming_it(raw: RawClient) -> None:
    reply = raw.call("tasks.add_or_update_model", {"task": raw.new_task("model holder"), "name": "m"})
    assert (reply.status, reply.subcode) == (400, 11)
    assert "model" in reply.meta["result_msg"] and "type" in reply.meta["result_msg"]


def test_every_endpoint_declares_its_fields_in_the_one_table() -> None:
    assert sorted(REQUESTS) == registry.endpoint_names()


def test_the_login_cookie_cannot_be_set_from_request_data(server: EmbeddedServer) -> None:
    # debug.ping echoes its body; a field named like an internal marker must not become a response header.
    reply = requests.post(f"{server.url}/debug.ping", json={"__set_token_cookie__": "x\r\nX-Injected: 1"}, timeout=10)
    assert reply.status_code == 200
    assert "Set-Cookie" not in reply.headers and "X-Injected" not in reply.headers
