"""System site packages that mean the agent's own environment: a task venv made from the agent's interpreter
sees, after its own packages, the site dirs of the venv (or user site) the agent runs from, not only the base
Python's, so a task gets the agent's `clearml` however the agent was installed."""

from __future__ import annotations

import logging
import os
import shutil
import site
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from notebook_agent.environment.reporter import BuildReporter
from notebook_agent.environment.thin_venv import site_dirs

logger = logging.getLogger(__name__)

PTH_NAME = "_notebook_agent_agent_site.pth"


def agent_site_dirs() -> list[str]:
    """The agent's own site dirs that a venv of its base interpreter would not see: the site-packages of the venv
    it runs from, and the user site when that is on sys.path (`pip install --user`). Empty for an agent installed
    into the interpreter itself (a system Python, Colab's, a conda env): system site packages cover those."""
    dirs: list[str] = []
    if sys.prefix != sys.base_prefix:
        prefix = os.path.realpath(sys.prefix)
        for folder in site.getsitepackages():
            real = os.path.realpath(folder)
            if (real == prefix or real.startswith(prefix + os.sep)) and os.path.isdir(folder):
                dirs.append(folder)
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else ""
    if user_site and user_site in sys.path and os.path.isdir(user_site):
        dirs.append(user_site)
    return list(dict.fromkeys(dirs))


def is_agent_interpreter(python: str, env: Mapping[str, str]) -> bool:
    """Whether `python` (a path, or a name on env's PATH) is the interpreter the agent runs on, as installed: the
    same binary in the same folder. The base Python of the agent's venv is another interpreter here, since the user
    who names it means its own packages."""
    found = shutil.which(python, path=env.get("PATH"))
    if found is None:
        return False
    agent = sys.executable
    same_folder = os.path.abspath(os.path.dirname(found)) == os.path.abspath(os.path.dirname(agent))
    return same_folder and os.path.realpath(found) == os.path.realpath(agent)


def linked_dirs(python: str, system_site_packages: bool, env: Mapping[str, str]) -> list[str]:
    """The agent's site dirs a task venv of interpreter `python` gets with system site packages on; else none."""
    if not system_site_packages or not is_agent_interpreter(python, env):
        return []
    return agent_site_dirs()


def cache_key_inputs(python: str, system_site_packages: bool, env: Mapping[str, str]) -> dict[str, Any]:
    """What the venv cache key needs to know of the link: which agent environment a cached venv sees (nothing
    when there is no link, so keys of unlinked environments stay as they were)."""
    dirs = linked_dirs(python, system_site_packages, env)
    return {"agent_site": dirs} if dirs else {}


def link_agent_site(
    python: str, venv_dir: Path, venv_python: Path, env: Mapping[str, str], reporter: BuildReporter
) -> None:
    """With system site packages on, make the new venv at `venv_dir` (made from `python`; its own interpreter
    `venv_python`) see the agent's own site dirs after its own, through a .pth that adds each as a site dir (so
    their .pth files, editable installs among them, work too). Says in the build log what the task sees."""
    dirs = linked_dirs(python, True, env)
    if not dirs:
        if not is_agent_interpreter(python, env) and agent_site_dirs():
            reporter.log(
                f"system site packages: {python} is not the agent's interpreter ({sys.executable}); the task sees "
                "that interpreter's packages, not the agent's environment"
            )
        return
    lines = [f"import site; site.addsitedir({folder!r})" for folder in dirs]
    pth = venv_dir / site_dirs(venv_python, venv_dir, env)["purelib"] / PTH_NAME
    pth.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reporter.log(f"system site packages: the task also sees the agent's environment ({', '.join(dirs)})")
    logger.debug("linked %s to %s", venv_dir, dirs)
