"""Idempotent retries: a call repeated with the same `Idempotency-Key` header gets the first call's answer, and the
server acts once.

A client that lost a reply (a reset connection, a read timeout) cannot tell whether the server acted, so it sends
the call again; for `queues.get_next_task`, `events.add_batch` or a status change, acting twice pops a second task
or doubles log lines. Our client sends one key per logical call, the same on each of its retries. Answers are kept
per caller and key for `TTL_SEC`, at most `MAX_ENTRIES` of them; a retry that arrives while the first call still
runs waits for its answer. Calls without the header (the real clients) are untouched. Server errors (5xx) are not
kept: nothing was done, so a retry may act. Reads (`get_*` but the pop, `peek_task`, `scalar_metrics_*`, `ping`,
`debug.*`, `server.*`, `login.*`) are not kept either: running them twice is harmless, and their answers (a page of
log events, a list of tasks) would fill the cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HEADER = "Idempotency-Key"
TTL_SEC = 600.0
MAX_ENTRIES = 20_000
MAX_KEY_CHARS = 128
WAIT_SEC = 300.0  # how long a retry waits for the first call still running (a long poll holds up to a minute)
_READ_SERVICES = ("debug.", "server.", "login.")
_READ_ACTIONS = ("get", "peek_task", "scalar_metrics", "ping")


def changes_state(endpoint: str) -> bool:
    """True for a call that acts (a retry must not act again); False for a read."""
    if endpoint.startswith(_READ_SERVICES):
        return False
    action = endpoint.rpartition(".")[2]
    return action == "get_next_task" or not action.startswith(_READ_ACTIONS)


@dataclass
class _Entry:
    endpoint: str
    done: threading.Event = field(default_factory=threading.Event)
    answer: tuple[int, int, str, dict, Any] | None = None  # code, subcode, msg, error_data, data
    at: float = field(default_factory=time.monotonic)


Answer = tuple[int, int, str, dict, Any]


class IdempotencyCache:
    """Answers by (caller, key), oldest first; thread-safe."""

    def __init__(self, ttl_sec: float = TTL_SEC, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_sec = ttl_sec
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.replayed = 0  # retries answered from the cache (for tests and the debug endpoint)

    def run(self, caller: str, key: str | None, endpoint: str, act: Callable[[], Answer]) -> Answer:
        """`act()`'s answer; for a (caller, key) seen before on this endpoint, the first answer, without acting."""
        if not key or len(key) > MAX_KEY_CHARS or not changes_state(endpoint):
            return act()
        slot = (caller, key)
        with self._lock:
            self._expire()
            entry = self._entries.get(slot)
            first = entry is None or entry.endpoint != endpoint
            if first:
                entry = _Entry(endpoint)
                self._entries[slot] = entry
                self._entries.move_to_end(slot)
        assert entry is not None
        if not first:
            if entry.done.wait(WAIT_SEC) and entry.answer is not None:
                with self._lock:
                    self.replayed += 1
                return entry.answer
            return act()  # the first call never answered (it crashed): acting is all that is left
        answer: Answer | None = None
        try:
            answer = act()
            return answer
        finally:
            with self._lock:
                if answer is not None and answer[0] < 500:
                    entry.answer = answer
                else:
                    self._entries.pop(slot, None)
            entry.done.set()

    def _expire(self) -> None:
        """Drop answers past their time (oldest first), and make room for one more entry."""
        now = time.monotonic()
        while self._entries:
            _slot, entry = next(iter(self._entries.items()))
            full = len(self._entries) >= self.max_entries
            if not full and (now - entry.at < self.ttl_sec or not entry.done.is_set()):
                return  # a call still running keeps its entry until it answers, unless room is needed
            self._entries.popitem(last=False)
