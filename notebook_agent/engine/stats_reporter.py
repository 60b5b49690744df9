"""Periodic `workers.status_report` with machine stats, plus an immediate report on every task change.

A failed report never touches the running task: an unreachable server is logged and tried again next period, and a
server that forgot the worker (400/1001) gets it registered again (through `on_error`) and the report repeated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from notebook_agent import api
from notebook_agent.api import APIError
from notebook_agent.engine.events import EventBus, MachineStatsSampled
from notebook_agent.monitor import GpuMonitor, MachineMonitor

if TYPE_CHECKING:
    from notebook_agent.engine.worker import Worker

logger = logging.getLogger(__name__)


def gpu_indices(gpus: str | None) -> list[int] | None:
    """`0,1` or `0-3` as indices; None (all GPUs) when no selection is given."""
    if not gpus or gpus.strip().lower() == "all":
        return None
    indices: list[int] = []
    for part in gpus.split(","):
        first, _, last = part.strip().partition("-")
        if first.isdigit():
            indices += range(int(first), int(last) + 1) if last.isdigit() else [int(first)]
    return indices or None


class StatsReporter:
    """Owns the machine monitor and the reporting thread of one worker."""

    def __init__(
        self,
        worker: Worker,
        interval_sec: float,
        bus: EventBus,
        monitor: MachineMonitor | None = None,
        *,
        on_error: Callable[[APIError], bool] | None = None,
    ):
        self.worker = worker
        self._on_error = on_error  # True: the cause was fixed (the worker registered again), report again
        self.interval_sec = max(1.0, interval_sec)
        self.bus = bus
        if monitor is None:
            gpu = None if worker.options.cpu_only else GpuMonitor(devices=gpu_indices(worker.options.gpus))
            monitor = MachineMonitor(gpu=gpu)
        self.monitor = monitor
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="notebook-agent-stats", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def report_now(self) -> None:
        """Report the current task (or its absence) right away, without waiting for the next period."""
        self._send(with_stats=False)

    def _loop(self) -> None:
        # psutil keeps the CPU baseline per thread: prime it here, so the first report has a real figure.
        self.monitor.sample()
        if self._closed.wait(1.0):
            return
        while not self._closed.is_set():
            self._send(with_stats=True)
            self._closed.wait(self.interval_sec)

    def _send(self, with_stats: bool) -> None:
        worker = self.worker
        stats = None
        if with_stats:
            stats = self.monitor.sample()
            self.bus.publish(MachineStatsSampled(stats))
        current = worker.current
        with self._lock:
            for _ in range(2):
                try:
                    api.workers.status_report(
                        worker.session,
                        worker.worker_id,
                        int(time.time()) * 1000,
                        task=current[0] if current else None,
                        queue=current[1].id if current else None,
                        queues=[q.id for q in worker.queues],
                        machine_stats=stats,
                    )
                    return
                except APIError as err:
                    logger.info("status report failed: %s", err)
                    if self._on_error is None or not self._on_error(err):
                        return
