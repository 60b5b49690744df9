"""MachineMonitor samples, coerced by workers.machine_stats_body, validate against the real SDK's v2.23 schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from notebook_agent.api.workers import machine_stats_body
from notebook_agent.monitor import GpuMonitor, MachineMonitor
from tests.fakes.fake_nvml import FakeGpu, FakeNvml

workers_schema = pytest.importorskip("clearml.backend_api.services.v2_23.workers")


def request_schema() -> dict[str, Any]:
    return workers_schema.StatusReportRequest._schema


def validate_machine_stats(body: dict[str, Any]) -> None:
    schema = request_schema()
    # $ref resolves against the root document, so the definitions travel with the reference.
    jsonschema.validate(body, {"$ref": "#/definitions/machine_stats", "definitions": schema["definitions"]})
    assert set(body) <= set(schema["definitions"]["machine_stats"]["properties"])


def test_sample_with_gpus_validates(tmp_path: Path) -> None:
    nvml = FakeNvml(
        [
            FakeGpu(utilization=33.3, memory_used_mb=1234.5, memory_total_mb=40960.0, temperature=55.0),
            FakeGpu(utilization=0.0, memory_used_mb=0.0, memory_total_mb=16384.0, temperature=35.0),
        ]
    )
    clock = iter(float(t) for t in range(100))
    monitor = MachineMonitor(GpuMonitor(nvml=nvml), clock=lambda: next(clock), temp_dir=tmp_path)
    for _ in range(2):  # the second sample has real rates
        body = machine_stats_body(monitor.sample())
        validate_machine_stats(body)
    assert {"cpu_usage", "memory_used", "memory_free", "disk_free_home"} <= body.keys()
    assert body["gpu_memory_used"] == [1234, 0] and body["gpu_usage"] == [33.3, 0.0]
    assert len(body["cpu_usage"]) == 1
    # The whole request validates too, with machine_stats reached through the schema's own $ref.
    jsonschema.validate({"worker": "host:0", "timestamp": 1, "machine_stats": body}, request_schema())


def test_sample_without_gpus_validates(tmp_path: Path) -> None:
    body = machine_stats_body(MachineMonitor(temp_dir=tmp_path).sample())
    validate_machine_stats(body)
    assert "gpu_usage" not in body
