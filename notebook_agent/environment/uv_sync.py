"""uv sync as a task's package manager (`agent.package_manager.type: uv` with a uv project): the venv gets what the
repository's uv.lock (or, without one, pyproject.toml) says, beside what virtualenv seeded."""

from __future__ import annotations

import re
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
from notebook_agent.environment.uv import pip_settings_as_flags, uv_binary, uv_freeze

_FILES = ("uv.lock", "pyproject.toml")
# uv.lock source kinds whose files live in (or next to) the checkout, so the lock's hash does not pin what installs.
_LOCAL_SOURCES = ("path", "directory", "editable", "virtual")
_BUILD_SYSTEM = re.compile(r"^\s*\[build-system\]", re.MULTILINE)
_CAUSE_PREFIXES = ("cause:", "Caused by:", "╰─▶")


@dataclass(frozen=True)
class UvSyncManager:
    """virtualenv + `uv sync` of the project at `project` (a folder with pyproject.toml and usually uv.lock)."""

    env: Mapping[str, str]
    reporter: BuildReporter
    python: str
    project: Path
    system_site_packages: bool = False
    extra_args: tuple[str, ...] = field(default=())  # agent.package_manager.uv_sync_extra_args

    def create_env(self, path: Path) -> Path:
        return venv.create_venv(
            path,
            python=self.python,
            system_site_packages=self.system_site_packages,
            env=self.env,
            reporter=self.reporter,
        )

    def install(self, python: Path, requirements: str, *, cwd: Path) -> None:
        """Sync the project into the venv of `python`; `requirements` is unused (the lock file says what)."""
        uv = uv_binary()
        if uv is None:
            raise EnvironmentSetupError("uv sync failed: uv not found (pip install uv)")
        root = python.absolute().parent.parent
        argv = [uv, "sync", "--python", str(python), *self.sync_flags()]
        result = run(argv, cwd=self.project, env=self._uv_env(root), reporter=self.reporter)
        if result.returncode != 0:
            raise EnvironmentSetupError(f"uv sync failed: {_uv_reason(result.stdout)}", result.stdout, logged=True)

    def sync_flags(self) -> list[str]:
        """The flags of `uv sync` besides the interpreter."""
        locked = (self.project / "uv.lock").is_file()
        # As clearml-agent: a lock that no longer matches pyproject.toml is an error, not silently re-resolved
        # (unless the extra arguments ask for --frozen, which uv refuses beside --locked).
        asked = {"--locked", "--frozen"} & set(self.extra_args)
        flags = ["--locked"] if locked and not asked else []
        flags += self.index_flags()
        if not self.installs_project():
            # Nothing of the checkout enters the venv, so a cached one never points into one task's code.
            flags.append("--no-install-project")
        # Keep what virtualenv seeded (pip, setuptools): uv sync would otherwise remove all the lock doesn't name.
        flags.append("--inexact")
        return [*flags, *self.extra_args]

    def index_flags(self) -> list[str]:
        """The agent's pip index settings, when uv resolves (no uv.lock). With a lock uv installs the URLs the lock
        names, and another index would only make --locked reject the lock."""
        return [] if (self.project / "uv.lock").is_file() else pip_settings_as_flags(self.env)

    def installs_project(self) -> bool:
        """Whether the project is a package (uv builds and installs it, editable, from the checkout)."""
        data = read_toml(self.project / "pyproject.toml")
        if data is None:  # uv will say what is wrong with it; without a parser, a plain look for the table
            return bool(_BUILD_SYSTEM.search(_read_text(self.project / "pyproject.toml")))
        package = data.get("tool", {}).get("uv", {}).get("package")
        return bool(package) if isinstance(package, bool) else "build-system" in data

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
            "manager": "uv-sync",
            **interpreter_inputs(self.python, self.system_site_packages, self.env),
            "extra_args": list(self.extra_args),
            "index_flags": self.index_flags(),
            "files": project_fingerprint(self.project, _FILES),
        }

    def not_cacheable(self) -> str | None:
        """Why the environment can't be cached (it depends on files the key does not cover), else None."""
        if self.installs_project():
            return "the project is installed from its checkout (pyproject.toml has [build-system])"
        pyproject = read_toml(self.project / "pyproject.toml")
        if pyproject is None:
            return "cannot read pyproject.toml"
        local = _local_pyproject_source(pyproject)
        if local is not None:
            return f"pyproject.toml installs {local} from local files"
        if (self.project / "uv.lock").is_file():
            lock = read_toml(self.project / "uv.lock")
            if lock is None:
                return "cannot read uv.lock"
            local = _local_lock_source(lock)
            if local is not None:
                return f"uv.lock installs {local} from local files"
        return None

    def _uv_env(self, root: Path) -> dict[str, str]:
        uenv = dict(self.env)
        uenv["UV_PROJECT_ENVIRONMENT"] = str(root)
        uenv["PYTHONUNBUFFERED"] = "1"
        # uv warns about (and conda's base would confuse it with) an activated environment other than the target.
        for name in ("VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX", "CONDA_DEFAULT_ENV"):
            uenv.pop(name, None)
        return uenv


def _local_pyproject_source(pyproject: Mapping[str, Any]) -> str | None:
    uv = pyproject.get("tool", {}).get("uv", {})
    for name, source in (uv.get("sources") or {}).items():
        for entry in source if isinstance(source, list) else [source]:
            if isinstance(entry, dict) and ("path" in entry or entry.get("workspace")):
                return str(name)
    for location in uv.get("find-links") or []:
        if isinstance(location, str) and is_local_location(location):
            return f"find-links {location}"
    for index in uv.get("index") or []:
        url = index.get("url", "") if isinstance(index, dict) else ""
        if isinstance(url, str) and is_local_location(url):
            return f"index {url}"
    return None


def _local_lock_source(lock: Mapping[str, Any]) -> str | None:
    for package in lock.get("package") or []:
        source = package.get("source") or {}
        name = str(package.get("name", "?"))
        for kind in _LOCAL_SOURCES:
            # "." is the project itself: never installed (--no-install-project) unless it is a package.
            if kind in source and source[kind] != ".":
                return name
        registry = source.get("registry")
        if isinstance(registry, str) and is_local_location(registry):
            return name
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _uv_reason(output: str) -> str:
    """uv's last `error:` line and its first cause, else the last line of the output."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("error: "):
            reason = lines[index][len("error: ") :]
            following = lines[index + 1].strip() if index + 1 < len(lines) else ""
            if following.startswith(_CAUSE_PREFIXES):
                for prefix in _CAUSE_PREFIXES:
                    following = following.removeprefix(prefix)
                reason = f"{reason.rstrip(':')}: {following.strip()}"
            return reason
    return lines[-1].strip() if lines else "no output"
