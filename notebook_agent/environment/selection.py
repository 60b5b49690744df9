"""Which package manager builds a task's environment (`agent.package_manager.type`), in clearml-agent's order:
poetry or uv sync when the repository has their project files, conda when asked, else pip (through uv pip)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.managers import PackageManager, PipManager
from notebook_agent.environment.reporter import BuildReporter
from notebook_agent.environment.requirements import conda_specs, task_requirements

if TYPE_CHECKING:
    from notebook_agent.environment.build import BuildSettings

MANAGER_TYPES = ("pip", "uv", "poetry", "conda")
_UV_FILES = ("uv.lock", "pyproject.toml")
_POETRY_FILES = ("poetry.lock", "pyproject.toml")


def select_manager(
    settings: BuildSettings,
    env: Mapping[str, str],
    reporter: BuildReporter,
    *,
    script: Mapping[str, Any],
    repo_root: Path | None,
    cwd: Path,
    entry_dir: Path,
) -> tuple[PackageManager, str]:
    """The manager for this task and the requirements text it installs ("" for project managers: uv sync and
    poetry install what the repository's lock file says)."""
    kind = (settings.package_manager or "pip").strip().lower()
    if kind not in MANAGER_TYPES:
        raise EnvironmentSetupError(
            f"unknown agent.package_manager.type {settings.package_manager!r}: use one of {', '.join(MANAGER_TYPES)}"
        )
    if kind == "poetry" and repo_root is not None:
        project = cwd if settings.poetry_files_from_repo_working_dir else repo_root
        if _has_any(project, _POETRY_FILES):
            from notebook_agent.environment.poetry import PoetryManager, poetry_command

            command = poetry_command(env)
            if command is not None:
                reporter.log(f"package manager: poetry ({' '.join(command)}) in {project.name or project}")
                return PoetryManager(
                    env,
                    reporter,
                    settings.python,
                    project,
                    command=tuple(command),
                    system_site_packages=settings.system_site_packages,
                    pip_args=settings.pip_args,
                ), ""
            reporter.log("package manager: poetry not found (pip install poetry); installing requirements with pip")
        else:
            reporter.log("package manager: poetry asked, but no pyproject.toml or poetry.lock; using pip")
    if kind == "uv" and repo_root is not None:
        project = cwd if settings.uv_files_from_repo_working_dir else repo_root
        if _has_any(project, _UV_FILES):
            from notebook_agent.environment.uv_sync import UvSyncManager

            reporter.log(f"package manager: uv sync in {project.name or project}")
            return UvSyncManager(
                env,
                reporter,
                settings.python,
                project,
                system_site_packages=settings.system_site_packages,
                extra_args=settings.uv_sync_extra_args,
            ), ""
        reporter.log("package manager: uv asked, but no uv.lock or pyproject.toml; installing with uv pip")
    requirements = task_requirements(script, repo_root, entry_dir)
    if kind == "conda":
        from notebook_agent.environment.conda import CondaManager

        specs = conda_specs(script)
        channels = ", ".join(settings.conda_channels) or "none"
        reporter.log(f"package manager: conda ({len(specs)} conda specs; channels: {channels})")
        return _agent_packages_first(
            settings,
            reporter,
            CondaManager(
                env,
                reporter,
                settings.python,
                specs=specs,
                channels=settings.conda_channels,
                system_site_packages=settings.system_site_packages,
                pip_args=settings.pip_args,
                pkgs_dir=settings.conda_pkgs_dir,
            ),
        ), requirements
    # uv resolves without looking at system site packages, so with them on it would download what is there.
    use_uv = (settings.uv_replace_pip or kind == "uv") and not settings.system_site_packages
    pip = PipManager(env, reporter, settings.python, settings.system_site_packages, settings.pip_args, use_uv)
    return _agent_packages_first(settings, reporter, pip), requirements


def _agent_packages_first(settings: BuildSettings, reporter: BuildReporter, manager: PackageManager) -> PackageManager:
    # A task that requires clearml gets the agent's own copy instead of a download, unless its venv already sees a
    # fitting one through system site packages (AgentPackagesFirst checks).
    if settings.agent_wheels_dir is None:
        return manager
    from notebook_agent.environment.agent_wheels import AgentPackagesFirst

    return AgentPackagesFirst(manager, settings.agent_wheels_dir, reporter)


def _has_any(folder: Path, names: tuple[str, ...]) -> bool:
    return any((folder / name).is_file() for name in names)
