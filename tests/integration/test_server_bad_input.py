"""Acceptance: bad input gets the real server's code/subcode and a message, and the server keeps serving."""

from __future__ import annotations

import pytest

from tests.conftest import RawClient


def _expired_token(server, clock) -> str:
    client = RawClient(server)
    token = client.call("auth.login", {"expiration_sec": 60}, version=None, authorization=client.basic).data["token"]
    clock.advance(120)
    return token


CASES = {
    "malformed json": (lambda raw, srv, clk: raw.call("tasks.get_all", body=b"{not json"), 400, 0),
    "unknown endpoint": (lambda raw, srv, clk: raw.call("tasks.no_such_thing", {}), 404, 0),
    "wrong credentials": (
        lambda raw, srv, clk: raw.call("auth.login", version=None, authorization="Basic d3Jvbmc6a2V5"),
        401,
        22,
    ),
    "no credentials": (lambda raw, srv, clk: raw.call("tasks.get_all", {}, authorization=None), 401, 20),
    "expired token": (
        lambda raw, srv, clk: raw.call("tasks.get_all", {}, authorization="Bearer " + _expired_token(srv, clk)),
        401,
        30,
    ),
    "bad task id": (lambda raw, srv, clk: raw.call("tasks.get_by_id", {"task": "nope"}), 400, 101),
    "invalid status transition": (
        lambda raw, srv, clk: raw.call("tasks.completed", {"task": raw.new_task("never started")}),
        400,
        110,
    ),
    "name under 3 characters": (
        lambda raw, srv, clk: raw.call("tasks.create", {"name": "ab", "type": "training"}),
        400,
        12,
    ),
    "queue name under 3 characters": (lambda raw, srv, clk: raw.call("queues.create", {"name": "q"}), 400, 12),
    "missing required field": (lambda raw, srv, clk: raw.call("tasks.get_by_id", {}), 400, 11),
    "unknown queue": (lambda raw, srv, clk: raw.call("queues.get_next_task", {"queue": "nope"}), 400, 701),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_real_error_and_server_keeps_serving(case, server, raw, clock):
    make, code, subcode = CASES[case]
    reply = make(raw, server, clock)
    assert (reply.status, reply.subcode) == (code, subcode), reply.meta
    assert reply.meta["result_msg"], "every error carries a message"
    assert reply.data == {}
    # The next ordinary call still works, with a fresh login.
    fresh = RawClient(server)
    assert fresh.ok("queues.get_default")["name"] == "default"


def test_secret_never_echoed_in_errors(server, raw):
    assert server.credentials is not None
    reply = raw.call("auth.login", version=None, authorization="Basic " + "x" * 10)
    assert server.credentials.secret_key not in str(reply.meta)
