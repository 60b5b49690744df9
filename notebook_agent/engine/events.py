"""Typed events the engine publishes, and the bus the notebook panel and the CLI subscribe to.

Events are past-tense facts. Subscribers are called synchronously in the publishing thread, so they must be
quick (append to a bounded buffer, set a widget value); an exception in one is logged and never reaches the
engine or the other subscribers.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

logger = logging.getLogger(__name__)


class WorkerState(str, enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUILDING = "building"
    RUNNING = "running"
    PAUSED = "paused"
    DRAINING = "draining"
    OFFLINE = "offline"


class TaskPhase(str, enum.Enum):
    PULLED = "pulled"
    BUILDING = "building"
    RUNNING = "running"
    ABORTING = "aborting"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def final(self) -> bool:
        return self in (TaskPhase.COMPLETED, TaskPhase.FAILED, TaskPhase.STOPPED)


@dataclass(frozen=True)
class Event:
    """Base of every engine event; `time` is the epoch second it happened."""

    time: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class WorkerStateChanged(Event):
    worker_id: str
    state: WorkerState
    previous: WorkerState | None = None
    detail: str = ""


@dataclass(frozen=True)
class WorkerListening(Event):
    """The worker registered and listens on `queues` (names, in priority order unless `fairness`), at `server`
    (its URL masked); `gpus` maps a queue to its GPU need with dynamic GPUs ("2", "1-4")."""

    worker_id: str
    queues: tuple[str, ...]
    server: str
    fairness: bool = False
    gpus: tuple[tuple[str, str], ...] = ()
    services_limit: int | None = None  # services mode: at most this many tasks at once (0: no limit)


@dataclass(frozen=True)
class TaskPulled(Event):
    task_id: str
    queue_id: str | None
    queue_name: str | None
    task_name: str = ""
    gpus: str = ""  # the GPUs this task was given, when they differ per task (dynamic GPUs)


@dataclass(frozen=True)
class TaskPhaseChanged(Event):
    task_id: str
    phase: TaskPhase
    reason: str = ""
    exit_code: int | None = None
    task_name: str = ""  # known from the building phase on (the queue entry carries only the id)


@dataclass(frozen=True)
class TaskLogLines(Event):
    """Lines of a task's log, in order: `stream` is "output" (the task's stdout and stderr, in the order written),
    or "agent" (the agent's own lines)."""

    task_id: str
    stream: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class EnvBuildStep(Event):
    """A step of building a task's environment: it began (`seconds` None), has news (`detail`, e.g. "12 packages
    installed" or "cache hit") or ended after `seconds`. `fraction` is the build's progress in [0, 1] when known."""

    task_id: str
    step: str
    fraction: float | None = None
    detail: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class MachineStatsSampled(Event):
    """One sample of machine stats in the shape `workers.status_report` sends (see monitor)."""

    stats: dict[str, Any]


E = TypeVar("E", bound=Event)


class Subscription:
    """Handle returned by EventBus.subscribe; `close()` (or the context manager) unsubscribes."""

    def __init__(self, bus: EventBus, callback: Callable[[Any], None], types: tuple[type[Event], ...]) -> None:
        self._bus = bus
        self.callback = callback
        self.types = types

    def wants(self, event: Event) -> bool:
        return not self.types or isinstance(event, self.types)

    def close(self) -> None:
        self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Thread-safe publish/subscribe of engine events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: tuple[Subscription, ...] = ()

    def subscribe(self, callback: Callable[[Any], None], *types: type[Event]) -> Subscription:
        """Call `callback(event)` for every published event of one of `types` (all events when none)."""
        subscription = Subscription(self, callback, types)
        with self._lock:
            self._subscriptions = (*self._subscriptions, subscription)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def publish(self, event: Event) -> None:
        for subscription in self._subscriptions:  # a snapshot: subscribing meanwhile is safe
            if subscription.wants(event):
                try:
                    subscription.callback(event)
                except Exception:
                    logger.exception("event subscriber %r failed on %s", subscription.callback, type(event).__name__)
