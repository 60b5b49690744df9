"""uv as the installer of pip mode: `uv pip install` into a task's venv, with pip's settings carried over."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from notebook_agent.environment.commands import run
from notebook_agent.environment.reporter import NullReporter

# pip reads these from the environment; uv has its own names, so they become flags (same meaning for both).
_PIP_ENV_FLAGS = (
    ("PIP_INDEX_URL", "--index-url"),
    ("PIP_EXTRA_INDEX_URL", "--extra-index-url"),
    ("PIP_FIND_LINKS", "--find-links"),
)
_TRUE = {"1", "true", "yes", "on"}
_PIP_OWN = {"pip", "setuptools", "wheel", "distribute"}


def uv_binary() -> str | None:
    """The uv executable: the one the `uv` package ships (a dependency), else one on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def pip_settings_as_flags(env: Mapping[str, str]) -> list[str]:
    """PIP_* index settings of `env` as uv pip flags, so both installers see the same package sources."""
    flags: list[str] = []
    if env.get("PIP_NO_INDEX", "").strip().lower() in _TRUE:
        flags.append("--no-index")
    for variable, flag in _PIP_ENV_FLAGS:
        for value in env.get(variable, "").split():
            flags += [flag, value]
    return flags


def uv_install_command(uv: str, venv_python: Path, env: Mapping[str, str]) -> list[str]:
    return [uv, "pip", "install", "--python", str(venv_python), *pip_settings_as_flags(env)]


def uv_freeze(uv: str, venv_python: Path, env: Mapping[str, str]) -> list[str] | None:
    """`uv pip freeze` of the venv (milliseconds, where pip takes a third of a second); None if it failed."""
    result = run(
        [uv, "pip", "freeze", "--python", str(venv_python)],
        cwd=venv_python.parent,
        env=env,
        reporter=NullReporter(),
        capture=True,
        quiet=True,
    )
    if result.returncode != 0:
        return None
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    # What pip freeze shows: without the installer's own tools.
    return [line for line in lines if line.split("==")[0].lower() not in _PIP_OWN]
