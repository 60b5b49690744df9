"""LogShipper: lines to log events, batches, retries, backpressure; and end to end against the embedded server."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import pytest

from notebook_agent import api
from notebook_agent.api import Session
from notebook_agent.engine.log_lines import CUT_MARKER, LineAssembler
from notebook_agent.engine.log_shipper import LogShipper


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
