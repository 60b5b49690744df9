"""GpuMonitor against the fake NVML module, and against the real pynvml on whatever this machine has."""

from __future__ import annotations

from typing import Any

import pytest

from notebook_agent.monitor import GpuMonitor, GpuReading
from tests.fakes.fake_nvml import (
    FakeGpu,
    FakeNvml,
    NVMLError_DriverNotLoaded,
    NVMLError_LibraryNotFound,
)

A100 = dict(name="NVIDIA A100-SXM4-40GB", uuid="GPU-aaaa", memory_total_mb=40960.0)
T4 = dict(name="Tesla T4", uuid="GPU-bbbb", memory_total_mb=15360.0)


def two_gpus(**nvml_kwargs: Any) -> FakeNvml:
    return FakeNvml(
        [
            FakeGpu(**A100, utilization=75.0, memory_used_mb=1024.0, temperature=61.0),
            FakeGpu(**T4, utilization=5.0, memory_used_mb=512.5, temperature=40.0),
        ],
        **nvml_kwargs,
    )


def test_reads_two_gpus_in_mb() -> None:
    monitor = GpuMonitor(nvml=two_gpus())
    assert monitor.open() is True
    assert monitor.available and monitor.unavailable_reason == ""
    assert monitor.device_count() == 2
    assert monitor.read() == [
        GpuReading(0, "NVIDIA A100-SXM4-40GB", "GPU-aaaa", 75.0, 1024.0, 40960.0 - 1024.0, 40960.0, 61.0),
        GpuReading(1, "Tesla T4", "GPU-bbbb", 5.0, 512.5, 15360.0 - 512.5, 15360.0, 40.0),
    ]


def test_readings_follow_changes_between_reads() -> None:
    nvml = two_gpus()
    monitor = GpuMonitor(nvml=nvml)
    monitor.open()
    assert monitor.read()[0].utilization == 75.0
    nvml.gpus[0].utilization = 12.0
    assert monitor.read()[0].utilization == 12.0


def test_bytes_names_from_old_pynvml_are_decoded() -> None:
    monitor = GpuMonitor(nvml=two_gpus(bytes_strings=True))
    monitor.open()
    assert [(r.name, r.uuid) for r in monitor.read()] == [
        ("NVIDIA A100-SXM4-40GB", "GPU-aaaa"),
        ("Tesla T4", "GPU-bbbb"),
    ]


def test_devices_filters_by_index_and_gives_identity_only() -> None:
    monitor = GpuMonitor(nvml=two_gpus(), devices=[1, 7])  # 7 does not exist: skipped, not an error
    monitor.open()
    assert monitor.device_count() == 2  # NVML's count, not the filtered one
    (only,) = monitor.devices()
    assert (only.index, only.name, only.uuid, only.memory_total_mb) == (1, "Tesla T4", "GPU-bbbb", 15360.0)
    assert only.utilization is None and only.temperature is None and only.memory_used_mb is None
    assert [r.index for r in monitor.read()] == [1]


def test_unsupported_temperature_is_none_and_the_rest_still_reads() -> None:
    nvml = two_gpus()
    nvml.gpus[0].fail = {"nvmlDeviceGetTemperature"}
    nvml.gpus[1].fail = {"nvmlDeviceGetUtilizationRates"}  # like a MIG device
    monitor = GpuMonitor(nvml=nvml)
    monitor.open()
    first, second = monitor.read()
    assert first.temperature is None
    assert (first.utilization, first.memory_used_mb, first.name) == (75.0, 1024.0, "NVIDIA A100-SXM4-40GB")
    assert second.utilization is None and second.temperature == 40.0


@pytest.mark.parametrize("error", [NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded])
def test_init_failure_makes_it_unavailable(error: type[Exception]) -> None:
    nvml = two_gpus(init_error=error)
    monitor = GpuMonitor(nvml=nvml)
    assert monitor.open() is False
    assert monitor.available is False
    assert error.__name__ in monitor.unavailable_reason
    assert monitor.read() == [] and monitor.devices() == [] and monitor.device_count() == 0
    assert monitor.open() is False and nvml.init_calls == 1  # a failed init is not retried
    monitor.close()
    assert nvml.shutdown_calls == 0


def test_open_twice_inits_once_and_close_shuts_down_once() -> None:
    nvml = two_gpus()
    monitor = GpuMonitor(nvml=nvml)
    assert monitor.open() and monitor.open()
    assert nvml.init_calls == 1
    monitor.close()
    monitor.close()
    assert nvml.shutdown_calls == 1
    assert not monitor.available and monitor.read() == []


def test_unopened_monitor_reads_nothing() -> None:
    nvml = two_gpus()
    monitor = GpuMonitor(nvml=nvml)
    assert not monitor.available and monitor.unavailable_reason
    assert monitor.read() == [] and nvml.init_calls == 0


def test_real_pynvml_never_raises() -> None:
    """The real path: without a GPU or driver open() is False with a reason; with one it reads every GPU."""
    pytest.importorskip("pynvml")
    monitor = GpuMonitor()
    try:
        opened = monitor.open()
        assert opened is monitor.available
        if not opened:
            assert monitor.unavailable_reason
            assert monitor.read() == [] and monitor.device_count() == 0
        else:
            readings = monitor.read()
            assert [r.index for r in readings] == list(range(monitor.device_count()))
            for reading in readings:
                assert reading.name and reading.uuid
                assert reading.memory_total_mb is None or reading.memory_total_mb > 0
    finally:
        monitor.close()
