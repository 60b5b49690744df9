"""The one wiring function: from a task document to checked-out code and an installed venv, ready to run."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notebook_agent.environment import git_urls
from notebook_agent.environment.cache import CachedEnvironment, CacheLease, VenvCache
from notebook_agent.environment.cache_key import local_requirement
from notebook_agent.environment.commands import mask_text
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.git import apply_diff, checkout
from notebook_agent.environment.interpreter import choose_python
from notebook_agent.environment.managers import PackageManager
from notebook_agent.environment.progress import BuildProgress
from notebook_agent.environment.reporter import BuildReporter
from notebook_agent.environment.script import inside, is_absolute, is_literal_script, write_script
from notebook_agent.environment.selection import select_manager
from notebook_agent.environment.standalone import split_entry, without_repository
from notebook_agent.masking import mask_url

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildSettings:
    """How to build: the agent's configuration, not the task's."""

    python: str = sys.executable
    system_site_packages: bool = False
    pip_args: tuple[str, ...] = ()  # e.g. ("--extra-index-url", URL) from agent.package_manager.extra_index_url
    git_user: str = ""
    git_pass: str = field(default="", repr=False)  # never in a repr, a log line or a traceback
    git_host: str = ""  # agent.git_host: send the credentials to this host only
    # agent.git.extra_credentials: [{"host", "user", "pass"}, ...], each for its own host (they win over git_user)
    git_extra_credentials: tuple[Mapping[str, str], ...] = field(default=(), repr=False)
    git_fetch_args: tuple[str, ...] = ("--all", "--tags", "--recurse-submodules")  # agent.git_fetch_args
    vcs_cache_dir: Path | None = None  # agent.vcs_cache: repository mirrors (None: clone each time)
    translate_ssh: bool = True  # agent.translate_ssh: ssh URLs become https when git user/password are set
    force_git_ssh_protocol: bool = False  # agent.force_git_ssh_protocol: https URLs become ssh
    force_git_ssh_user: str = "git"
    force_git_ssh_port: int | None = None
    uv_replace_pip: bool = True  # agent.package_manager.uv_replace_pip: pip mode installs with uv pip
    # agent.ignore_requested_python_version: a missing `script.binary` Python falls back to `python` (else fails)
    ignore_requested_python_version: bool = False
    requested_python: str = ""  # overrides script.binary (`notebook-agent build --python-version`)
    # agent.venvs_cache: None turns the cache off (the default here; the worker sets the configured path).
    venvs_cache_dir: Path | None = None
    venvs_cache_max_entries: int = 10
    venvs_cache_free_space_threshold_gb: float = 2.0
    # Entries also kept as one archive each in this folder (a mounted Google Drive); venvs_cache_dir is then the
    # local working copy they are unpacked to.
    venvs_cache_archive_dir: Path | None = None
    # agent.pip_download_cache: where pip and uv keep downloads between builds (None: their own defaults).
    pip_download_cache_dir: Path | None = None
    # Wheels repacked from the agent's own environment (a task's `clearml` without a download); None: off.
    agent_wheels_dir: Path | None = None
    # agent.package_manager.type: pip (default), uv (uv sync with a lock file), poetry or conda
    package_manager: str = "pip"
    conda_channels: tuple[str, ...] = ()
    conda_pkgs_dir: Path | None = None  # conda's package cache (extracted packages are linked from it)
    uv_sync_extra_args: tuple[str, ...] = ()
    uv_files_from_repo_working_dir: bool = False
    poetry_files_from_repo_working_dir: bool = False


@dataclass(frozen=True)
class PreparedEnvironment:
    """What `prepare` built and how to run the task in it."""

    python: Path  # the venv's interpreter
    cwd: Path  # where the task runs (repo/working_dir or the script's dir)
    argv: list[str]  # [python, "-u", entry_point, *args]: what to run
    commit: str | None  # checked-out sha, None without repository
    frozen: list[str]  # pip freeze after install
    requirements: str  # the requirements text that was installed
    # With the venv cache: the lease on the cached environment the venv is layered over. `close()` it when the
    # task has ended (until then the entry is not evicted); None when the venv was built without the cache.
    lease: CacheLease | None = None
    # Variables the task process needs on top of its environment (PATH, VIRTUAL_ENV, CONDA_PREFIX).
    env: Mapping[str, str] = field(default_factory=dict)


def prepare(
    task: Mapping[str, Any],
    work_dir: Path,
    *,
    settings: BuildSettings,
    env: Mapping[str, str],
    reporter: BuildReporter,
) -> PreparedEnvironment:
    """Check out (or write) the task's code under `work_dir/code`, build `work_dir/venv` and install into it.

    Each step is timed and logged (see BuildProgress). Raises EnvironmentSetupError with a one-line reason for the
    task's status_reason.
    """
    progress = BuildProgress(reporter)
    try:
        prepared = _prepare(
            task, work_dir, settings=settings, env=_with_download_cache(env, settings), reporter=progress
        )
    finally:
        progress.finish()
    reporter.step("ready", 1.0)
    return prepared


def _with_download_cache(env: Mapping[str, str], settings: BuildSettings) -> Mapping[str, str]:
    """The installers' download caches under agent.pip_download_cache.path, unless the environment sets its own."""
    if settings.pip_download_cache_dir is None:
        return env
    cache = settings.pip_download_cache_dir
    extra = {}
    if "PIP_CACHE_DIR" not in env and "PIP_NO_CACHE_DIR" not in env:
        extra["PIP_CACHE_DIR"] = str(cache / "pip")
    if "UV_CACHE_DIR" not in env and "UV_NO_CACHE" not in env:
        extra["UV_CACHE_DIR"] = str(cache / "uv")
    return {**env, **extra} if extra else env


def _prepare(
    task: Mapping[str, Any],
    work_dir: Path,
    *,
    settings: BuildSettings,
    env: Mapping[str, str],
    reporter: BuildReporter,
) -> PreparedEnvironment:
    script: Mapping[str, Any] = task.get("script") or {}
    repository = str(script.get("repository") or "").strip()
    entry_point = str(script.get("entry_point") or "").strip()
    diff = str(script.get("diff") or "")
    working_dir = str(script.get("working_dir") or ".").strip() or "."
    if not entry_point:
        raise EnvironmentSetupError("entry point not set: the task has no script.entry_point")
    binary = settings.requested_python or str(script.get("binary") or "")
    python = choose_python(
        binary, settings.python, ignore_requested=settings.ignore_requested_python_version, env=env, reporter=reporter
    )
    settings = dataclasses.replace(settings, python=python)
    # Absolute, so argv and cwd hold wherever the task is started from; resolved, so path checks compare alike.
    work_dir = work_dir.resolve()
    code_dir = _fresh(work_dir / "code")
    commit: str | None = None
    if repository:
        reporter.step("clone", 0.0)
        git_user, git_pass = git_urls.credentials_for(
            repository,
            user=settings.git_user,
            password=settings.git_pass,
            host=settings.git_host,
            extra=settings.git_extra_credentials,
        )
        clone_url = git_urls.rewrite(
            repository,
            has_credentials=bool(git_user and git_pass),
            translate_ssh=settings.translate_ssh,
            force_ssh=settings.force_git_ssh_protocol,
            ssh_user=settings.force_git_ssh_user,
            ssh_port=settings.force_git_ssh_port,
        )
        if clone_url != repository:
            reporter.log(f"cloning {mask_url(clone_url)} (rewritten from {mask_url(repository)})")
        commit = checkout(
            clone_url,
            code_dir,
            commit=str(script.get("version_num") or ""),
            tag=str(script.get("tag") or ""),
            branch=str(script.get("branch") or ""),
            env=env,
            reporter=reporter,
            git_user=git_user,
            git_pass=git_pass,
            mirror_root=settings.vcs_cache_dir,
            fetch_args=settings.git_fetch_args,
        )
        reporter.step("diff", 0.15)
        cwd = _working_dir(code_dir, working_dir)
        if not is_literal_script(diff):
            apply_diff(code_dir, diff, env=env, reporter=reporter)
        elif not (cwd / entry_point).exists():
            # A notebook inside a repository: its converted source travels in script.diff. Like clearml-agent,
            # write it at the entry point unless the repository already has that file.
            write_script(cwd, entry_point, diff)
        entry_argv = _entry_argv(code_dir, cwd, entry_point, working_dir)
    else:
        reporter.step("diff", 0.15)
        code_dir.mkdir(parents=True)
        entry = without_repository(code_dir, entry_point, working_dir, diff, reporter)
        cwd, entry_argv = entry.cwd, entry.argv

    entry_dir = cwd if entry_argv[0] == "-m" else (cwd / entry_argv[0]).parent
    manager, requirements = select_manager(
        settings, env, reporter, script=script, repo_root=code_dir if repository else None, cwd=cwd, entry_dir=entry_dir
    )
    cached = _from_cache(manager, requirements, work_dir, code_dir, settings=settings, env=env, reporter=reporter)
    if cached is not None:
        python, frozen, lease = cached.python, cached.frozen, cached.lease
    else:
        lease = None
        reporter.step("venv", 0.2)
        python = manager.create_env(_fresh(work_dir / "venv"))
        reporter.step("requirements", 0.4)
        manager.install(python, requirements, cwd=code_dir)
        reporter.step("freeze", 0.9)
        frozen = manager.freeze(python)
    logger.info("environment ready in %s (commit %s, %d packages)", work_dir, commit, len(frozen))
    return PreparedEnvironment(
        python,
        cwd,
        [str(python), "-u", *entry_argv],
        commit,
        frozen,
        requirements,
        lease,
        env=_activation(manager, python, env),
    )


def _activation(manager: PackageManager, python: Path, env: Mapping[str, str]) -> dict[str, str]:
    """What the task process sees of its environment, as if activated: the venv's bin first on PATH (console
    scripts and `pip` of the venv), VIRTUAL_ENV, and what the manager adds (conda's CONDA_PREFIX)."""
    root = python.parent.parent
    path = env.get("PATH", os.defpath)
    activation = {"VIRTUAL_ENV": str(root), "PATH": str(python.parent) + os.pathsep + path}
    task_env = getattr(manager, "task_env", None)
    if callable(task_env):
        activation.update(task_env(python))
    return activation


def _from_cache(
    manager: PackageManager,
    requirements: str,
    work_dir: Path,
    code_dir: Path,
    *,
    settings: BuildSettings,
    env: Mapping[str, str],
    reporter: BuildReporter,
) -> CachedEnvironment | None:
    """`work_dir/venv` layered over the cached environment (built first on a miss); None when the cache is off,
    the requirements can't be cached or the cache folder is unusable (the caller then builds the venv itself)."""
    if settings.venvs_cache_dir is None:
        return None
    started = time.perf_counter()
    local = local_requirement(requirements)
    if local is not None:
        reporter.log(f"not cached: requirements refer to local files ({mask_text(local)})")
        return None
    inputs = manager.cache_key_inputs()
    if inputs is None:  # the manager has logged why
        return None
    cache = VenvCache(
        settings.venvs_cache_dir,
        max_entries=settings.venvs_cache_max_entries,
        free_space_threshold_gb=settings.venvs_cache_free_space_threshold_gb,
        archive_root=settings.venvs_cache_archive_dir,
    )
    try:
        return cache.provide(
            manager,
            requirements,
            _fresh(work_dir / "venv"),
            inputs=inputs,
            cwd=code_dir,
            env=env,
            reporter=reporter,
            started=started,
        )
    except OSError as exc:
        # A full disk or an unwritable cache folder must not fail the task: build its venv the usual way.
        reporter.log(f"not cached: venv cache unusable ({exc}); building without it")
        logger.warning("venv cache at %s unusable: %s", settings.venvs_cache_dir, exc)
        return None


def _fresh(path: Path) -> Path:
    # A work dir left by an earlier attempt must not leak files or packages into this task.
    if path.exists():
        shutil.rmtree(path)
    return path


def _working_dir(code_dir: Path, working_dir: str) -> Path:
    cwd = inside(code_dir, working_dir, "working dir")
    if not cwd.is_dir():
        raise EnvironmentSetupError(f"working dir not found: {working_dir}")
    return cwd


def _entry_argv(root: Path, cwd: Path, entry_point: str, working_dir: str) -> list[str]:
    """A repository task's interpreter arguments after `-u`: `[entry.py]` or `["-m", module]` (plus any inline
    arguments). The file must exist under `cwd` and stay inside the checkout `root` (`../tools/run.py` from `src`
    is fine)."""
    if entry_point.startswith("-m "):
        return ["-m", *split_entry(entry_point[3:])]
    parts = split_entry(entry_point)
    # "train.py --epochs 3": clearml-agent also accepts arguments written into the entry point.
    for name, args in ((entry_point, []), (parts[0], parts[1:])):
        if is_absolute(name):
            raise EnvironmentSetupError(f"entry point must be a path inside the repository, not {name}")
        if (cwd / name).is_file():
            inside(root, os.path.relpath(cwd / name, root), "entry point")
            return [name, *args]
    raise EnvironmentSetupError(f"entry point not found: {entry_point} in working dir {working_dir}")
