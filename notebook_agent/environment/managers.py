"""The seam between a build and its package manager; pip now, uv/poetry/conda slot in beside it later."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from notebook_agent.environment import venv
from notebook_agent.environment.cache_key import interpreter_identity
from notebook_agent.environment.reporter import BuildReporter


class PackageManager(Protocol):
    """Creates an environment, installs a task's requirements into it and reports what ended up installed."""

    def create_env(self, path: Path) -> Path:
        """Create the environment at `path`; return its python."""
        ...

    def install(self, python: Path, requirements: str, *, cwd: Path) -> None:
        """Install requirements text; `cwd` is the code root (relative paths in the text resolve there)."""
        ...

    def freeze(self, python: Path) -> list[str]: ...

    def cache_key_inputs(self) -> Mapping[str, Any] | None:
        """Everything besides the requirements that decides what this manager builds (the venv cache key: the
        manager, the interpreter's identity and platform, its options); None when its environments can't be cached."""
        ...


@dataclass(frozen=True)
class PipManager:
    """virtualenv + pip (clearml-agent's default `agent.package_manager.type: pip`)."""

    env: Mapping[str, str]
    reporter: BuildReporter
    python: str
    system_site_packages: bool = False
    pip_args: tuple[str, ...] = field(default=())

    def create_env(self, path: Path) -> Path:
        return venv.create_venv(
            path,
            python=self.python,
            system_site_packages=self.system_site_packages,
            env=self.env,
            reporter=self.reporter,
        )

    def install(self, python: Path, requirements: str, *, cwd: Path) -> None:
        venv.install_requirements(
            python, requirements, env=self.env, reporter=self.reporter, pip_args=self.pip_args, cwd=cwd
        )

    def freeze(self, python: Path) -> list[str]:
        return venv.freeze(python, env=self.env)

    def cache_key_inputs(self) -> Mapping[str, Any]:
        return {
            "manager": "pip",
            "python": interpreter_identity(self.python, self.env),
            "system_site_packages": self.system_site_packages,
            # The index options decide which builds of a requirement pip picks.
            "pip_args": list(self.pip_args),
        }
