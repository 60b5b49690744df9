"""Console lines of a task, shipped to the server as the SDK's log events through `events.add_batch`.

Lines of one level are joined with "\\n" into events of at most `max_event_bytes` of message; events get strictly
increasing millisecond timestamps (the server orders a task's log by timestamp); a sender thread sends batches of
at most `max_batch_bytes` of JSON when one is full, or at least every `flush_interval` seconds. Every event has
a stable `id` (`<shipper run id>-<sequence>`), kept across retries, spooling and replay, so that a server that
knows ids stores it once (engine/log_delivery.py sends it only to such a server).

A failed send is retried with the same events, which leave the queue only once `send` returned. With a spool
(engine/log_spool.py), a failed send, or more than `max_pending_bytes` waiting in memory, moves the waiting events
to disk; later events follow them there until the spool is drained, so the order is always: in flight, spool,
memory. While the server keeps up nothing touches the disk. When the spool is full too (or there is none), `add()`
blocks: the pipe reader stalls and the task blocks on its write, which keeps memory bounded without losing a line.
`close(timeout)` may be called again after it returned False; `abandon()` leaves what is unsent in the spool.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from notebook_agent.engine.log_lines import CUT_MARKER
from notebook_agent.engine.log_spool import LogSpool

logger = logging.getLogger(__name__)

# "output": a task's stdout and stderr in one ordered stream (engine/process.py), at info as its stdout was.
LEVELS = {"output": "info", "stdout": "info", "stderr": "error", "agent": "info"}
JOIN_WINDOW_MS = 1000  # like the SDK: lines more than a second apart start a new event (its timestamp)
# Over the memory bound, the writer waits while sends go through (a flood the server absorbs never touches the
# disk); once a send has hung this long, or failed, the waiting events go to the spool instead.
STALL_SEC = 2.0


@dataclass(frozen=True)
class ShipperStats:
    lines_added: int
    lines_sent: int
    events_sent: int
    batches_sent: int
    send_failures: int
    pending_bytes: int
    spooled_events: int = 0  # events written to the spool (each one leaves it once, in order)


@dataclass
class _Event:
    level: str
    timestamp: int
    lines: list[str]
    msg_bytes: int  # UTF-8 size of the joined message
    json_bytes: int  # size of this event as one JSON line (ASCII-escaped, as the session encodes it)
    born: float  # monotonic time it was queued
    seq: int = 0  # this shipper's sequence number: the event's id is "<run id>-<seq>"


# What JSON escapes in ASCII text (json's own rule is "not in space..tilde"), but "\n": it only joins `_plain`'s lines.
_ESCAPED = re.compile(r'[\x00-\x09\x0b-\x1f"\\\x7f]')


def _plain(lines: Sequence[str]) -> bool:
    """True when every character of `lines` is one UTF-8 byte and one JSON character (checked in one pass)."""
    text = "\n".join(lines)
    return text.isascii() and text.count("\n") == len(lines) - 1 and _ESCAPED.search(text) is None


def _json_size(line: str) -> int:
    """Characters of `line` as a JSON string (ASCII-escaped, as the session encodes it), without the quotes."""
    return len(json.dumps(line)) - 2


def _line_count(event: dict[str, Any]) -> int:
    return str(event.get("msg") or "").count("\n") + 1


def _cut_bytes(line: str, limit: int) -> list[str]:
    """A line cut so that each piece is at most `limit` UTF-8 bytes, all but the last ending with the marker."""
    budget = limit - len(CUT_MARKER.encode())
    pieces = []
    while len(line.encode()) > limit:
        head = line.encode()[:budget].decode("utf-8", "ignore")
        pieces.append(head + CUT_MARKER)
        line = line[len(head) :]
    pieces.append(line)
    return pieces


class LogShipper:
    def __init__(
        self,
        send: Callable[[list[dict]], Any],
        task_id: str,
        worker: str,
        *,
        flush_interval: float = 1.0,
        max_batch_bytes: int = 1 << 20,
        max_event_bytes: int = 64 * 1024,
        max_pending_bytes: int = 8 << 20,
        clock: Callable[[], float] = time.time,
        retry_delays: Sequence[float] = (0.2, 0.5, 1, 2, 5),
        on_error: Callable[[BaseException], None] | None = None,
        spool: LogSpool | None = None,
    ) -> None:
        if max_event_bytes <= len(CUT_MARKER.encode()) + 4:
            raise ValueError("max_event_bytes is too small")
        self._send = send
        self.task_id = task_id
        self.worker = worker
        self.flush_interval = flush_interval
        self.max_batch_bytes = max_batch_bytes
        self.max_event_bytes = max_event_bytes
        self.max_pending_bytes = max_pending_bytes
        self._clock = clock
        self._retry_delays = tuple(retry_delays) or (1.0,)
        self._on_error = on_error
        self._cond = threading.Condition()
        self._spool = spool
        self.run_id = secrets.token_hex(8)  # with the sequence, each event's id: unique across agents and runs
        self._seq = 0
        self._pending: deque[_Event] = deque()  # not yet taken by the sender; the last one may still grow
        self._inflight: list[dict[str, Any]] = []  # the batch being sent (again, after a failure), as wire events
        self._inflight_memory = 0  # JSON bytes of the in-flight events that are in memory only (not spooled)
        self._inflight_spooled = 0  # bytes of the spool file the in-flight batch spans (0: it came from memory)
        self._inflight_lines = 0  # the lines the in-flight batch holds (for the stats)
        self._send_started: float | None = None  # monotonic start of the send in progress
        self._pending_bytes = 0  # JSON bytes of pending + in flight, in memory
        self._last_ts = 0
        self._thread: threading.Thread | None = None
        self._closing = False
        self._abandoned = False
        self._finished = False
        self._deadline = float("inf")
        self.last_error: BaseException | None = None  # the latest failed send's error (None once one succeeded)
        self._counts = {
            "lines_added": 0,
            "lines_sent": 0,
            "events_sent": 0,
            "batches_sent": 0,
            "send_failures": 0,
            "spooled_events": 0,
        }

    def start(self) -> None:
        with self._cond:
            if self._thread is not None and (self._thread.is_alive() or not self._finished):
                return
            if self._abandoned:
                return
            self._finished = False
            self._thread = threading.Thread(target=self._run, name=f"log-shipper-{self.task_id}", daemon=True)
            self._thread.start()

    @property
    def stats(self) -> ShipperStats:
        with self._cond:
            return ShipperStats(**self._counts, pending_bytes=self._pending_bytes)

    def add(self, stream: str, lines: Sequence[str]) -> None:
        """Queue lines of a stream ("output", "stdout", "stderr" or "agent"); blocks while too much is pending."""
        level = LEVELS.get(stream)
        if level is None:
            raise ValueError(f"unknown stream {stream!r}")
        if not lines:
            return
        with self._cond:
            if self._closing:
                raise RuntimeError("log shipper is closed")
            # Too much in memory: backpressure while the server keeps up, the spool (when it has room) once it does
            # not; waiting only while a sender runs that can make room (never started: nobody would).
            while self._pending_bytes > self.max_pending_bytes:
                if self._spool is not None and not self._spool.full and self._pending and self._stalled():
                    self._to_spool()
                    continue
                if self._thread is None:
                    break
                if self._finished or self._closing:
                    raise RuntimeError("log shipper is closed")
                self._cond.wait(0.5 if self._spool is None else 0.05)
            # All lines of one call arrived together: one clock reading, and when the chunk is plain ASCII
            # (the common case) a line's UTF-8 and JSON sizes are its length, with no per-line encoding.
            now_ms = int(self._clock() * 1000)
            plain = _plain(lines)
            for line in lines:
                if plain:
                    size = json_size = len(line)
                else:
                    size, json_size = len(line.encode()), _json_size(line)
                if size <= self.max_event_bytes:
                    self._append(level, line, now_ms, size, json_size)
                    continue
                for piece in _cut_bytes(line, self.max_event_bytes):
                    self._append(level, piece, now_ms, len(piece.encode()), _json_size(piece))
            self._counts["lines_added"] += len(lines)
            if len(self._pending) > 1 and self._spooling:
                # Behind a spool, events that can no longer grow follow the older ones to disk at once.
                self._spill(keep_last=True)
            self._cond.notify_all()

    def _append(self, level: str, line: str, now_ms: int, line_bytes: int, line_json: int) -> None:
        """Queue one line of `line_bytes` UTF-8 bytes (`line_json` characters in JSON, without quotes)."""
        last = self._pending[-1] if self._pending else None
        if (
            last is not None
            and last.level == level
            and last.msg_bytes + 1 + line_bytes <= self.max_event_bytes
            and now_ms - last.timestamp < JOIN_WINDOW_MS
        ):
            last.lines.append(line)
            last.msg_bytes += 1 + line_bytes
            last.json_bytes += 2 + line_json  # "\n" is escaped as two characters
            self._pending_bytes += 2 + line_json
            return
        ts = max(now_ms, self._last_ts + 1)
        self._last_ts = ts
        self._seq += 1
        event = _Event(level, ts, [line], line_bytes, 0, time.monotonic(), self._seq)
        event.json_bytes = len(json.dumps(self._wire(event))) + 1
        self._pending.append(event)
        self._pending_bytes += event.json_bytes

    def _wire(self, event: _Event) -> dict[str, Any]:
        return {
            "task": self.task_id,
            "type": "log",
            "timestamp": event.timestamp,
            "level": event.level,
            "worker": self.worker,
            "msg": "\n".join(event.lines),
            "id": f"{self.run_id}-{event.seq}",
        }

    # the spool (under the lock) ------------------------------------------------------------------------------
    def _stalled(self) -> bool:
        """The server is not keeping up: a send failed (or events are spooled already), or one hangs."""
        started = self._send_started
        return (
            self.last_error is not None
            or self._spooling
            or (started is not None and time.monotonic() - started > STALL_SEC)
        )

    @property
    def _spooling(self) -> bool:
        """True while the spool holds events: newer ones must queue behind them."""
        return self._spool is not None and (self._spool.active or self._inflight_spooled > 0)

    def _spill(self, keep_last: bool = False, force: bool = False) -> None:
        """Move the memory events (all, or all but the last, which may still grow) to the end of the spool, unless
        it is full (`force`: even then, when leaving)."""
        assert self._spool is not None
        if self._spool.full and not force:
            return
        events = list(self._pending)
        if keep_last:
            events = events[:-1]
        if not events:
            return
        self._spool.append([self._wire(e) for e in events])
        for _ in events:
            self._pending.popleft()
        self._pending_bytes -= sum(e.json_bytes for e in events)
        self._counts["spooled_events"] += len(events)
        self._cond.notify_all()

    def _to_spool(self, force: bool = False) -> None:
        """Everything unsent to the spool, in order: a batch in flight from memory first (the spool is empty then:
        memory is only sent when nothing is spooled), which stays in flight as the spool's head, then pending (not
        while the spool is full, unless `force`)."""
        if self._spool is None:
            return
        if self._inflight and not self._inflight_spooled:
            self._inflight_spooled = self._spool.append(self._inflight)
            self._pending_bytes -= self._inflight_memory
            self._inflight_memory = 0
            self._counts["spooled_events"] += len(self._inflight)
        self._spill(force=force)

    def close(self, timeout: float = 30.0) -> bool:
        """Send what is unsent (retrying within `timeout`); True once everything was sent. After False it may be
        called again, and goes on where it stopped."""
        with self._cond:
            if self._abandoned:
                return False
            if self._done:
                return True
            self._closing = True
            self._deadline = time.monotonic() + timeout
            deadline = self._deadline
            self._cond.notify_all()
        self.start()  # a shipper never started still sends what it was given; a stopped one goes on
        thread = self._thread
        assert thread is not None
        thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            return self._done

    @property
    def _done(self) -> bool:
        return self._finished and not self._pending and not self._inflight and not self._spooling

    def abandon(self) -> bool:
        """Stop sending; what is unsent stays in the spool file for the next load (engine/log_spool.py replays it).
        True when nothing is lost: all was sent, or the rest is in the spool."""
        with self._cond:
            if self._abandoned:
                return True
            self._closing = self._abandoned = True
            self._deadline = time.monotonic()
            self._cond.notify_all()
            if self._finished and not self._pending and not self._inflight and not self._spooling:
                return True
            if self._spool is None:
                unsent = sum(len(e.lines) for e in self._pending) + sum(_line_count(e) for e in self._inflight)
                logger.warning("task %s: %d log lines could not be sent and there is no spool", self.task_id, unsent)
                return False
            # A batch still in flight goes to the spool too: if it lands after all, the replay's read-back (or the
            # server's ids) keeps it from landing twice.
            self._to_spool(force=True)
            self._spool.keep()
            return True

    def _take_batch(self) -> bool:
        """Under the lock: make the next batch the one in flight, if one is due: from the spool while it holds
        events (memory events that are due join its end first), else from memory."""
        if self._spooling:
            assert self._spool is not None
            if self._pending and (self._closing or self._pending_bytes >= self.max_batch_bytes or self._due()):
                self._spill()
            events, size = self._spool.peek(self.max_batch_bytes)
            if not events:
                if size or not self._spool.active:
                    self._spool.consume(size)  # unreadable lines, or a torn tail: nothing to send
                return False
            self._inflight, self._inflight_spooled, self._inflight_memory = events, size, 0
            self._inflight_lines = sum(_line_count(e) for e in events)
            return True
        if not self._pending:
            return False
        if not self._due() and self._pending_bytes < self.max_batch_bytes:  # nothing in flight: all pending waits
            return False
        size = 0
        taken: list[_Event] = []
        while self._pending and (not taken or size + self._pending[0].json_bytes <= self.max_batch_bytes):
            event = self._pending.popleft()
            taken.append(event)
            size += event.json_bytes
        self._inflight = [self._wire(e) for e in taken]
        self._inflight_memory, self._inflight_spooled = size, 0
        self._inflight_lines = sum(len(e.lines) for e in taken)
        return True

    def _due(self) -> bool:
        return bool(self._pending) and (
            self._closing or time.monotonic() - self._pending[0].born >= self.flush_interval
        )

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # never let the sender die silently: adders would block for ever
            logger.exception("log shipper for task %s stopped", self.task_id)
            self._report(exc)
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._inflight and not self._take_batch():
                    if self._abandoned or (self._closing and not self._pending and not self._spooling):
                        return
                    if self._spooling:
                        wait: float | None = 0.05  # a torn or unreadable spool line was skipped: look again
                    elif self._pending:
                        wait = self.flush_interval - (time.monotonic() - self._pending[0].born)
                    else:
                        wait = None
                    if self._closing and time.monotonic() >= self._deadline:
                        return
                    self._cond.wait(None if wait is None else max(wait, 0.001))
                batch = self._inflight
                self._send_started = time.monotonic()
            try:
                sent_ok = self._send_with_retries(batch)
            finally:
                with self._cond:
                    self._send_started = None
            if not sent_ok:
                return
            with self._cond:
                if self._abandoned:
                    return  # abandon() kept the batch in the spool; nothing here may touch it any more
                sent, self._inflight = self._inflight, []
                if self._inflight_spooled:
                    assert self._spool is not None
                    self._spool.consume(self._inflight_spooled)
                self._pending_bytes -= self._inflight_memory
                self._inflight_memory = self._inflight_spooled = 0
                self._counts["lines_sent"] += self._inflight_lines
                self._counts["events_sent"] += len(sent)
                self._counts["batches_sent"] += 1
                self.last_error = None
                self._cond.notify_all()

    def _send_with_retries(self, batch: list[dict]) -> bool:
        """True once `send` returned; False if closing ran out of time (or the shipper was abandoned) first."""
        failures = 0
        while True:
            try:
                self._send(batch)
                return True
            except Exception as exc:
                with self._cond:
                    self._counts["send_failures"] += 1
                    self.last_error = exc
                    if not self._abandoned:
                        self._to_spool()  # the server is not keeping up: the rest waits on disk, in order
                self._report(exc)
                delay = self._retry_delays[min(failures, len(self._retry_delays) - 1)]
                failures += 1
                end = time.monotonic() + delay
                with self._cond:
                    # Sleep the delay, unless a close() deadline (set before or during it) comes first.
                    while True:
                        if end > self._deadline or self._abandoned:
                            return False
                        if (left := end - time.monotonic()) <= 0:
                            break
                        self._cond.wait(left)

    def _report(self, exc: BaseException) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(exc)
        except Exception:
            logger.exception("log shipper on_error callback failed")
