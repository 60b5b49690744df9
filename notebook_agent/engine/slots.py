"""Task slots: several tasks at once (`--services-mode [N]`, `--dynamic-gpus`), each run in its own thread.

The worker loop asks `has_room()` before it pulls and `launch`es what it pulled; a slot's thread runs the task
(the worker's `_run_task`, so each task is supervised exactly like the one-task path) and frees the slot when it
ends, whatever happened. `wait_change` lets the loop sleep until a slot frees (or a timeout), and `join` is how
the loop waits for every running task before the worker leaves (drain, or after aborting them all).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from notebook_agent.engine.gpu_allocator import AllocatorSnapshot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningSlot:
    """One busy slot: the task, the queue it came from, and the GPUs it runs on (dynamic mode; else None)."""

    task_id: str
    queue_id: str
    visible_devices: str | None = None


@dataclass(frozen=True)
class SlotsSnapshot:
    """What runs side by side now (first: the task status reports name), for the worker card."""

    running: tuple[RunningSlot, ...]
    capacity: int | None  # None: no limit (services mode without N; dynamic mode, where the GPUs are the limit)
    gpus: AllocatorSnapshot | None = None  # dynamic mode: which GPU runs what, and who waits


class TaskSlots:
    """At most `capacity` tasks at once (None: no limit). Thread-safe: the loop launches, slot threads finish."""

    def __init__(self, capacity: int | None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"task slots: capacity {capacity} must be at least 1 (or None for no limit)")
        self.capacity = capacity
        self._running: dict[str, RunningSlot] = {}  # insertion order: the first one is what status reports show
        self._threads: dict[str, threading.Thread] = {}
        self._changed = threading.Condition()

    def has_room(self) -> bool:
        with self._changed:
            return self.capacity is None or len(self._running) < self.capacity

    @property
    def running(self) -> list[RunningSlot]:
        with self._changed:
            return list(self._running.values())

    def launch(
        self,
        slot: RunningSlot,
        work: Callable[[], None],
        on_end: Callable[[], None] | None = None,
        *,
        on_freed: Callable[[], None] | None = None,
    ) -> None:
        """Run `work` in a new thread in `slot`; `on_end` (e.g. releasing GPUs) runs after it, on every path, and
        `on_freed` (e.g. a status report without the task) once the slot is free."""
        with self._changed:
            if slot.task_id in self._running:
                raise ValueError(f"task {slot.task_id} is already running in a slot")
            if self.capacity is not None and len(self._running) >= self.capacity:
                raise RuntimeError(f"no free task slot for {slot.task_id} ({self.capacity} in use)")
            self._running[slot.task_id] = slot
            thread = threading.Thread(
                target=self._run,
                args=(slot, work, on_end, on_freed),
                name=f"notebook-agent-task-{slot.task_id}",
                daemon=True,
            )
            self._threads[slot.task_id] = thread
        thread.start()

    def wait_change(self, timeout: float) -> None:
        """Sleep until a slot frees up or `timeout` passes (the loop re-checks everything after it)."""
        with self._changed:
            self._changed.wait(timeout)

    def wake(self) -> None:
        """End a `wait_change` early (stop, pause, resume)."""
        with self._changed:
            self._changed.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no task runs; False if some still do after `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._running, timeout)

    def _run(
        self,
        slot: RunningSlot,
        work: Callable[[], None],
        on_end: Callable[[], None] | None,
        on_freed: Callable[[], None] | None,
    ) -> None:
        try:
            work()
        except BaseException:  # a slot thread must never die silently with its slot still taken
            logger.exception("task %s: its slot thread failed", slot.task_id)
        finally:
            try:
                if on_end is not None:
                    on_end()
            finally:
                with self._changed:
                    self._running.pop(slot.task_id, None)
                    self._threads.pop(slot.task_id, None)
                    self._changed.notify_all()
        if on_freed is not None:
            try:
                on_freed()
            except Exception:  # a failed status report must not hide the task's end
                logger.exception("task %s: after its slot was freed", slot.task_id)
