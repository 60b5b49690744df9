"""The seam between a build and its package manager (the PackageManager protocol) and pip mode, which installs
with uv pip or pip; uv sync, poetry and conda implement the same protocol in their own modules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from notebook_agent.environment import venv
from notebook_agent.environment.cache_key import interpreter_inputs
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.reporter import BuildReporter
from notebook_agent.environment.uv import uv_binary, uv_freeze, uv_install_command


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
        manager, the interpreter's identity and platform, its options); None when this environment can't be cached
        (the manager then logs why, as a "not cached: ..." line)."""
        ...


@dataclass(frozen=True)
class PipManager:
    """virtualenv + pip (clearml-agent's default `agent.package_manager.type: pip`)."""

    env: Mapping[str, str]
    reporter: BuildReporter
    python: str
    system_site_packages: bool = False
    pip_args: tuple[str, ...] = field(default=())
    # uv pip instead of pip (agent.package_manager.uv_replace_pip); pip stays the fallback.
    use_uv: bool = False

    def create_env(self, path: Path) -> Path:
        return venv.create_venv(
            path,
            python=self.python,
            system_site_packages=self.system_site_packages,
            env=self.env,
            reporter=self.reporter,
        )

    def install(self, python: Path, requirements: str, *, cwd: Path) -> None:
        uv = uv_binary() if self.use_uv else None
        if uv and requirements.strip():
            self.reporter.log("installing requirements with uv pip")
            try:
                venv.install_requirements(
                    python,
                    requirements,
                    env=self.env,
                    reporter=self.reporter,
                    pip_args=self.pip_args,
                    cwd=cwd,
                    installer=uv_install_command(uv, python, self.env),
                    label="uv pip install",
                )
                return
            except EnvironmentSetupError as err:
                self.reporter.log(f"uv pip install failed ({err.reason}); installing with pip instead")
        elif requirements.strip():
            why = (
                "uv_replace_pip is off or uv is missing"
                if not self.system_site_packages
                else ("system site packages are on, and only pip counts them as installed")
            )
            self.reporter.log(f"installing requirements with pip ({why})")
        venv.install_requirements(
            python, requirements, env=self.env, reporter=self.reporter, pip_args=self.pip_args, cwd=cwd
        )

    def freeze(self, python: Path) -> list[str]:
        uv = uv_binary() if self.use_uv else None
        frozen = uv_freeze(uv, python, self.env) if uv else None
        return frozen if frozen is not None else venv.freeze(python, env=self.env)

    def cache_key_inputs(self) -> Mapping[str, Any]:
        return {
            "manager": "pip",
            "installer": "uv" if self.use_uv else "pip",
            **interpreter_inputs(self.python, self.system_site_packages, self.env),
            # The index options decide which builds of a requirement pip picks.
            "pip_args": list(self.pip_args),
        }
