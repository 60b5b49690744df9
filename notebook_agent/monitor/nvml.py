"""The NVML seam: GPU identity and live readings through pynvml (nvidia-ml-py) or a test fake with its API.

Without a driver or a GPU the monitor reports itself unavailable and reads nothing; it never raises.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_MB = 1024 * 1024  # NVML reports bytes; the agent (gpustat) and nvidia-smi report MiB as "MB"
_T = TypeVar("_T")


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment. A field is None when the device does not support that query (MIG, old boards)."""

    index: int
    name: str
    uuid: str
    utilization: float | None  # % of time a kernel ran in the last sample period
    memory_used_mb: float | None
    memory_free_mb: float | None
    memory_total_mb: float | None
    temperature: float | None  # degrees C


def _text(value: Any) -> str:
    # nvidia-ml-py < 11.515 returns bytes for names and UUIDs; newer versions return str.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class GpuMonitor:
    """Reads NVIDIA GPUs through NVML. `devices` limits it to those NVML indices (the caller maps
    CUDA_VISIBLE_DEVICES to indices); None means every GPU. All NVML calls happen under one lock."""

    def __init__(self, nvml: Any | None = None, devices: Sequence[int] | None = None) -> None:
        self._nvml = nvml  # None: import pynvml on open(), so importing this module never touches the driver
        self._indices = None if devices is None else [int(i) for i in devices]
        self._lock = threading.RLock()
        self._initialized = False
        self._tried = False
        self.unavailable_reason = "not opened"

    @property
    def available(self) -> bool:
        return self._initialized

    def open(self) -> bool:
        """Initialise NVML once. Returns False (with `unavailable_reason` set) when there is no usable driver."""
        with self._lock:
            if self._initialized or self._tried:
                # A failed init is not retried: a missing driver or library will not appear mid-session.
                return self._initialized
            self._tried = True
            try:
                if self._nvml is None:
                    self._nvml = importlib.import_module("pynvml")
                self._nvml.nvmlInit()
            except Exception as exc:  # ImportError, OSError, any NVMLError: all mean "no GPU stats here"
                self.unavailable_reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.debug("NVML unavailable: %s", self.unavailable_reason)
                return False
            self._initialized = True
            self.unavailable_reason = ""
            return True

    def close(self) -> None:
        """Shut NVML down if this monitor initialised it (NVML reference-counts init/shutdown pairs)."""
        with self._lock:
            if not self._initialized:
                return
            self._initialized = False
            self._tried = False  # a later open() may initialise again
            self.unavailable_reason = "closed"
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:
                log.debug("nvmlShutdown failed: %s", exc)

    def device_count(self) -> int:
        """Number of GPUs NVML sees (not filtered by `devices`); 0 when unavailable."""
        with self._lock:
            if not self._initialized:
                return 0
            try:
                return int(self._nvml.nvmlDeviceGetCount())
            except Exception as exc:
                log.debug("nvmlDeviceGetCount failed: %s", exc)
                return 0

    def devices(self) -> list[GpuReading]:
        """Identity of the selected GPUs (name, uuid, total memory) without the live readings."""
        return self._collect(live=False)

    def read(self) -> list[GpuReading]:
        """Live readings of the selected GPUs; an unsupported query gives None for that field only."""
        return self._collect(live=True)

    def _collect(self, live: bool) -> list[GpuReading]:
        with self._lock:
            count = self.device_count()
            if count == 0:
                return []
            indices = range(count) if self._indices is None else self._indices
            readings = []
            for index in indices:
                if not 0 <= index < count:
                    log.debug("GPU index %d not present (NVML sees %d)", index, count)
                    continue
                reading = self._read_one(index, live)
                if reading is not None:
                    readings.append(reading)
            return readings

    def _read_one(self, index: int, live: bool) -> GpuReading | None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:  # a lost or inaccessible GPU: leave it out of this reading
            log.debug("nvmlDeviceGetHandleByIndex(%d) failed: %s", index, exc)
            return None
        name = self._query(index, "name", lambda: _text(nvml.nvmlDeviceGetName(handle)))
        uuid = self._query(index, "uuid", lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
        memory = self._query(index, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        utilization = temperature = None
        if live:
            utilization = self._query(
                index, "utilization", lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            )
            temperature = self._query(
                index, "temperature", lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            )
        return GpuReading(
            index=index,
            name=name or "",
            uuid=uuid or "",
            utilization=utilization,
            memory_used_mb=memory.used / _MB if memory is not None and live else None,
            memory_free_mb=memory.free / _MB if memory is not None and live else None,
            memory_total_mb=memory.total / _MB if memory is not None else None,
            temperature=temperature,
        )

    @staticmethod
    def _query(index: int, what: str, fn: Callable[[], _T]) -> _T | None:
        # NVMLError_NotSupported is routine (temperature on some boards, utilization on MIG devices); anything
        # else is caught too because a stats reader must never take the agent down.
        try:
            return fn()
        except Exception as exc:
            log.debug("GPU %d: %s unavailable: %s", index, what, exc)
            return None
