"""Console lines of a task, shipped to the server as the SDK's log events through `events.add_batch`.

Lines of one level are joined with "\\n" into events of at most `max_event_bytes` of message; events get strictly
increasing millisecond timestamps (the server orders a task's log by timestamp); a sender thread sends batches of
at most `max_batch_bytes` of JSON when one is full, or at least every `flush_interval` seconds. A failed send is
retried with the same events, which leave the queue only once `send` returned. When more than
`max_pending_bytes` wait, `add()` blocks: the pipe reader stalls and the task blocks on its write, which keeps
memory bounded without losing a line.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from notebook_agent.engine.log_lines import CUT_MARKER

logger = logging.getLogger(__name__)

LEVELS = {"stdout": "info", "stderr": "error", "agent": "info"}
JOIN_WINDOW_MS = 1000  # like the SDK: lines more than a second apart start a new event (its timestamp)


@dataclass(frozen=True)
class ShipperStats:
    lines_added: int
    lines_sent: int
    events_sent: int
    batches_sent: int
    send_failures: int
    pending_bytes: int


@dataclass
class _Event:
    level: str
    timestamp: int
    lines: list[str]
    msg_bytes: int  # UTF-8 size of the joined message
    json_bytes: int  # size of this event as one JSON line (ASCII-escaped, as the session encodes it)
    born: float  # monotonic time it was queued


# What JSON escapes in ASCII text (json's own rule is "not in space..tilde"), but "\n": it only joins `_plain`'s lines.
_ESCAPED = re.compile(r'[\x00-\x09\x0b-\x1f"\\\x7f]')


def _plain(lines: Sequence[str]) -> bool:
    """True when every character of `lines` is one UTF-8 byte and one JSON character (checked in one pass)."""
    text = "\n".join(lines)
    return text.isascii() and text.count("\n") == len(lines) - 1 and _ESCAPED.search(text) is None


def _json_size(line: str) -> int:
    """Characters of `line` as a JSON string (ASCII-escaped, as the session encodes it), without the quotes."""
    return len(json.dumps(line)) - 2


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
        self._pending: deque[_Event] = deque()  # not yet taken by the sender; the last one may still grow
        self._inflight: list[_Event] = []  # the batch being sent (again, after a failure)
        self._pending_bytes = 0  # JSON bytes of pending + in flight
        self._last_ts = 0
        self._thread: threading.Thread | None = None
        self._closing = False
        self._finished = False
        self._deadline = float("inf")
        self._counts = {"lines_added": 0, "lines_sent": 0, "events_sent": 0, "batches_sent": 0, "send_failures": 0}

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=f"log-shipper-{self.task_id}", daemon=True)
            self._thread.start()

    @property
    def stats(self) -> ShipperStats:
        with self._cond:
            return ShipperStats(**self._counts, pending_bytes=self._pending_bytes)

    def add(self, stream: str, lines: Sequence[str]) -> None:
        """Queue lines of a stream ("stdout", "stderr" or "agent"); blocks while too much is pending."""
        level = LEVELS.get(stream)
        if level is None:
            raise ValueError(f"unknown stream {stream!r}")
        if not lines:
            return
        with self._cond:
            if self._closing:
                raise RuntimeError("log shipper is closed")
            # Backpressure, only while a sender runs that can make room (never started: nobody would).
            while self._pending_bytes > self.max_pending_bytes and self._thread is not None:
                if self._finished:
                    raise RuntimeError("log shipper is closed")
                self._cond.wait(0.5)
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
        event = _Event(level, ts, [line], line_bytes, 0, time.monotonic())
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
        }

    def close(self, timeout: float = 30.0) -> bool:
        """Send what is pending (retrying within `timeout`), stop the thread; True if everything was sent."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + timeout
            deadline = self._deadline
            self._cond.notify_all()
        self.start()  # a shipper never started still sends what it was given
        thread = self._thread
        assert thread is not None
        thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            return self._finished and not self._pending and not self._inflight

    def _take_batch(self) -> bool:
        """Under the lock: move the events of the next batch from pending to in flight, if one is due."""
        if not self._pending:
            return False
        due = self._closing or time.monotonic() - self._pending[0].born >= self.flush_interval
        if not due and self._pending_bytes < self.max_batch_bytes:  # nothing in flight: all pending is waiting
            return False
        size = 0
        while self._pending and (not self._inflight or size + self._pending[0].json_bytes <= self.max_batch_bytes):
            event = self._pending.popleft()
            self._inflight.append(event)
            size += event.json_bytes
        return True

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
                    if self._closing and not self._pending:
                        return
                    wait = self.flush_interval - (time.monotonic() - self._pending[0].born) if self._pending else None
                    self._cond.wait(None if wait is None else max(wait, 0.001))
                batch = [self._wire(e) for e in self._inflight]
            if not self._send_with_retries(batch):
                return
            with self._cond:
                sent, self._inflight = self._inflight, []
                self._pending_bytes -= sum(e.json_bytes for e in sent)
                self._counts["lines_sent"] += sum(len(e.lines) for e in sent)
                self._counts["events_sent"] += len(sent)
                self._counts["batches_sent"] += 1
                self._cond.notify_all()

    def _send_with_retries(self, batch: list[dict]) -> bool:
        """True once `send` returned; False if closing ran out of time first."""
        failures = 0
        while True:
            try:
                self._send(batch)
                return True
            except Exception as exc:
                with self._cond:
                    self._counts["send_failures"] += 1
                self._report(exc)
                delay = self._retry_delays[min(failures, len(self._retry_delays) - 1)]
                failures += 1
                end = time.monotonic() + delay
                with self._cond:
                    # Sleep the delay, unless a close() deadline (set before or during it) comes first.
                    while True:
                        if end > self._deadline:
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
