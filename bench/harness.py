"""Shared bench machinery: an embedded server that stamps every task status change, tasks without repository,
waits with deadlines, and the A B / B A order of the agents."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from notebook_agent import api
from notebook_agent.server import EmbeddedServer, registry

logger = logging.getLogger(__name__)

T = TypeVar("T")
TERMINAL = ("completed", "failed", "stopped", "closed")
BENCH_PROJECT = "bench"


class BenchTimeout(RuntimeError):
    """A condition was not met before its deadline."""


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `predicate` until it returns something truthy; BenchTimeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchTimeout(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def alternate(items: Sequence[T], round_index: int) -> list[T]:
    """A B in even rounds, B A in odd ones, so that drift in the machine's load hits both sides alike."""
    return list(items) if round_index % 2 == 0 else list(reversed(items))


@dataclass(frozen=True)
class StatusChange:
    at: float  # time.time() when the server stored it
    status: str
    reason: str
    message: str


class StatusRecorder:
    """Every status change of every task, stamped when the embedded server stores it.

    Polling the server would miss states our agent holds for milliseconds (on a venv-cache hit it goes from
    "pulled" to "worker starting task execution" in a few of them), so the recorder wraps the store's `put` of
    the server this process runs. Waiters block on a condition instead of polling the API.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._changes: dict[str, list[StatusChange]] = {}
        self._cond = threading.Condition()

    def attach(self, store: Any) -> None:
        put = store.put

        def recording_put(kind: str, doc: dict) -> None:
            put(kind, doc)
            if kind == "task":
                self._note(doc)

        store.put = recording_put

    def _note(self, doc: Mapping[str, Any]) -> None:
        change = StatusChange(
            self._clock(),
            str(doc.get("status") or ""),
            str(doc.get("status_reason") or ""),
            str(doc.get("status_message") or ""),
        )
        with self._cond:
            changes = self._changes.setdefault(str(doc["id"]), [])
            last = changes[-1] if changes else None
            if last is None or (last.status, last.reason, last.message) != (
                change.status,
                change.reason,
                change.message,
            ):
                changes.append(change)
                self._cond.notify_all()

    def changes(self, task_id: str) -> list[StatusChange]:
        with self._cond:
            return list(self._changes.get(task_id, []))

    def first(self, task_id: str, match: Callable[[StatusChange], bool]) -> StatusChange | None:
        return next((c for c in self.changes(task_id) if match(c)), None)

    def wait_terminal(self, task_id: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> str:
        """The task's terminal status; BenchTimeout after `timeout` s, or as soon as `alive()` says the agent died."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                changes = self._changes.get(task_id, [])
                if changes and changes[-1].status in TERMINAL:
                    return changes[-1].status
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchTimeout(f"task {task_id}: no terminal status within {timeout:.0f} s")
                if not alive():
                    raise BenchTimeout(f"task {task_id}: the agent exited before the task ended")
                self._cond.wait(timeout=min(left, 0.5))


@dataclass(frozen=True)
class StoredLogBatch:
    """The log events of one task that one `add_events` call of the server's store took, in arrival order."""

    at: float  # time.time() when the store had taken them (inside the call's transaction, just before its commit)
    events: tuple[tuple[int, str], ...]  # (timestamp ms, msg) per event


class EventRecorder:
    """Every log event the embedded server stores, per task, in arrival order, stamped when the store took it.

    Like StatusRecorder it wraps a method of the store of the server this process runs (`add_events`), so the
    bench sees when a line was stored without polling `events.get_task_log` (which would compete with the agent
    for the store's lock). The wrapper only copies (timestamp, msg) pairs: the parsing happens after the run.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._batches: dict[str, list[StoredLogBatch]] = {}
        self._cond = threading.Condition()

    def attach(self, store: Any) -> None:
        add_events = store.add_events

        def recording_add_events(events: list[dict]) -> None:
            add_events(events)
            self._note(events)

        store.add_events = recording_add_events

    def _note(self, events: Sequence[Mapping[str, Any]]) -> None:
        at = self._clock()
        by_task: dict[str, list[tuple[int, str]]] = {}
        for event in events:
            if event.get("type") == "log":
                by_task.setdefault(str(event.get("task")), []).append(
                    (int(event.get("timestamp") or 0), str(event.get("msg") or ""))
                )
        if not by_task:
            return
        with self._cond:
            for task_id, stored in by_task.items():
                self._batches.setdefault(task_id, []).append(StoredLogBatch(at, tuple(stored)))
            self._cond.notify_all()

    def batches(self, task_id: str) -> list[StoredLogBatch]:
        with self._cond:
            return list(self._batches.get(task_id, []))

    def wait_for(self, task_id: str, found: Callable[[list[StoredLogBatch]], bool], timeout: float) -> bool:
        """Block until `found(batches of task_id)` is true (True) or `timeout` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not found(self._batches.get(task_id, [])):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 0.5))
            return True

    def forget(self, task_id: str) -> None:
        """Drop what was recorded for a task (a flood of lines need not stay in memory once measured)."""
        with self._cond:
            self._batches.pop(task_id, None)


class BenchServer:
    """The embedded server in `data_dir`, a client session on it, and the status recorder."""

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedServer(data_dir)
        self.recorder = StatusRecorder()
        self._session: api.Session | None = None
        self._project: str | None = None

    def start(self) -> BenchServer:
        self.server.start()
        assert self.server.backend is not None and self.server.credentials is not None
        self.recorder.attach(self.server.backend.store)
        creds = self.server.credentials
        self._session = api.Session(self.server.url, creds.access_key, creds.secret_key)
        return self

    def stop(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self.server.stop()

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def session(self) -> api.Session:
        assert self._session is not None, "start() the server first"
        return self._session

    def client_env(self) -> dict[str, str]:
        return self.server.client_env()

    def api_config_text(self) -> str:
        """The `api { ... }` section the server wrote for clients (each agent's clearml.conf starts with it)."""
        return self.server.config_file.read_text(encoding="utf-8")

    # tasks and queues
    def create_queue(self, name: str) -> str:
        return api.queues.create(self.session, name)

    def create_script_task(self, name: str, source: str, requirements: str, entry_point: str = "run.py") -> str:
        """A task without repository whose script travels in `script.diff`, as `notebook-agent submit --script`
        and the SDK store it. `binary` is `python3.X` as the SDK's Task.init writes it: clearml-agent reads a bare
        `python3` as a Python older than 3.9 and then adds a `pip install Cython` step to every build."""
        if self._project is None:
            self._project = api.projects.get_or_create(self.session, BENCH_PROJECT)
        script = {
            "binary": f"python{sys.version_info.major}.{sys.version_info.minor}",
            "repository": "",
            "entry_point": entry_point,
            "working_dir": ".",
            "diff": source,
            "requirements": {"pip": requirements} if requirements else {},
        }
        return api.tasks.create(self.session, name, "training", project=self._project, script=script)

    def enqueue(self, task_id: str, queue_id: str) -> None:
        api.tasks.enqueue(self.session, task_id, queue=queue_id)

    def worker_registered(self, worker_id: str) -> bool:
        return any(w.get("id") == worker_id for w in api.workers.get_all(self.session))

    def task_log(self, task_id: str, page: int = 5000) -> list[str]:
        """Every console line of the task, oldest first. Paged by timestamp as the web UI does: the server ends a
        page with every event of its last timestamp, and the next page starts strictly after it."""
        lines: list[str] = []
        since: float | None = None
        while True:
            reply = api.events.get_task_log(
                self.session, task_id, batch_size=page, navigate_earlier=False, order="asc", from_timestamp=since
            )
            events = reply.get("events") or []
            if not events:
                return lines
            for event in events:
                lines.extend(str(event.get("msg") or "").splitlines())
            since = float(events[-1]["timestamp"])


@dataclass(frozen=True)
class ApiRequest:
    """One API call the embedded server dispatched to a handler."""

    at: float  # time.time() when the handler was entered (a long poll: when it began to wait)
    endpoint: str
    worker: str  # the X-ClearML-Worker header ("" without one)


class RequestCounter:
    """Every request the embedded server dispatches to a handler, stamped when the handler is entered.

    It wraps the registry's dispatch (`registry.resolve`, which the HTTP face looks up per request): the endpoint
    it hands back records the call before running it. Only calls to `backend` (the bench's own server) count.
    Requests refused before dispatch (an unknown endpoint, bad credentials) are not seen. `resolve` is one for the
    whole process: attach one counter at a time and detach it when done (the context manager does).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._requests: list[ApiRequest] = []
        self._lock = threading.Lock()
        self._original: Callable[[str, str | None], registry.Endpoint] | None = None
        self._wrapper: Callable[[str, str | None], registry.Endpoint] | None = None

    def attach(self, backend: Any) -> RequestCounter:
        if self._original is not None:
            raise RuntimeError("this RequestCounter is attached already")
        original = registry.resolve

        def counting_resolve(name: str, version: str | None) -> registry.Endpoint:
            found = original(name, version)
            handler = found.handler

            def counted(call: registry.Call) -> dict[str, Any]:
                if call.backend is backend:
                    self._note(ApiRequest(self._clock(), found.name, call.worker or ""))
                return handler(call)

            return replace(found, handler=counted)

        registry.resolve = counting_resolve
        self._original, self._wrapper = original, counting_resolve
        return self

    def detach(self) -> None:
        if self._original is None:
            return
        if registry.resolve is self._wrapper:
            registry.resolve = self._original
        else:  # someone wrapped it after us: unwinding would drop their wrapper
            logger.warning("registry.resolve was wrapped again after this counter; leaving it as it is")
        self._original = self._wrapper = None

    def __enter__(self) -> RequestCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _note(self, request: ApiRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self, since: float = 0.0, until: float = float("inf")) -> list[ApiRequest]:
        """The requests whose handler was entered in [since, until) (time.time() values), oldest first."""
        with self._lock:
            return [r for r in self._requests if since <= r.at < until]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 < q <= 100), nearest rank: always a value that was measured (p99 of 200 samples is
    the second largest, of 50 the largest)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return ordered[max(0, int(-(-len(ordered) * q // 100)) - 1)]


def delta(start: float | None, end: float | None) -> float | None:
    """`end - start` in seconds, rounded to the millisecond; None when either moment is unknown."""
    if start is None or end is None:
        return None
    return round(end - start, 3)
