"""The bench scenarios by name. Each is a module with NAME, DESCRIPTION and `run(ctx) -> ScenarioResult`."""

from __future__ import annotations

from types import ModuleType

from bench.scenarios import end_to_end, env_build, idle, kernel_rtt, log_throughput, pickup, server_scale
from bench.scenarios.base import ScenarioContext, ScenarioResult

SCENARIOS: dict[str, ModuleType] = {
    module.NAME: module for module in (env_build, log_throughput, pickup, end_to_end, idle, kernel_rtt, server_scale)
}

__all__ = ["SCENARIOS", "ScenarioContext", "ScenarioResult"]
