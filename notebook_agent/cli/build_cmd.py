"""`notebook-agent build --id ID [--target DIR]`: build a task's environment without running it."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from notebook_agent import api
from notebook_agent.api import APIError
from notebook_agent.cli.common import connect
from notebook_agent.engine.worker import build_settings
from notebook_agent.environment import EnvironmentSetupError, prepare


class _PrintReporter:
    """Build steps and output, printed as they happen (this is the CLI face)."""

    def log(self, line: str) -> None:
        print(line, flush=True)

    def step(self, name: str, fraction: float | None = None, *, detail: str = "", seconds: float | None = None) -> None:
        # The build logs each step and its seconds itself; only the final state needs saying here.
        if name == "ready":
            print("== environment ready", flush=True)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a task's environment without running it (like clearml-agent build)")
    p.add_argument("--id", required=True, dest="task_id", help="the task whose environment to build")
    p.add_argument("--target", type=Path, default=None, help="folder for the code and the venv (default: a temp dir)")
    p.add_argument("--python-version", default="", help="build with pythonX.Y instead of the task's script.binary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config, server = connect(sys.stderr)
    session = api.Session.from_config(config.api)
    try:
        try:
            task = api.tasks.get_by_id(session, args.task_id)
        except APIError as err:
            print(f"notebook-agent build: {err}", file=sys.stderr)
            return 2
        target = (args.target or Path(tempfile.mkdtemp(prefix="notebook-agent-build-"))).resolve()
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
