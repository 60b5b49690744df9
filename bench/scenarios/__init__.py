"""The bench scenarios by name. Each is a module with NAME, DESCRIPTION and `run(ctx) -> ScenarioResult`."""

from __future__ import annotations

from types import ModuleType

from bench.scenarios import env_build
from bench.scenarios.base import ScenarioContext, ScenarioResult

SCENARIOS: dict[str, ModuleType] = {module.NAME: module for module in (env_build,)}

__all__ = ["SCENARIOS", "ScenarioContext", "ScenarioResult"]
