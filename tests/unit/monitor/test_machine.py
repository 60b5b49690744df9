"""MachineMonitor: the agent's machine_stats shape from psutil (real and stand-in) and a fake NVML."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil

from notebook_agent.monitor import GpuMonitor, MachineMonitor
from tests.fakes.fake_nvml import FakeGpu, FakeNvml, NVMLError_LibraryNotFound

MB = 1024 * 1024
GPU_FIELDS = {"gpu_usage", "gpu_memory_used", "gpu_memory_free", "gpu_temperature"}
RATE_FIELDS = ("disk_read", "disk_write", "network_rx", "network_tx")


class StepClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_gpus() -> FakeNvml:
    return FakeNvml(
        [
            FakeGpu(name="A", uuid="GPU-a", utilization=80.0, memory_used_mb=2048.0, memory_total_mb=8192.0),
            FakeGpu(name="B", uuid="GPU-b", utilization=20.0, memory_used_mb=0.0, memory_total_mb=4096.0),
        ]
    )


def test_first_sample_shape(tmp_path: Path) -> None:
    stats = MachineMonitor(clock=StepClock(), temp_dir=tmp_path).sample()
    cpu = stats["cpu_usage"]
    assert isinstance(cpu, list) and len(cpu) == 1 and 0.0 <= cpu[0] <= 100.0
    total_mb = psutil.virtual_memory().total / MB
    assert 0 < stats["memory_used"] < total_mb and 0 < stats["memory_free"] <= total_mb
    assert stats["memory_used"] + stats["memory_free"] <= total_mb * 1.05  # same machine, a moment apart
    assert 0.0 <= stats["disk_free_home"] <= 100.0
    assert 0.0 <= stats["disk_free_temp"] <= 100.0
    for field in RATE_FIELDS:
        if field in stats:  # disk counters are missing in some containers
            assert stats[field] == 0.0
    assert not GPU_FIELDS & stats.keys()


def test_rates_between_samples_are_non_negative(tmp_path: Path) -> None:
    clock = StepClock()
    monitor = MachineMonitor(clock=clock, temp_dir=tmp_path)
    monitor.sample()
    clock.now += 1.0
    stats = monitor.sample()
    for field in RATE_FIELDS:
        if field in stats:
            assert stats[field] >= 0.0


def test_rates_are_mb_per_second_of_clock_time() -> None:
    counters = {
        "disk": SimpleNamespace(read_bytes=0, write_bytes=0),
        "net": SimpleNamespace(bytes_recv=0, bytes_sent=0),
    }
    stub = SimpleNamespace(
        cpu_percent=lambda interval=None: 0.0,
        virtual_memory=lambda: SimpleNamespace(used=MB, available=MB),
        disk_usage=lambda path: SimpleNamespace(percent=25.0),
        disk_io_counters=lambda: counters["disk"],
        net_io_counters=lambda: counters["net"],
    )
    clock = StepClock()
    monitor = MachineMonitor(clock=clock, psutil_module=stub)
    assert monitor.sample()["disk_free_home"] == 75.0
    counters["disk"] = SimpleNamespace(read_bytes=4 * MB, write_bytes=2 * MB)
    counters["net"] = SimpleNamespace(bytes_recv=10 * MB, bytes_sent=0)
    clock.now += 2.0
    stats = monitor.sample()
    assert (stats["disk_read"], stats["disk_write"], stats["network_rx"], stats["network_tx"]) == (2.0, 1.0, 5.0, 0.0)
    counters["net"] = SimpleNamespace(bytes_recv=0, bytes_sent=0)  # counter reset: 0, never negative
    clock.now += 1.0
    assert monitor.sample()["network_rx"] == 0.0


def test_gpu_fields_with_fake_nvml(tmp_path: Path) -> None:
    nvml = fake_gpus()
    monitor = MachineMonitor(GpuMonitor(nvml=nvml), clock=StepClock(), temp_dir=tmp_path)
    stats = monitor.sample()
    assert stats["gpu_usage"] == [80.0, 20.0]
    assert stats["gpu_memory_used"] == [2048.0, 0.0]
    assert stats["gpu_memory_free"] == [6144.0, 4096.0]
    assert stats["gpu_temperature"] == [30.0, 30.0]
    nvml.gpus[1].utilization = 55.0
    assert monitor.sample()["gpu_usage"] == [80.0, 55.0]
    assert [r.name for r in monitor.gpu_summary()] == ["A", "B"]
    assert nvml.init_calls == 1
    monitor.close()
    assert nvml.shutdown_calls == 1


def test_gpu_field_dropped_only_when_no_gpu_has_it(tmp_path: Path) -> None:
    nvml = fake_gpus()
    nvml.gpus[0].fail = {"nvmlDeviceGetTemperature", "nvmlDeviceGetUtilizationRates"}
    nvml.gpus[1].fail = {"nvmlDeviceGetTemperature"}
    stats = MachineMonitor(GpuMonitor(nvml=nvml), clock=StepClock(), temp_dir=tmp_path).sample()
    assert "gpu_temperature" not in stats
    assert stats["gpu_usage"] == [0.0, 20.0]  # positional: the GPU without a reading keeps its slot
    assert stats["gpu_memory_used"] == [2048.0, 0.0]


def test_no_gpu_fields_without_nvml(tmp_path: Path) -> None:
    for gpu in (None, GpuMonitor(nvml=FakeNvml(init_error=NVMLError_LibraryNotFound)), GpuMonitor(nvml=FakeNvml())):
        monitor = MachineMonitor(gpu, clock=StepClock(), temp_dir=tmp_path)
        assert not GPU_FIELDS & monitor.sample().keys()
        assert monitor.gpu_summary() == []


def test_sample_survives_failing_psutil() -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError("not here")

    stub = SimpleNamespace(
        cpu_percent=boom,
        virtual_memory=lambda: SimpleNamespace(used=3 * MB, available=5 * MB),
        disk_usage=boom,
        disk_io_counters=lambda: None,  # what psutil returns when no disks are visible
        net_io_counters=boom,
    )
    stats = MachineMonitor(clock=StepClock(), psutil_module=stub).sample()
    assert stats == {"memory_used": 3.0, "memory_free": 5.0}
    everything_fails = SimpleNamespace()  # AttributeError for every call
    assert MachineMonitor(clock=StepClock(), psutil_module=everything_fails).sample() == {}
