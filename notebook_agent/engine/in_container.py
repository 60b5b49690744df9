"""The agent inside a task's container (docker mode): build the environment, run the task, print everything.

`execute --disable-monitoring` lands here, like clearml-agent's own inner command: the agent outside the container
reads this process's output as the task's console, ships it, watches for aborts and reports the final status, so
nothing here talks to the server beyond reading the task and storing its frozen requirements. `build --in-image`
(used by `build --docker`) builds the environment into the image instead.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from notebook_agent import api
from notebook_agent.api import APIError
from notebook_agent.config import Config
from notebook_agent.engine.build_config import build_settings
from notebook_agent.engine.task_env import task_config_sections, task_environment, write_task_config
from notebook_agent.engine.worker_id import standalone_worker_id
from notebook_agent.environment import EnvironmentSetupError, PreparedEnvironment, prepare
from notebook_agent.environment.requirements import with_frozen
from notebook_agent.masking import is_secret_name

logger = logging.getLogger(__name__)

SETUP_FAILED_EXIT = 1


class _PrintReporter:
    """Build lines to `out` (the task's console, read by the agent outside); steps only as their lines."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def log(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def step(self, name: str, fraction: float | None = None, *, detail: str = "", seconds: float | None = None) -> None:
        pass  # the build logs each step and its seconds itself


def execute_here(config: Config, task_id: str, *, env: Mapping[str, str], out: TextIO) -> int:
    """Build the task's environment here and run the task with its output on `out`; its exit code.

    A failed setup prints the reason and returns SETUP_FAILED_EXIT (the agent outside reports the task failed).
    """
    worker_id = env.get("CLEARML_WORKER_ID") or standalone_worker_id(str(config.agent("worker_name", "") or ""))
    session = api.Session.from_config(config.api, worker=worker_id)
    work_dir = Path(tempfile.mkdtemp(prefix="notebook-agent-task-"))
    try:
        task = api.tasks.get_by_id(session, task_id)
        config_file = write_task_config(work_dir / "clearml.conf", config.api, task_config_sections(config.tree))
        task_env = task_environment(env, task_id=task_id, worker_id=worker_id, api=config.api, config_file=config_file)
        prepared = _prepare(task, work_dir, config, task_env, out)
        if prepared is None:
            return SETUP_FAILED_EXIT
        try:
            _store_frozen(session, task, prepared.frozen)
            print(f"Starting task execution: {' '.join(prepared.argv)}", file=out, flush=True)
            done = subprocess.run(prepared.argv, cwd=prepared.cwd, env={**task_env, **prepared.env}, check=False)
            return done.returncode
        finally:
            if prepared.lease is not None:
                prepared.lease.close()
    finally:
        session.close()
        shutil.rmtree(work_dir, ignore_errors=True)


def build_here(config: Config, task_id: str, *, env: Mapping[str, str], out: TextIO, home: Path | None = None) -> int:
    """Build the task's environment into agent.venvs_cache (inside the image being built), and write the agent
    settings, without any credential, to ~/clearml.conf, so that the image's `notebook-agent execute` computes the
    same cache key and starts from that environment. 0, or SETUP_FAILED_EXIT."""
    session = api.Session.from_config(config.api)
    work_dir = Path(tempfile.mkdtemp(prefix="notebook-agent-build-"))
    try:
        task = api.tasks.get_by_id(session, task_id)
        prepared = _prepare(task, work_dir, config, env, out)
        if prepared is None:
            return SETUP_FAILED_EXIT
        if prepared.lease is not None:
            prepared.lease.close()
        conf = (home or Path.home()) / "clearml.conf"
        conf.write_text(json.dumps({"agent": without_secrets(config.tree.as_plain_ordered_dict().get("agent", {}))}))
        print(f"environment ready in the image; agent settings (no credentials) in {conf}", file=out, flush=True)
        return 0
    finally:
        session.close()
        shutil.rmtree(work_dir, ignore_errors=True)


def _prepare(
    task: Mapping[str, Any], work_dir: Path, config: Config, env: Mapping[str, str], out: TextIO
) -> PreparedEnvironment | None:
    try:
        return prepare(task, work_dir, settings=build_settings(config), env=env, reporter=_PrintReporter(out))
    except EnvironmentSetupError as err:
        for line in [*err.log_detail.splitlines(), f"Environment setup failed: {err.reason}"]:
            print(line, file=out, flush=True)
        return None


def _store_frozen(session: api.Session, task: Mapping[str, Any], frozen: list[str]) -> None:
    """The installed packages as the task's requirements, the original list kept as org_pip (as the runner does)."""
    requirements = with_frozen((task.get("script") or {}).get("requirements"), frozen)
    if requirements is None:
        return
    try:
        api.tasks.set_requirements(session, str(task["id"]), requirements)
    except APIError as err:
        logger.info("could not store the frozen requirements of %s: %s", task["id"], err)


def without_secrets(tree: Any) -> Any:
    """A copy of plain config data without the entries whose names hold secrets (git_pass, extra_credentials)."""
    if isinstance(tree, Mapping):
        return {k: without_secrets(v) for k, v in tree.items() if not is_secret_name(str(k))}
    if isinstance(tree, list):
        return [without_secrets(v) for v in tree]
    return tree
