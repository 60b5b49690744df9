"""Virtualenvs for tasks: create one with the `virtualenv` package, pip-install requirements, freeze the result."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from notebook_agent.environment.agent_site import link_agent_site
from notebook_agent.environment.commands import run
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.reporter import BuildReporter, NullReporter

logger = logging.getLogger(__name__)

# Nobody can answer a prompt (an index password) in a headless build, and the version nag is noise.
_PIP_FLAGS = ("--disable-pip-version-check", "--no-input")


def python_in(path: Path) -> Path:
    """The interpreter inside the virtualenv at `path`."""
    return path / "Scripts" / "python.exe" if os.name == "nt" else path / "bin" / "python"


def create_venv(
    path: Path,
    *,
    python: str = sys.executable,
    system_site_packages: bool = False,
    env: Mapping[str, str],
    reporter: BuildReporter,
) -> Path:
    """Create a virtualenv for interpreter `python` at `path` and return its python.

    virtualenv runs under the agent's own interpreter (which has it installed), seeding pip from the wheels it
    embeds (`--no-download`), so no network is needed. With system site packages, a venv of the agent's own
    interpreter also sees the agent's environment (see agent_site), not only its base Python's.
    """
    argv = [sys.executable, "-m", "virtualenv", "--no-download", "--no-periodic-update"]
    if system_site_packages:
        argv.append("--system-site-packages")
    argv += ["-p", python, str(path)]
    path.parent.mkdir(parents=True, exist_ok=True)
    result = run(argv, cwd=path.parent, env=env, reporter=reporter)
    interpreter = python_in(path)
    if result.returncode != 0 or not interpreter.exists():
        raise EnvironmentSetupError(f"virtualenv failed: {_telling(result.stdout)}", result.stdout, logged=True)
    if system_site_packages:
        link_agent_site(python, path, interpreter, env, reporter)
    return interpreter


def install_requirements(
    venv_python: Path,
    requirements: str,
    *,
    env: Mapping[str, str],
    reporter: BuildReporter,
    pip_args: Sequence[str] = (),
    cwd: Path | None = None,
    installer: Sequence[str] | None = None,
    label: str = "pip install",
) -> None:
    """pip-install `requirements` (requirements.txt text, passed to pip unchanged) into the venv.

    `installer` replaces `python -m pip install ...` with another pip-compatible command (uv pip install).

    With `cwd` (the repository root) the text is written there for the install, so `-r other.txt`, `-e .` and
    `./pkg` resolve as they would for a requirements.txt in that folder; the file is removed afterwards.
    """
    if not requirements.strip():
        reporter.log("no requirements to install")
        return
    with tempfile.TemporaryDirectory(prefix="notebook-agent-reqs-") as scratch:
        folder = cwd if cwd is not None else Path(scratch)  # scratch is left empty when cwd is given
        fd, name = tempfile.mkstemp(prefix=".notebook-agent-requirements-", suffix=".txt", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(requirements if requirements.endswith("\n") else requirements + "\n")
            pip = [str(venv_python), "-m", "pip", "install", *_PIP_FLAGS, "--progress-bar", "off"]
            argv = [*(installer or pip), "-r", name, *pip_args]
            result = run(argv, cwd=folder, env=_pip_env(env), reporter=reporter)
        finally:
            Path(name).unlink(missing_ok=True)
    if result.returncode != 0:
        raise EnvironmentSetupError(f"{label} failed: {_telling(result.stdout)}", result.stdout, logged=True)


def freeze(venv_python: Path, *, env: Mapping[str, str]) -> list[str]:
    """`pip freeze` of the venv, one requirement per string (pip, setuptools and wheel are left out by pip).

    Only what the venv itself holds (`--local`): with system site packages on, the system's and the agent's
    packages are not the task's installs, and together they need not even be one installable set."""
    result = run(
        [str(venv_python), "-m", "pip", "freeze", "--local", *_PIP_FLAGS],
        cwd=venv_python.parent,
        env=_pip_env(env),
        reporter=NullReporter(),
        capture=True,
        quiet=True,
    )
    if result.returncode != 0:
        raise EnvironmentSetupError(f"pip freeze failed: {_telling(result.stderr)}", result.stderr)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def _pip_env(env: Mapping[str, str]) -> dict[str, str]:
    penv = dict(env)
    penv["PYTHONUNBUFFERED"] = "1"  # lines arrive as pip prints them, not in pipe-buffer-sized bursts
    # A venv of ours must not pick up the agent's or the notebook's activated environment.
    penv.pop("PYTHONHOME", None)
    penv.pop("VIRTUAL_ENV", None)
    return penv


def _telling(output: str) -> str:
    """The line that says why: pip's last `ERROR:` line without the prefix, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        for prefix in ("ERROR: ", "error: "):  # pip's, uv's
            if line.startswith(prefix):
                return line[len(prefix) :]
    return lines[-1] if lines else "no output"
