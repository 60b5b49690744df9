"""A fake `pynvml` module for tests without a GPU.

`FakeNvml` mirrors the subset of nvidia-ml-py's API that `notebook_agent.monitor.nvml` calls (nvmlInit,
nvmlShutdown, nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex, nvmlDeviceGetName, nvmlDeviceGetUUID,
nvmlDeviceGetUtilizationRates, nvmlDeviceGetMemoryInfo, nvmlDeviceGetTemperature, NVML_TEMPERATURE_GPU and
the NVMLError hierarchy), with the same return shapes (bytes for memory, objects with .gpu/.used/.free/.total),
so the monitor runs the same code on the fake as on the real module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

MB = 1024 * 1024
NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    """Base class, like pynvml.NVMLError; str() gives NVML's message for the error."""

    message = "Unknown Error"

    def __str__(self) -> str:
        return self.message


# The subclasses keep pynvml's exact names so code and tests read the same against either module.
class NVMLError_NotSupported(NVMLError):
    message = "Not Supported"


class NVMLError_LibraryNotFound(NVMLError):
    message = "NVML Shared Library Not Found"


class NVMLError_DriverNotLoaded(NVMLError):
    message = "Driver Not Loaded"


class NVMLError_Uninitialized(NVMLError):
    message = "Uninitialized"


class NVMLError_InvalidArgument(NVMLError):
    message = "Invalid Argument"


@dataclass
class FakeGpu:
    """One fake board; readings are mutable so a test can change them between samples. A call name in
    `fail` (e.g. "nvmlDeviceGetTemperature") raises NVMLError_NotSupported for this GPU."""

    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    utilization: float = 0.0
    memory_used_mb: float = 0.0
    memory_total_mb: float = 40960.0
    temperature: float = 30.0
    fail: set[str] = field(default_factory=set)


class FakeNvml:
    """Pass an instance as `GpuMonitor(nvml=...)`. `init_error` (an NVMLError subclass) makes nvmlInit fail;
    `init_calls`/`shutdown_calls` count calls; `bytes_strings` returns names/UUIDs as bytes like old pynvml."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU

    def __init__(
        self,
        gpus: Iterable[FakeGpu] = (),
        *,
        init_error: type[NVMLError] | None = None,
        bytes_strings: bool = False,
    ) -> None:
        self.gpus = list(gpus)
        self.init_error = init_error
        self.bytes_strings = bytes_strings
        self.init_calls = 0
        self.shutdown_calls = 0
        self._init_depth = 0  # NVML reference-counts init/shutdown

    # -- lifecycle
    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error()
        self._init_depth += 1

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self._require_init()
        self._init_depth -= 1

    # -- devices
    def nvmlDeviceGetCount(self) -> int:
        self._require_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._require_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        return index  # real handles are opaque pointers; the index is enough for the fake

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        gpu = self._gpu(handle, "nvmlDeviceGetName")
        return gpu.name.encode() if self.bytes_strings else gpu.name

    def nvmlDeviceGetUUID(self, handle: int) -> str | bytes:
        gpu = self._gpu(handle, "nvmlDeviceGetUUID")
        return gpu.uuid.encode() if self.bytes_strings else gpu.uuid

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=gpu.utilization, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        used, total = int(gpu.memory_used_mb * MB), int(gpu.memory_total_mb * MB)
        return SimpleNamespace(total=total, free=total - used, used=used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetTemperature")
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError_InvalidArgument()
        return int(gpu.temperature)

    # -- helpers
    def _require_init(self) -> None:
        if self._init_depth <= 0:
            raise NVMLError_Uninitialized()

    def _gpu(self, handle: int, call: str) -> FakeGpu:
        self._require_init()
        gpu = self.gpus[handle]
        if call in gpu.fail:
            raise NVMLError_NotSupported()
        return gpu
