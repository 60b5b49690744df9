"""Which Python builds a task's venv: the one `script.binary` asks for when it is installed, else ours or an error."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from notebook_agent.environment.commands import run
from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.reporter import BuildReporter, NullReporter

_REQUESTED = re.compile(r"^(?:.*/)?python(3\.\d+)$")
_ON_PATH = re.compile(r"^python3\.\d+$")


_versions: dict[tuple[str, str, int], str | None] = {}


def version_of(python: str, env: Mapping[str, str]) -> str | None:
    """`3.11` for an interpreter that runs; None for one that does not (e.g. a pyenv shim of a missing version).

    Remembered per resolved binary and its mtime, so a warm venv-cache hit does not pay a process start for it.
    """
    found = shutil.which(python, path=env.get("PATH")) or python
    try:
        real = os.path.realpath(found)
        memo = (found, real, os.stat(real).st_mtime_ns)
    except OSError:
        return None
    if memo not in _versions:
        _versions[memo] = _ask_version(found, env)
    return _versions[memo]


def _ask_version(python: str, env: Mapping[str, str]) -> str | None:
    try:
        done = run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            cwd=None,
            env=env,
            reporter=NullReporter(),
            capture=True,
            quiet=True,
            timeout=30,
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 and not done.timed_out else None


def installed_pythons(env: Mapping[str, str]) -> dict[str, str]:
    """{"3.11": path} for every `python3.N` on PATH that actually runs."""
    found: dict[str, str] = {}
    for folder in env.get("PATH", "").split(os.pathsep):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            if _ON_PATH.match(name) and name[len("python") :] not in found and os.access(path, os.X_OK):
                version = version_of(path, env)
                if version == name[len("python") :]:
                    found[version] = path
    return found


def choose_python(
    binary: str,
    default: str,
    *,
    ignore_requested: bool,
    env: Mapping[str, str],
    reporter: BuildReporter,
) -> str:
    """The interpreter for a task whose `script.binary` is `binary` ("python3.10", "python3", "" ...).

    Only an exact `python3.N` request is honoured (as clearml-agent does); `python`/`python3` take `default`.
    """
    match = _REQUESTED.match(binary.strip())
    if not match:
        return _runnable(default, env)
    wanted = match.group(1)
    if version_of(default, env) == wanted:
        return default
    available = installed_pythons(env)
    if wanted in available:
        reporter.log(f"using {available[wanted]}: the task asks for python{wanted}")
        return available[wanted]
    listing = ", ".join(f"python{v} ({Path(p)})" for v, p in sorted(available.items())) or "none on PATH"
    if ignore_requested:
        reporter.log(f"WARNING: the task asks for python{wanted}, which is not installed; using {default}")
        return _runnable(default, env)
    raise EnvironmentSetupError(
        f"python{wanted} requested by the task (script.binary) is not installed; installed: {listing}. "
        "Install it, or set agent.ignore_requested_python_version: true to use the agent's Python",
    )


def _runnable(default: str, env: Mapping[str, str]) -> str:
    """`default` when it runs; else an error naming the setting (virtualenv would only say "failed to find
    interpreter", naming neither the setting nor the fix)."""
    if version_of(default, env) is None:
        raise EnvironmentSetupError(
            f"the agent's Python {default} (agent.python_binary) is not an interpreter that runs; "
            "set agent.python_binary to an installed python, or leave it empty for the agent's own"
        )
    return default


def sdk_binary() -> str:
    """`script.binary` as the clearml SDK writes it for this interpreter ("python3.11"); clearml-agent reads a bare
    "python3" as a Python older than 3.9 and adds build steps for it."""
    return f"python{sys.version_info.major}.{sys.version_info.minor}"
