"""Shared bench machinery: an embedded server that stamps every task status change, tasks without repository,
waits with deadlines, and the A B / B A order of the agents."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from notebook_agent import api
from notebook_agent.server import EmbeddedServer

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
