"""What the notebook face shows, kept from engine events: worker state, tasks with bounded log tails and build
progress, and a short machine/GPU history. UI-free and thread-safe; widgets, magics and the HTML card render
`snapshot()`s of it."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from notebook_agent.engine.events import (
    EnvBuildStep,
    Event,
    EventBus,
    MachineStatsSampled,
    Subscription,
    TaskLogLines,
    TaskPhase,
    TaskPhaseChanged,
    TaskPulled,
    WorkerState,
    WorkerStateChanged,
)

LOG_TAIL_LINES = 500  # per task; the full log stays on the server
RECENT_TASKS = 20  # finished tasks kept for the Tasks list
HISTORY_POINTS = 60  # samples per machine/GPU series (a minute at the panel's sampling rate)


@dataclass(frozen=True)
class TaskView:
    """One task as the panel shows it."""

    task_id: str
    name: str = ""
    queue: str = ""
    phase: TaskPhase = TaskPhase.PULLED
    reason: str = ""
    exit_code: int | None = None
    pulled_at: float = 0.0
    ended_at: float | None = None
    step: str = ""  # the environment build's current step
    step_detail: str = ""
    fraction: float | None = None
    log_tail: tuple[str, ...] = ()
    log_lines: int = 0  # lines seen in all (the tail keeps the last LOG_TAIL_LINES)
    gpus: str = ""  # its own GPUs (dynamic GPUs); "" when it has the worker's

    @property
    def running(self) -> bool:
        return not self.phase.final

    def duration(self, now: float | None = None) -> float:
        end = self.ended_at if self.ended_at is not None else (time.time() if now is None else now)
        return max(0.0, end - self.pulled_at)


@dataclass(frozen=True)
class GpuView:
    index: int
    utilization: tuple[float, ...] = ()  # percent, oldest first
    memory_used_mb: tuple[float, ...] = ()
    memory_total_mb: float = 0.0
    temperature: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """An immutable copy of the state at one moment; `version` grows with every change."""

    version: int
    worker_id: str
    state: WorkerState
    detail: str
    started_at: float | None
    tasks: tuple[TaskView, ...]  # running first, then most recent first
    cpu: tuple[float, ...]
    memory_used_mb: tuple[float, ...]
    memory_total_mb: float
    gpus: tuple[GpuView, ...]
    error: str = ""

    @property
    def current(self) -> TaskView | None:
        return next((t for t in self.tasks if t.running), None)

    def task(self, task_id: str) -> TaskView | None:
        return next((t for t in self.tasks if t.task_id == task_id or t.task_id.startswith(task_id)), None)


@dataclass
class _Task:
    view: TaskView
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))


class PanelState:
    """Subscribes to a worker's bus; every update bumps `version` and sets `changed` so a renderer can wake."""

    def __init__(self, bus: EventBus | None = None) -> None:
        self._lock = threading.Lock()
        self.changed = threading.Event()
        self._version = 0
        self._worker_id = ""
        self._state = WorkerState.OFFLINE
        self._detail = ""
        self._started_at: float | None = None
        self._error = ""
        self._tasks: dict[str, _Task] = {}
        self._cpu: collections.deque[float] = collections.deque(maxlen=HISTORY_POINTS)
        self._memory: collections.deque[float] = collections.deque(maxlen=HISTORY_POINTS)
        self._memory_total = 0.0
        self._gpus: dict[int, dict[str, Any]] = {}
        self._subscription: Subscription | None = bus.subscribe(self.apply) if bus is not None else None

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    # events (any thread) ------------------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, WorkerStateChanged):
                self._worker_id = event.worker_id or self._worker_id
                if self._state == WorkerState.OFFLINE and event.state != WorkerState.OFFLINE:
                    self._started_at = event.time
                self._state, self._detail = event.state, event.detail
            elif isinstance(event, TaskPulled):
                self._tasks[event.task_id] = _Task(
                    TaskView(
                        event.task_id, event.task_name, event.queue_name or "", pulled_at=event.time, gpus=event.gpus
                    )
                )
                self._trim()
            elif isinstance(event, TaskPhaseChanged):
                task = self._task(event.task_id, event.time)
                ended = event.time if event.phase.final else None
                task.view = replace(
                    task.view,
                    phase=event.phase,
                    reason=event.reason,
                    exit_code=event.exit_code,
                    ended_at=ended,
                    name=event.task_name or task.view.name,
                )
                if event.phase.final:
                    self._trim()
            elif isinstance(event, EnvBuildStep):
                task = self._task(event.task_id, event.time)
                if event.seconds is None:
                    fraction = event.fraction if event.fraction is not None else task.view.fraction
                    detail = event.detail if event.step == task.view.step or event.detail else ""
                    task.view = replace(task.view, step=event.step, step_detail=detail, fraction=fraction)
            elif isinstance(event, TaskLogLines):
                task = self._task(event.task_id, event.time)
                task.tail.extend(event.lines)
                task.view = replace(task.view, log_lines=task.view.log_lines + len(event.lines))
            elif isinstance(event, MachineStatsSampled):
                self._add_stats(event.stats)
            else:
                return
            self._version += 1
        self.changed.set()

    def record_error(self, message: str) -> None:
        with self._lock:
            self._error = message
            self._version += 1
        self.changed.set()

    def add_sample(self, stats: Mapping[str, Any]) -> None:
        """A machine sample taken by the panel itself (more often than the server's 30 s reports)."""
        with self._lock:
            self._add_stats(stats)
            self._version += 1
        self.changed.set()

    # reading (any thread) -----------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    def snapshot(self) -> Snapshot:
        with self._lock:
            tasks = [replace(t.view, log_tail=tuple(t.tail)) for t in self._tasks.values()]
            tasks.sort(key=lambda v: (not v.running, -v.pulled_at))
            gpus = tuple(
                GpuView(
                    index,
                    tuple(g["utilization"]),
                    tuple(g["memory_used"]),
                    g["memory_total"],
                    g["temperature"],
                )
                for index, g in sorted(self._gpus.items())
            )
            return Snapshot(
                self._version,
                self._worker_id,
                self._state,
                self._detail,
                self._started_at,
                tuple(tasks),
                tuple(self._cpu),
                tuple(self._memory),
                self._memory_total,
                gpus,
                self._error,
            )

    # inside the lock ----------------------------------------------------------------------------------------
    def _task(self, task_id: str, when: float) -> _Task:
        task = self._tasks.get(task_id)
        if task is None:  # events of a task pulled before this state subscribed
            task = self._tasks[task_id] = _Task(TaskView(task_id, pulled_at=when))
            self._trim()
        return task

    def _trim(self) -> None:
        finished = [t for t in self._tasks.values() if not t.view.running]
        finished.sort(key=lambda t: t.view.pulled_at)
        for task in finished[: max(0, len(finished) - RECENT_TASKS)]:
            del self._tasks[task.view.task_id]

    def _add_stats(self, stats: Mapping[str, Any]) -> None:
        cpu = stats.get("cpu_usage")
        if isinstance(cpu, (list, tuple)) and cpu:
            self._cpu.append(sum(float(v) for v in cpu) / len(cpu))
        used, free = stats.get("memory_used"), stats.get("memory_free")
        if isinstance(used, (int, float)):
            self._memory.append(float(used))
            if isinstance(free, (int, float)):
                self._memory_total = float(used) + float(free)
        usage = stats.get("gpu_usage") or []
        for index, value in enumerate(usage):
            gpu = self._gpus.setdefault(
                index,
                {
                    "utilization": collections.deque(maxlen=HISTORY_POINTS),
                    "memory_used": collections.deque(maxlen=HISTORY_POINTS),
                    "memory_total": 0.0,
                    "temperature": None,
                },
            )
            gpu["utilization"].append(float(value))
            mem_used = _at(stats.get("gpu_memory_used"), index)
            mem_free = _at(stats.get("gpu_memory_free"), index)
            if mem_used is not None:
                gpu["memory_used"].append(mem_used)
                if mem_free is not None:
                    gpu["memory_total"] = mem_used + mem_free
            gpu["temperature"] = _at(stats.get("gpu_temperature"), index)


def _at(values: Any, index: int) -> float | None:
    if isinstance(values, (list, tuple)) and index < len(values) and values[index] is not None:
        return float(values[index])
    return None
