"""Task environment setup: check out or write the task's code, build a venv and install its requirements."""

from notebook_agent.environment.build import BuildSettings, PreparedEnvironment, prepare
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.reporter import BuildReporter, ListReporter, NullReporter

__all__ = [
    "BuildReporter",
    "BuildSettings",
    "EnvironmentSetupError",
    "ListReporter",
    "NullReporter",
    "PreparedEnvironment",
    "prepare",
]
