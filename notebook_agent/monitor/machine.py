"""Machine stats in the shape clearml-agent reports in `workers.status_report` (MB, MB/s, % free).

`MachineMonitor.sample()` never blocks and never raises: a failing source drops its fields.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from notebook_agent.monitor.nvml import GpuMonitor, GpuReading

log = logging.getLogger(__name__)

_MB = 1024 * 1024  # clearml-agent's BytesSizes.megabytes divides by 1024**2

# machine_stats list field -> GpuReading attribute, one list element per GPU
_GPU_FIELDS = {
    "gpu_usage": "utilization",
    "gpu_memory_used": "memory_used_mb",
    "gpu_memory_free": "memory_free_mb",
    "gpu_temperature": "temperature",
}


class MachineMonitor:
    """Samples CPU, memory, disk, network and (when `gpu` is given and NVML works) GPU stats.

    I/O rates are computed between consecutive `sample()` calls with `clock`, so the caller's sampling period
    sets the averaging window; the first sample reports 0 for them.
    """

    def __init__(
        self,
        gpu: GpuMonitor | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        home: Path | None = None,
        temp_dir: Path | None = None,
        psutil_module: Any = psutil,
    ) -> None:
        self._gpu = gpu
        self._clock = clock
        self._home = Path.home() if home is None else Path(home)
        self._temp_dir = Path(tempfile.gettempdir()) if temp_dir is None else Path(temp_dir)
        self._psutil = psutil_module
        self._lock = threading.Lock()  # the reporter thread and the notebook panel may sample concurrently
        self._previous: dict[str, tuple[float, float]] = {}  # counter name -> (clock, cumulative bytes)

    def sample(self) -> dict[str, Any]:
        """One reading: cpu_usage [avg %], memory_used/free (MB), disk_free_home/temp (% free),
        disk_read/write and network_rx/tx (MB/s since the previous sample), gpu_* lists when GPUs are seen."""
        with self._lock:
            now = self._clock()
            stats: dict[str, Any] = {}
            self._collect(stats, "cpu", self._cpu)
            self._collect(stats, "memory", self._memory)
            self._collect(stats, "disk_free_home", lambda: {"disk_free_home": self._percent_free(self._home)})
            self._collect(stats, "disk_free_temp", lambda: {"disk_free_temp": self._percent_free(self._temp_dir)})
            self._collect(stats, "disk io", lambda: self._disk_io(now))
            self._collect(stats, "network io", lambda: self._network_io(now))
            self._collect(stats, "gpu", self._gpu_stats)
            return stats

    def gpu_summary(self) -> list[GpuReading]:
        """Live readings of the monitored GPUs for the notebook's GPU panel; [] without GPUs."""
        if not self._gpu_ready():
            return []
        assert self._gpu is not None
        return self._gpu.read()

    def close(self) -> None:
        """Release NVML if this monitor's GpuMonitor opened it."""
        if self._gpu is not None:
            self._gpu.close()

    @staticmethod
    def _collect(stats: dict[str, Any], what: str, fn: Callable[[], dict[str, Any]]) -> None:
        try:
            stats.update(fn())
        except Exception as exc:  # containers and odd kernels lack some counters; report what we can
            log.debug("machine stat %s unavailable: %s", what, exc)

    def _cpu(self) -> dict[str, Any]:
        # interval=None returns the average over all cores since this thread's previous call without sleeping.
        return {"cpu_usage": [float(self._psutil.cpu_percent(interval=None))]}

    def _memory(self) -> dict[str, Any]:
        memory = self._psutil.virtual_memory()
        # As clearml-agent: "free" is what a new process could get (available), not the kernel's unused pages.
        return {"memory_used": memory.used / _MB, "memory_free": memory.available / _MB}

    def _percent_free(self, path: Path) -> float:
        # psutil's percent excludes root-reserved blocks, matching clearml-agent's `100 - disk_usage().percent`.
        return 100.0 - float(self._psutil.disk_usage(str(path)).percent)

    def _disk_io(self, now: float) -> dict[str, Any]:
        counters = self._psutil.disk_io_counters()
        if counters is None:  # no physical disks visible (some containers)
            self._forget("disk_read", "disk_write")
            return {}
        return {
            "disk_read": self._rate("disk_read", now, counters.read_bytes),
            "disk_write": self._rate("disk_write", now, counters.write_bytes),
        }

    def _network_io(self, now: float) -> dict[str, Any]:
        counters = self._psutil.net_io_counters()
        if counters is None:
            self._forget("network_rx", "network_tx")
            return {}
        return {
            "network_rx": self._rate("network_rx", now, counters.bytes_recv),
            "network_tx": self._rate("network_tx", now, counters.bytes_sent),
        }

    def _rate(self, key: str, now: float, total_bytes: float) -> float:
        """MB/s since the previous value of this counter; 0 the first time, after a reset, or with no elapsed time."""
        previous = self._previous.get(key)
        self._previous[key] = (now, float(total_bytes))
        if previous is None:
            return 0.0
        elapsed = now - previous[0]
        delta = float(total_bytes) - previous[1]
        if elapsed <= 0 or delta < 0:  # counters wrap or reset (e.g. an interface going away)
            return 0.0
        return delta / _MB / elapsed

    def _forget(self, *keys: str) -> None:
        for key in keys:
            self._previous.pop(key, None)

    def _gpu_ready(self) -> bool:
        # Open lazily so constructing a monitor never touches the driver; open() only tries once.
        return self._gpu is not None and (self._gpu.available or self._gpu.open())

    def _gpu_stats(self) -> dict[str, Any]:
        if not self._gpu_ready():
            return {}
        assert self._gpu is not None
        readings = self._gpu.read()
        stats: dict[str, Any] = {}
        for field, attribute in _GPU_FIELDS.items():
            values = [getattr(reading, attribute) for reading in readings]
            if not values or all(value is None for value in values):
                continue
            # The lists are positional (one element per GPU), so a GPU that could not answer keeps its slot with 0.
            stats[field] = [0.0 if value is None else float(value) for value in values]
        return stats
