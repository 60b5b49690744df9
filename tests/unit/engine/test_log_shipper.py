"""LogShipper: lines to log events, batches, retries, backpressure; and end to end against the embedded server."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from notebook_agent import api
from notebook_agent.api import Session
from notebook_agent.engine import log_shipper
from notebook_agent.engine.log_lines import CUT_MARKER, LineAssembler
from notebook_agent.engine.log_shipper import LogShipper
from notebook_agent.engine.log_spool import LogSpool, replay_leftover, spool_path


class Recorder:
    """A `send` that records each batch and can fail a number of times or wait on a gate."""

    def __init__(self, fail: int = 0, gate: threading.Event | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail
        self.gate = gate
        self.called = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        self.called.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        with self.lock:
            if self.fail > 0:
                self.fail -= 1
                raise ConnectionError("server down")
            self.batches.append([dict(e) for e in events])
        return {"added": len(events), "errors": 0}

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]

    @property
    def lines(self) -> list[str]:
        return [line for e in self.events for line in e["msg"].split("\n")]


def frozen() -> float:
    return 1_700_000_000.0


def test_joins_lines_of_one_level_into_one_event() -> None:
    rec = Recorder()
    shipper = LogShipper(rec, "task1", "w1", clock=frozen, flush_interval=60)
    shipper.start()
    shipper.add("stdout", ["a", "b"])
    shipper.add("agent", ["c"])
    assert rec.batches == []  # nothing is due yet
    assert shipper.close(timeout=5)
    assert rec.events == [
        {
            "task": "task1",
            "type": "log",
            "timestamp": 1_700_000_000_000,
            "level": "info",
            "worker": "w1",
            "msg": "a\nb\nc",
            "id": f"{shipper.run_id}-1",
        }
    ]
    stats = shipper.stats
    assert (stats.lines_added, stats.lines_sent, stats.events_sent, stats.batches_sent) == (3, 3, 1, 1)
    assert stats.pending_bytes == 0


def test_stderr_is_error_and_timestamps_strictly_increase_with_frozen_clock() -> None:
    rec = Recorder()
    shipper = LogShipper(rec, "t", "w", clock=frozen, flush_interval=60)
    for i in range(50):
        shipper.add("stdout", [f"out {i}"])
        shipper.add("stderr", [f"err {i}"])
    assert shipper.close(timeout=5)
    events = rec.events
    assert [e["level"] for e in events] == ["info", "error"] * 50
    stamps = [e["timestamp"] for e in events]
    assert stamps[0] == 1_700_000_000_000
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert rec.lines == [f"{s} {i}" for i in range(50) for s in ("out", "err")]


def test_clock_going_back_keeps_order() -> None:
    now = [2000.0]
    rec = Recorder()
    shipper = LogShipper(rec, "t", "w", clock=lambda: now[0], flush_interval=60)
    shipper.add("stdout", ["a"])
    now[0] = 1000.0
    shipper.add("stderr", ["b"])
    now[0] = 3000.0
    shipper.add("stdout", ["c"])
    assert shipper.close(timeout=5)
    assert [e["timestamp"] for e in rec.events] == [2_000_000, 2_000_001, 3_000_000]


def test_lines_apart_in_time_start_a_new_event() -> None:
    now = [100.0]
    rec = Recorder()
    shipper = LogShipper(rec, "t", "w", clock=lambda: now[0], flush_interval=60)
    shipper.add("stdout", ["a", "b"])
    now[0] = 102.0
    shipper.add("stdout", ["c"])
    assert shipper.close(timeout=5)
    assert [(e["timestamp"], e["msg"]) for e in rec.events] == [(100_000, "a\nb"), (102_000, "c")]


def test_event_and_batch_size_limits() -> None:
    rec = Recorder()
    shipper = LogShipper(rec, "t", "w", clock=frozen, flush_interval=60, max_batch_bytes=2000, max_event_bytes=300)
    lines = [f"{i:04d} " + "é" * 45 for i in range(200)]
    shipper.start()
    shipper.add("stdout", lines[:100])
    shipper.add("stdout", lines[100:])
    assert shipper.close(timeout=5)
    assert rec.lines == lines
    assert len(rec.batches) > 5
    for batch in rec.batches:
        assert len("\n".join(json.dumps(e) for e in batch).encode()) <= 2000
        for event in batch:
            assert len(event["msg"].encode()) <= 300


@pytest.mark.parametrize(
    "lines",
    [
        [f"plain {i} " + "x" * (i % 50) for i in range(300)],
        *([f"{i} escaped{char}" for i in range(300)] for char in ('"', "\\", "\x01", "\t", "\x7f")),
        [f"mixed {i} é😀" for i in range(300)],
        ["plain", "a line\nwith a newline in it"],
    ],
    ids=["plain-ascii", "quote", "backslash", "control", "tab", "delete", "non-ascii", "newline-inside"],
)
def test_pending_bytes_are_the_json_size_of_the_events(lines: list[str]) -> None:
    rec = Recorder()
    shipper = LogShipper(rec, "t", "w", clock=frozen, flush_interval=60, max_event_bytes=500)
    shipper.add("stdout", lines)  # never started: nothing is sent before close
    pending = shipper.stats.pending_bytes
    assert shipper.close(timeout=5)
    assert "\n".join(rec.lines) == "\n".join(lines)
    assert pending == sum(len(json.dumps(e)) + 1 for e in rec.events)


def test_oversized_line_is_cut_with_marker() -> None:
    rec = Recorder()
    shipper = LogShipper(rec, "t", "w", clock=frozen, flush_interval=60, max_event_bytes=100)
    shipper.add("stdout", ["x" * 250])
    assert shipper.close(timeout=5)
    pieces = rec.lines
    assert len(pieces) == 3  # 78 + 78 + 94 characters
    assert all(len(p.encode()) <= 100 for p in pieces)
    assert all(p.endswith(CUT_MARKER) for p in pieces[:-1])
    assert "".join(p.removesuffix(CUT_MARKER) for p in pieces) == "x" * 250
    assert all(len(e["msg"].encode()) <= 100 for e in rec.events)


def test_flushes_within_flush_interval() -> None:
    rec = Recorder()
    shipper = LogShipper(rec, "t", "w", flush_interval=0.05)
    shipper.start()
    try:
        started = time.monotonic()
        shipper.add("stdout", ["hello"])
        assert rec.called.wait(5)
        assert time.monotonic() - started < 2
        assert rec.lines == ["hello"]
    finally:
        assert shipper.close(timeout=5)


def test_full_batch_is_sent_without_waiting_for_the_interval() -> None:
    rec = Recorder()
    shipper = LogShipper(rec, "t", "w", flush_interval=600, max_batch_bytes=1000, max_event_bytes=200)
    shipper.start()
    try:
        shipper.add("stdout", ["y" * 100] * 20)
        assert rec.called.wait(5)
    finally:
        assert shipper.close(timeout=5)
    assert rec.lines == ["y" * 100] * 20


def test_failed_sends_are_retried_with_the_same_events() -> None:
    rec = Recorder(fail=3)
    errors: list[BaseException] = []
    shipper = LogShipper(rec, "t", "w", flush_interval=0.01, retry_delays=(0.01, 0.02), on_error=errors.append)
    shipper.start()
    expected = [f"line {i}" for i in range(500)]
    for i in range(0, 500, 50):
        shipper.add("stdout" if i % 100 else "stderr", expected[i : i + 50])
    assert shipper.close(timeout=10)
    assert rec.lines == expected
    assert shipper.stats.send_failures == 3
    assert len(errors) == 3 and all(isinstance(e, ConnectionError) for e in errors)
    assert shipper.stats.lines_sent == 500


def test_backpressure_blocks_add_until_sent() -> None:
    gate = threading.Event()
    rec = Recorder(gate=gate)
    shipper = LogShipper(rec, "t", "w", flush_interval=0.01, max_pending_bytes=2000, max_event_bytes=200)
    shipper.start()
    expected = [f"{i:05d} " + "z" * 50 for i in range(400)]
    done = threading.Event()

    def produce() -> None:
        for i in range(0, 400, 10):
            shipper.add("stdout", expected[i : i + 10])
        done.set()

    producer = threading.Thread(target=produce, name="test-producer", daemon=True)
    producer.start()
    assert rec.called.wait(5)  # the sender is stuck in send
    assert not done.wait(0.3)  # ... so the producer is stuck in add
    assert shipper.stats.pending_bytes <= 2000 + 1000  # the limit plus at most one add
    gate.set()
    assert done.wait(10)
    assert shipper.close(timeout=10)
    assert rec.lines == expected


def test_close_sends_the_rest_and_add_after_close_raises() -> None:
    rec = Recorder()
    shipper = LogShipper(rec, "t", "w", flush_interval=600)
    shipper.start()
    shipper.add("stdout", ["last words"])
    assert shipper.close(timeout=5)
    assert rec.lines == ["last words"]
    with pytest.raises(RuntimeError):
        shipper.add("stdout", ["too late"])
    assert shipper.close(timeout=1)  # idempotent


def test_close_gives_up_in_time_when_send_keeps_failing() -> None:
    rec = Recorder(fail=10**9)
    shipper = LogShipper(rec, "t", "w", flush_interval=0.01, retry_delays=(0.05,))
    shipper.start()
    shipper.add("stderr", ["never arrives"])
    started = time.monotonic()
    assert shipper.close(timeout=0.5) is False
    assert time.monotonic() - started < 3
    assert shipper.stats.send_failures >= 1


def test_unknown_stream_rejected() -> None:
    shipper = LogShipper(Recorder(), "t", "w")
    with pytest.raises(ValueError):
        shipper.add("stdin", ["x"])


def test_two_threads_adding_at_once() -> None:
    rec = Recorder()
    shipper = LogShipper(rec, "t", "w", flush_interval=0.01, max_pending_bytes=4000, max_event_bytes=500)
    shipper.start()

    def produce(stream: str) -> None:
        for i in range(1000):
            shipper.add(stream, [f"{stream} {i}"])

    threads = [threading.Thread(target=produce, args=(s,), name=f"test-{s}") for s in ("stdout", "stderr")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
        assert not t.is_alive()
    assert shipper.close(timeout=10)
    for stream, level in (("stdout", "info"), ("stderr", "error")):
        got = [line for e in rec.events if e["level"] == level for line in e["msg"].split("\n")]
        assert got == [f"{stream} {i}" for i in range(1000)]
    stamps = [e["timestamp"] for e in rec.events]
    assert all(b > a for a, b in itertools.pairwise(stamps))


def test_end_to_end_with_embedded_server(server: Any, raw: Any) -> None:
    creds = server.credentials
    session = Session(server.url, creds.access_key, creds.secret_key)
    task = raw.new_task("log shipping")
    shipper = LogShipper(
        lambda evs: api.events.add_batch(session, evs), task, "test-worker", flush_interval=0.05, max_event_bytes=4096
    )
    shipper.start()
    expected: list[str] = []
    chunks: list[bytes] = []
    for i in range(20_000):
        if i % 50 == 0:
            chunks.append(f"epoch {i}: 10%\repoch {i}: 60%\repoch {i}: 100% ✓\r\n".encode())
            expected.append(f"epoch {i}: 100% ✓")
        else:
            chunks.append(f"line {i} {'é' * (i % 7)}\n".encode())
            expected.append(f"line {i} {'é' * (i % 7)}")
    data = b"".join(chunks)
    assembler = LineAssembler()
    levels: list[str] = []
    for n, start in enumerate(range(0, len(data), 3001)):  # odd chunk size: splits lines, \r\n and characters
        lines = assembler.feed(data[start : start + 3001])
        stream = "stderr" if n % 4 == 3 else "stdout"
        shipper.add(stream, lines)
        levels += ["error" if stream == "stderr" else "info"] * len(lines)
    tail = assembler.flush()
    assert tail == []
    assert shipper.close(timeout=20)
    assert shipper.stats.send_failures == 0

    got: list[tuple[str, str]] = []
    since = None
    while True:
        page = api.events.get_task_log(
            session, task, batch_size=10000, navigate_earlier=False, order="asc", from_timestamp=since
        )
        if not page["events"]:
            break
        for event in page["events"]:
            got += [(event["level"], line) for line in event["msg"].split("\n")]
        since = page["events"][-1]["timestamp"]
    assert [line for _, line in got] == expected
    assert [level for level, _ in got] == levels


# the spool -------------------------------------------------------------------------------------------------------
class Outage(Recorder):
    """A `send` that fails while `down` is set (the server is away), recording every batch that landed."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()

    def __call__(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        if self.down.is_set():
            with self.lock:
                self.called.set()
            raise ConnectionError("server down")
        return super().__call__(events)


def spooled(tmp_path: Path, rec: Any, max_bytes: int = 1 << 20, **kw: Any) -> LogShipper:
    spool = LogSpool(spool_path(tmp_path, "t"), max_bytes=max_bytes, meta={"task_id": "t"})
    kw.setdefault("flush_interval", 0.01)
    kw.setdefault("retry_delays", (0.01,))
    return LogShipper(rec, "t", "w", spool=spool, **kw)


def wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_nothing_touches_the_disk_while_the_server_keeps_up(tmp_path: Path) -> None:
    rec = Recorder()
    shipper = spooled(tmp_path, rec)
    shipper.start()
    for i in range(50):
        shipper.add("stdout", [f"line {i}"])
    assert shipper.close(timeout=5)
    assert rec.lines == [f"line {i}" for i in range(50)]
    assert not (tmp_path / "spool").exists() and shipper.stats.spooled_events == 0


def test_an_outage_sends_every_line_once_in_order_after_recovery(tmp_path: Path) -> None:
    rec = Outage()
    shipper = spooled(tmp_path, rec)
    shipper.start()
    expected = [f"n={i:04d}" for i in range(300)]
    shipper.add("stdout", expected[:100])
    wait_for(lambda: len(rec.lines) == 100)
    rec.down.set()
    for i in range(100, 300, 10):
        shipper.add("stderr" if i % 20 else "stdout", expected[i : i + 10])
        time.sleep(0.002)
    wait_for(lambda: shipper.stats.spooled_events > 0)
    assert spool_path(tmp_path, "t").exists()  # the lines wait on disk
    rec.down.clear()
    assert shipper.close(timeout=10)
    assert rec.lines == expected
    ids = [e["id"] for e in rec.events]
    assert len(ids) == len(set(ids)) and all(i.startswith(shipper.run_id + "-") for i in ids)
    assert not spool_path(tmp_path, "t").exists()  # drained: deleted


def test_ids_stay_the_same_across_retries(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    fail = [2]

    def send(events: list[dict[str, Any]]) -> None:
        seen.append([e["id"] for e in events])
        if fail[0]:
            fail[0] -= 1
            raise ConnectionError("down")

    shipper = spooled(tmp_path, send)
    shipper.add("stdout", ["a"])
    shipper.add("stderr", ["b"])
    assert shipper.close(timeout=5)
    assert seen[0] == seen[1] == seen[2] and len(seen) == 3


def test_over_the_memory_bound_a_hung_send_sends_the_events_to_the_spool(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(log_shipper, "STALL_SEC", 0.3)
    gate = threading.Event()
    rec = Recorder(gate=gate)
    shipper = spooled(tmp_path, rec, max_pending_bytes=2000, max_event_bytes=200)
    shipper.start()
    expected = [f"{i:05d} " + "z" * 50 for i in range(400)]
    shipper.add("stdout", expected[:10])
    assert rec.called.wait(5)  # the sender hangs in send (a blackholed server)
    started = time.monotonic()
    for i in range(10, 400, 10):
        shipper.add("stdout", expected[i : i + 10])  # waits STALL_SEC once, then the spool takes it
    assert 0.25 <= time.monotonic() - started < 5
    assert shipper.stats.pending_bytes <= 2000 + 1000
    assert shipper.stats.spooled_events > 0
    gate.set()
    assert shipper.close(timeout=10)
    assert rec.lines == expected


def test_a_flood_the_server_absorbs_never_touches_the_disk(tmp_path: Path) -> None:
    def slow(events: list[dict[str, Any]]) -> None:
        time.sleep(0.01)  # slower than the writer, but never stuck

    shipper = spooled(tmp_path, slow, max_pending_bytes=2000, max_event_bytes=200, max_batch_bytes=1000)
    shipper.start()
    for i in range(0, 400, 10):
        shipper.add("stdout", [f"{j:05d} " + "f" * 50 for j in range(i, i + 10)])  # blocks: backpressure
    assert shipper.close(timeout=10)
    assert shipper.stats.spooled_events == 0 and not (tmp_path / "spool").exists()


def test_a_full_spool_blocks_the_writer_until_it_drains(tmp_path: Path) -> None:
    rec = Outage()
    rec.down.set()
    shipper = spooled(tmp_path, rec, max_bytes=4000, max_pending_bytes=1000, max_event_bytes=200)
    shipper.start()
    expected = [f"{i:05d} " + "q" * 60 for i in range(300)]
    done = threading.Event()

    def produce() -> None:
        for i in range(0, 300, 5):
            shipper.add("stdout", expected[i : i + 5])
        done.set()

    threading.Thread(target=produce, name="test-producer", daemon=True).start()
    wait_for(lambda: spool_path(tmp_path, "t").exists() and spool_path(tmp_path, "t").stat().st_size >= 4000)
    assert not done.wait(0.3)  # the writer waits: nothing is dropped
    assert spool_path(tmp_path, "t").stat().st_size < 4000 + 2000
    rec.down.clear()
    assert done.wait(10)
    assert shipper.close(timeout=10)
    assert rec.lines == expected


def test_close_may_be_called_again_and_goes_on(tmp_path: Path) -> None:
    rec = Outage()
    rec.down.set()
    shipper = spooled(tmp_path, rec)
    shipper.start()
    shipper.add("stdout", ["first", "second"])
    assert shipper.close(timeout=0.2) is False
    assert spool_path(tmp_path, "t").exists()
    rec.down.clear()
    assert shipper.close(timeout=5)
    assert rec.lines == ["first", "second"]


def test_abandon_keeps_the_unsent_lines_for_a_replay(tmp_path: Path, server: Any, raw: Any) -> None:
    task = raw.new_task("abandoned")
    session = Session(server.url, server.credentials.access_key, server.credentials.secret_key)
    down = threading.Event()

    def send(events: list[dict[str, Any]]) -> Any:
        if down.is_set():
            raise ConnectionError("server down")
        return api.events.add_batch(session, events)

    spool = LogSpool(spool_path(tmp_path, task), meta={"task_id": task})
    shipper = LogShipper(send, task, "w", spool=spool, flush_interval=0.01, retry_delays=(0.01,))
    shipper.start()
    shipper.add("stdout", ["sent before"])
    wait_for(lambda: shipper.stats.lines_sent == 1)
    down.set()
    shipper.add("stdout", ["kept 1", "kept 2"])
    assert shipper.close(timeout=0.2) is False
    assert shipper.abandon()
    assert shipper.close(timeout=1) is False  # abandoned: nothing more is sent from here
    down.clear()
    done = replay_leftover(tmp_path, task, session, timeout=5)
    assert done.sent_events >= 1 and not done.kept
    page = api.events.get_task_log(session, task, navigate_earlier=False, order="asc")
    assert [line for e in page["events"] for line in e["msg"].split("\n")] == ["sent before", "kept 1", "kept 2"]
    assert not spool_path(tmp_path, task).exists()


def test_abandon_without_a_spool_says_lines_were_lost() -> None:
    shipper = LogShipper(Recorder(fail=10**9), "t", "w", flush_interval=0.01, retry_delays=(0.01,))
    shipper.start()
    shipper.add("stdout", ["lost"])
    assert shipper.close(timeout=0.1) is False
    assert shipper.abandon() is False
