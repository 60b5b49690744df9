"""The log spool on disk, exactly-once delivery (event ids, read-back) and the replay of a dead agent's spool."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from notebook_agent import api
from notebook_agent.api import Session, TransportError
from notebook_agent.engine import owner
from notebook_agent.engine.log_delivery import EventDelivery
from notebook_agent.engine.log_spool import LogSpool, leftover_spools, replay_leftover, spool_path
from notebook_agent.server.auth import EVENT_IDS_ENV

BASE_MS = 1_700_000_000_000


def events(task: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "task": task,
            "type": "log",
            "timestamp": BASE_MS + i,
            "level": "info",
            "worker": "w",
            "msg": f"n={i:04d}",
            "id": f"run-{i}",
        }
        for i in range(start, start + count)
    ]


def session_for(server: Any) -> Session:
    creds = server.credentials
    return Session(server.url, creds.access_key, creds.secret_key)


def server_lines(session: Session, task: str) -> list[str]:
    page = api.events.get_task_log(session, task, batch_size=10000, navigate_earlier=False, order="asc")
    return [line for e in page["events"] for line in e["msg"].split("\n")]


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AmbiguousOnce(Session):
    """A session whose first add_batch reaches the server but whose answer is lost (a reset after sending)."""

    cut = 1

    def send(self, endpoint: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        result = super().send(endpoint, *args, **kwargs)
        if endpoint == "events.add_batch" and self.cut > 0:
            self.cut -= 1
            raise TransportError(endpoint, "connection reset by peer", maybe_delivered=True)
        return result


# the spool file ---------------------------------------------------------------------------------------------------
def test_append_peek_consume_and_the_files_go_once_drained(tmp_path: Path) -> None:
    path = spool_path(tmp_path, "t1")
    spool = LogSpool(path, meta={"task_id": "t1"})
    assert not path.exists()  # nothing touches the disk before the first append
    written = spool.append(events("t1", 5))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert spool.active and spool.unsent_bytes == written == path.stat().st_size
    first, size = spool.peek(2 * len(path.read_bytes().splitlines()[0]) + 2)
    assert [e["msg"] for e in first] == ["n=0000", "n=0001"]
    assert spool.peek(10**6)[0][0]["msg"] == "n=0000"  # peeking takes nothing
    spool.consume(size)
    state = json.loads(path.with_name("t1.state.json").read_text())
    assert state["sent"] == size and state["meta"] == {"task_id": "t1"}
    rest, size = spool.peek(10**6)
    assert [e["msg"] for e in rest] == ["n=0002", "n=0003", "n=0004"]
    spool.consume(size)
    assert not spool.active and list(path.parent.iterdir()) == []


def test_a_leftover_resumes_after_what_was_delivered_and_skips_a_torn_tail(tmp_path: Path) -> None:
    path = spool_path(tmp_path, "t1")
    spool = LogSpool(path)
    spool.append(events("t1", 4))
    _, size = spool.peek(1)  # the first event
    spool.consume(size)
    spool.keep()
    with open(path, "ab") as handle:
        handle.write(b'{"task": "t1", "msg": "half a li')  # the agent died while writing it
    again = LogSpool.open_leftover(path)
    got, size = again.peek(10**6)
    assert [e["msg"] for e in got] == ["n=0001", "n=0002", "n=0003"]
    again.consume(size)
    assert again.peek(10**6) == ([], 0) and not again.active


def test_full_is_the_file_size_against_max_bytes(tmp_path: Path) -> None:
    spool = LogSpool(spool_path(tmp_path, "t1"), max_bytes=300)
    spool.append(events("t1", 1))
    assert not spool.full
    spool.append(events("t1", 3, start=1))
    assert spool.full
    with pytest.raises(ValueError):
        LogSpool(spool_path(tmp_path, "t2"), max_bytes=0)


def test_a_spool_of_this_process_is_a_leftover_only_once_let_go(tmp_path: Path) -> None:
    spool = LogSpool(spool_path(tmp_path, "t1"), meta={"task_id": "t1", "api_server": "http://x"})
    spool.append(events("t1", 1))
    assert leftover_spools(tmp_path) == []  # its shipper still works on it
    spool.keep()
    assert leftover_spools(tmp_path) == [(spool.path, {"task_id": "t1", "api_server": "http://x"})]


def test_a_spool_of_a_dead_process_is_a_leftover(tmp_path: Path) -> None:
    spool = LogSpool(spool_path(tmp_path, "t1"))
    spool.append(events("t1", 1))
    spool.keep()
    state_file = spool.path.with_name("t1.state.json")
    state = json.loads(state_file.read_text())
    state["owner"]["create_time"] -= 1000  # the pid now belongs to another process: its owner is gone
    owner.hold(spool.path)  # held here would not matter: the file says another process owns it
    state_file.write_text(json.dumps(state))
    try:
        assert [p for p, _ in leftover_spools(tmp_path)] == [spool.path]
    finally:
        owner.release(spool.path)


# exactly-once delivery ----------------------------------------------------------------------------------------
def test_with_the_claim_ids_go_out_and_a_resent_batch_adds_nothing(server: Any, raw: Any) -> None:
    task = raw.new_task("ids")
    session = AmbiguousOnce(server.url, server.credentials.access_key, server.credentials.secret_key)
    delivery = EventDelivery(session, task)
    batch = events(task, 3)
    with pytest.raises(TransportError):
        delivery(batch)  # stored, but the answer was lost
    assert delivery.uncertain
    result = delivery(batch)
    assert result["duplicates"] == 3 and delivery.read_backs == 0
    assert server_lines(session, task) == ["n=0000", "n=0001", "n=0002"]


def test_without_the_claim_a_read_back_sends_only_what_is_missing(server: Any, raw: Any, monkeypatch) -> None:
    monkeypatch.setenv(EVENT_IDS_ENV, "0")  # the server now behaves like a real one
    task = raw.new_task("read back")
    session = AmbiguousOnce(server.url, server.credentials.access_key, server.credentials.secret_key)
    delivery = EventDelivery(session, task)
    with pytest.raises(TransportError):
        delivery(events(task, 3))
    delivery(events(task, 5))  # the lost batch plus two newer events
    assert delivery.read_backs == 1 and delivery.skipped == 3
    lines = server_lines(session, task)
    assert lines == [f"n={i:04d}" for i in range(5)]
    stored = api.events.get_task_log(session, task, navigate_earlier=False)["events"]
    assert all("id" not in e for e in stored)  # a real server gets the SDK's event shape
    delivery(events(task, 2, start=5))  # no ambiguity left: no more read-backs
    assert delivery.read_backs == 1


def test_a_refused_connection_is_just_sent_again(raw: Any) -> None:
    session = Session(f"http://127.0.0.1:{dead_port()}", None, None, auth_token="tok")
    delivery = EventDelivery(session, "t1")
    with pytest.raises(TransportError) as info:
        delivery(events("t1", 1))
    assert not info.value.maybe_delivered and not delivery.uncertain


# replaying a dead agent's spool -----------------------------------------------------------------------------
@pytest.mark.parametrize("claim", [True, False], ids=["event-ids", "read-back"])
def test_replay_sends_each_event_once_and_deletes_the_spool(
    server: Any, raw: Any, tmp_path: Path, monkeypatch, claim: bool
) -> None:
    if not claim:
        monkeypatch.setenv(EVENT_IDS_ENV, "0")
    task = raw.new_task("replay")
    session = session_for(server)
    spool = LogSpool(spool_path(tmp_path, task), meta={"task_id": task})
    spool.append(events(task, 10))
    api.events.add_batch(session, events(task, 4))  # the dead agent sent these but did not live to record it
    spool.keep()
    done = replay_leftover(tmp_path, task, session, timeout=5)
    assert (done.outcome, done.kept) == ("sent", False)
    assert server_lines(session, task) == [f"n={i:04d}" for i in range(10)]
    assert not spool.path.exists() and leftover_spools(tmp_path) == []


def test_replay_keeps_the_spool_while_the_server_is_unreachable(tmp_path: Path) -> None:
    spool = LogSpool(spool_path(tmp_path, "t1"))
    spool.append(events("t1", 3))
    spool.keep()
    session = Session(f"http://127.0.0.1:{dead_port()}", None, None, auth_token="tok", retry_total_seconds=0.1)
    done = replay_leftover(tmp_path, "t1", session, timeout=0.5, sleep=lambda _: None)
    assert done.kept and "unreachable" in done.outcome and done.sent_events == 0
    assert spool.path.exists()
    assert [p for p, _ in leftover_spools(tmp_path)] == [spool.path]


def test_a_new_run_of_the_task_appends_behind_what_an_earlier_run_left(tmp_path: Path) -> None:
    old = LogSpool(spool_path(tmp_path, "t1"))
    old.append(events("t1", 3))
    _, size = old.peek(1)
    old.consume(size)  # the first one was delivered
    old.keep()
    new = LogSpool(spool_path(tmp_path, "t1"))
    new.append(events("t1", 2, start=3))
    got, size = new.peek(10**6)
    assert [e["msg"] for e in got] == ["n=0001", "n=0002", "n=0003", "n=0004"]
    new.consume(size)
    assert not new.active and not new.path.exists()
