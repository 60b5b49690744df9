"""poetry as a task's package manager (`agent.package_manager.type: poetry`): `poetry install` of the repository's
project into the task's venv, never into the interpreter poetry itself runs on."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notebook_agent.environment import venv
from notebook_agent.environment.cache_key import interpreter_inputs
from notebook_agent.environment.commands import run
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.project_files import is_local_location, project_fingerprint, read_toml
from notebook_agent.environment.reporter import BuildReporter
from notebook_agent.environment.uv import uv_binary, uv_freeze

_FILES = ("poetry.lock", "pyproject.toml")
# poetry.lock source types whose files live in (or next to) the checkout.
_LOCAL_SOURCE_TYPES = ("file", "directory")
# poetry prints these to stderr before (or instead of) its error; they never say why it failed.
_NOT_REASONS = ("warning:", "you can also run")


def poetry_command(env: Mapping[str, str]) -> list[str] | None:
    """How to run poetry: the `poetry` on env's PATH, else the agent interpreter's poetry module; None if neither."""
    found = shutil.which("poetry", path=env.get("PATH"))
    if found:
        return [found]
    if importlib.util.find_spec("poetry") is not None:
        return [sys.executable, "-m", "poetry"]
    return None


@dataclass(frozen=True)
class PoetryManager:
    """virtualenv + `poetry install` of the project at `project` (pyproject.toml, usually with poetry.lock)."""

    env: Mapping[str, str]
    reporter: BuildReporter
    python: str
    project: Path
    command: tuple[str, ...] = field(default=())  # poetry_command(env)
    system_site_packages: bool = False
    # Not passed on: poetry installs the URLs its lock names, with its own installer (pip takes no part).
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
        """`poetry install` into the venv of `python`; `requirements` is unused (the lock file says what)."""
        command = list(self.command) or poetry_command(self.env)
        if not command:
            raise EnvironmentSetupError("poetry install failed: poetry not found (pip install poetry)")
        argv = [*command, "install", "-n", "--no-ansi"]
        if not self.installs_root():
            argv.append("--no-root")
        root = python.absolute().parent.parent
        result = run(argv, cwd=self.project, env=self._poetry_env(root), reporter=self.reporter, capture=True)
        if result.returncode != 0:
            detail = result.stdout + result.stderr
            raise EnvironmentSetupError(
                f"poetry install failed: {_poetry_reason(result.stderr, detail)}", detail, logged=True
            )

    def installs_root(self) -> bool:
        """Whether the project is a package poetry installs (editable, from the checkout): it has a [build-system]
        and no `package-mode = false`."""
        data = read_toml(self.project / "pyproject.toml")
        if data is None:
            return False  # poetry will fail on it and say why
        package_mode = data.get("tool", {}).get("poetry", {}).get("package-mode", True)
        return "build-system" in data and package_mode is not False

    def freeze(self, python: Path) -> list[str]:
        uv = uv_binary()
        frozen = uv_freeze(uv, python, self.env) if uv else None
        return frozen if frozen is not None else venv.freeze(python, env=self.env)

    def cache_key_inputs(self) -> Mapping[str, Any] | None:
        reason = self.not_cacheable()
        if reason is not None:
            self.reporter.log(f"not cached: {reason}")
            return None
        return {
            "manager": "poetry",
            **interpreter_inputs(self.python, self.system_site_packages, self.env),
            "files": project_fingerprint(self.project, _FILES),
        }

    def not_cacheable(self) -> str | None:
        """Why the environment can't be cached (it depends on files the key does not cover), else None."""
        if self.installs_root():
            return "the project is installed from its checkout (pyproject.toml has [build-system])"
        pyproject = read_toml(self.project / "pyproject.toml")
        if pyproject is None:
            return "cannot read pyproject.toml"
        local = _local_pyproject_dependency(pyproject)
        if local is not None:
            return f"pyproject.toml installs {local} from local files"
        if (self.project / "poetry.lock").is_file():
            lock = read_toml(self.project / "poetry.lock")
            if lock is None:
                return "cannot read poetry.lock"
            for package in lock.get("package") or []:
                source = package.get("source") or {}
                if source.get("type") in _LOCAL_SOURCE_TYPES or package.get("develop"):
                    return f"poetry.lock installs {package.get('name', '?')} from local files"
        return None

    def _poetry_env(self, root: Path) -> dict[str, str]:
        penv = dict(self.env)
        penv.update(
            {
                # poetry installs into the environment VIRTUAL_ENV names, as if it were activated...
                "VIRTUAL_ENV": str(root),
                "PATH": str(root / ("Scripts" if os.name == "nt" else "bin")) + os.pathsep + self.env.get("PATH", ""),
                # ...and creates none of its own (a project's poetry.toml cannot override an environment variable).
                "POETRY_VIRTUALENVS_CREATE": "false",
                "POETRY_NO_INTERACTION": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # In conda's base environment poetry ignores VIRTUAL_ENV and looks for a project .venv instead.
        for name in ("PYTHONHOME", "CONDA_PREFIX", "CONDA_DEFAULT_ENV"):
            penv.pop(name, None)
        return penv


def _local_pyproject_dependency(pyproject: Mapping[str, Any]) -> str | None:
    poetry = pyproject.get("tool", {}).get("poetry", {})
    tables = [poetry.get("dependencies") or {}, poetry.get("dev-dependencies") or {}]
    tables += [group.get("dependencies") or {} for group in (poetry.get("group") or {}).values()]
    for table in tables:
        for name, spec in table.items():
            for entry in spec if isinstance(spec, list) else [spec]:
                if isinstance(entry, dict) and "path" in entry:
                    return str(name)
    project = pyproject.get("project", {})
    requirements = list(project.get("dependencies") or [])
    for extra in (project.get("optional-dependencies") or {}).values():
        requirements += list(extra)
    for requirement in requirements:
        _name, at, location = str(requirement).partition("@")
        location = location.split(";", 1)[0].strip()
        if at and (location.startswith("file:") or is_local_location(location)):
            return str(requirement)
    for source in poetry.get("source") or []:
        url = source.get("url", "") if isinstance(source, dict) else ""
        if isinstance(url, str) and (url.startswith("file:") or (url and is_local_location(url))):
            return f"source {url}"
    return None


def _poetry_reason(stderr: str, output: str) -> str:
    """poetry's error: the first line it wrote to stderr that is no warning, else the output's last line."""
    for line in stderr.splitlines():
        text = line.strip()
        if text and not text.lower().startswith(_NOT_REASONS):
            return text
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
