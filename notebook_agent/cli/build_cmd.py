"""`notebook-agent build --id ID [--target DIR]`: build a task's environment without running it.

With `--docker`: build it inside the task's container and commit that to the image `--target`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

from notebook_agent import api
from notebook_agent.api import APIError
from notebook_agent.api.errors import TransportError, UnauthorizedError
from notebook_agent.cli.common import connect
from notebook_agent.cli.docker_args import add_docker_arguments
from notebook_agent.config import Config, load_config
from notebook_agent.engine import docker_launch, in_container
from notebook_agent.engine.build_config import build_settings
from notebook_agent.engine.connection_errors import explain_api_error, retry_budget
from notebook_agent.engine.docker import docker_settings
from notebook_agent.engine.worker_id import standalone_worker_id
from notebook_agent.environment import EnvironmentSetupError, prepare


class _PrintReporter:
    """Build steps and output, printed as they happen (this is the CLI face)."""

    def log(self, line: str) -> None:
        print(line, flush=True)

    def step(self, name: str, fraction: float | None = None, *, detail: str = "", seconds: float | None = None) -> None:
        # The build logs each step and its seconds itself; only the final state needs saying here.
        if name == "ready":
            print("== environment ready", flush=True)


_DESCRIPTION = """\
Check out the task's code (repository at its commit, plus its uncommitted diff) and build its virtualenv with its
requirements, as the daemon would before running it, but do not run it.

example:
  notebook-agent build --id 1a2b3c... --target ./task-env   # then ./task-env/venv/bin/python runs its code
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build a task's environment without running it (like clearml-agent build)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--id", required=True, dest="task_id", help="the task whose environment to build")
    p.add_argument(
        "--target",
        default=None,
        help="folder for the code and the venv (default: a temp dir); with --docker, the image to create "
        "(default: task_id_<ID>)",
    )
    p.add_argument("--python-version", default="", help="build with pythonX.Y instead of the task's script.binary")
    add_docker_arguments(
        p, help="build inside the task's container (or IMAGE), commit it to the image --target; needs a docker engine"
    )
    p.add_argument(
        "--entry-point",
        choices=["reuse_task", "clone_task"],
        default=None,
        help="with --docker: the image runs the task (reuse_task) or a clone of it (clone_task)",
    )
    p.add_argument("--cpu-only", action="store_true", help="with --docker: no --gpus for the build container")
    p.add_argument("--gpus", default=None, help="with --docker: GPUs for the build container, e.g. 0,1")
    # Inside a `build --docker` container: the environment goes into the image's venv cache (see in_container).
    p.add_argument("--in-image", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.in_image:
        return in_container.build_here(load_config(), args.task_id, env=os.environ, out=sys.stdout)
    config, server = connect(sys.stderr)
    session = api.Session.from_config(config.api, retry_total_seconds=retry_budget(config))
    try:
        try:
            task = api.tasks.get_by_id(session, args.task_id)
        except (TransportError, UnauthorizedError) as err:  # an unreachable server, wrong keys: which, and the fix
            print(f"notebook-agent build: {explain_api_error(err, config)}", file=sys.stderr)
            return 2
        except APIError as err:
            print(f"notebook-agent build: {err}", file=sys.stderr)
            return 2
        if args.docker is not None:
            return _build_docker(args, config, task)
        target = Path(args.target or tempfile.mkdtemp(prefix="notebook-agent-build-")).resolve()
        try:
            # A standalone environment: one served from the cache would break once its entry is evicted.
            requested = f"python{args.python_version}" if args.python_version else ""
            settings = dataclasses.replace(build_settings(config), venvs_cache_dir=None, requested_python=requested)
            prepared = prepare(task, target, settings=settings, env=dict(os.environ), reporter=_PrintReporter())
        except EnvironmentSetupError as err:
            print(f"notebook-agent build: {err.reason}", file=sys.stderr)
            return 1
        print(f"environment ready: python {prepared.python}, code in {prepared.cwd}")
        print(f"run it with: cd {prepared.cwd} && {' '.join(prepared.argv)}")
        return 0
    finally:
        session.close()
        if server is not None:
            server.stop()


def _build_docker(args: argparse.Namespace, config: Config, task: dict) -> int:
    """`build --docker`: the agent's build in the task's container, committed to the image --target."""
    settings = docker_settings(config, args.docker, env=os.environ, force_current_version=args.force_current_version)
    work_dir = Path(tempfile.mkdtemp(prefix="notebook-agent-docker-build-"))
    try:
        return docker_launch.build_image(
            task,
            settings,
            target=args.target or f"task_id_{args.task_id}",
            entry_point=args.entry_point,
            work_dir=work_dir,
            worker_id=standalone_worker_id(str(config.agent("worker_name", "") or "")),
            gpus="" if args.cpu_only else args.gpus,
            api_server=config.api.api_server,
            base_env=dict(os.environ),
            reporter=_PrintReporter(),
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
