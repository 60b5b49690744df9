"""`notebook-agent execute --id ID [--clone]`: run one task here, without a queue; exit with its exit code."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from notebook_agent import api
from notebook_agent.api import APIError
from notebook_agent.cli.common import ConsolePrinter, connect
from notebook_agent.cli.docker_args import add_docker_arguments
from notebook_agent.config import Config, load_config
from notebook_agent.engine import in_container
from notebook_agent.engine.build_config import build_settings
from notebook_agent.engine.connection_errors import explain_api_error, retry_budget
from notebook_agent.engine.docker import docker_settings
from notebook_agent.engine.events import EventBus, TaskPhase
from notebook_agent.engine.runner import RunnerSettings, TaskRunner
from notebook_agent.engine.task_env import task_config_sections
from notebook_agent.engine.worker_id import standalone_worker_id

_DESCRIPTION = """\
Build the task's environment and run it here, streaming its log to the server; exit with the task's exit code.

examples:
  notebook-agent execute --id 1a2b3c...           # run the task itself
  notebook-agent execute --id 1a2b3c... --clone   # run a copy, leaving the original as it is
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "execute",
        help="run one task by id, without a queue (like clearml-agent execute)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--id", required=True, dest="task_id", help="the task to run")
    p.add_argument("--clone", action="store_true", help="run a clone of the task instead of the task itself")
    p.add_argument("--cpu-only", action="store_true", help="hide every GPU from the task")
    p.add_argument("--gpus", default=None, help="GPUs for the task, e.g. 0,1")
    add_docker_arguments(p)
    p.add_argument(
        "--disable-monitoring",
        action="store_true",
        help="only build and run, the output on stdout: the agent that started this one (in docker mode, outside "
        "the container) ships the log and reports the status",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.disable_monitoring:
        # The agent inside a task's container: its configuration is the mounted one, never an embedded server.
        return in_container.execute_here(load_config(), args.task_id, env=os.environ, out=sys.stdout)
    config, server = connect(sys.stdout)
    bus = EventBus()
    printer = ConsolePrinter(bus)
    worker_id = standalone_worker_id(str(config.agent("worker_name", "") or ""))
    session = api.Session.from_config(config.api, worker=worker_id, retry_total_seconds=retry_budget(config))
    try:
        task_id = args.task_id
        try:
            if args.clone:
                name = str(api.tasks.get_by_id(session, task_id).get("name") or task_id)
                task_id = api.tasks.clone(session, task_id, f"Clone of {name}")  # clearml-agent's name for it
                print(f"cloned {args.task_id} as {task_id}", flush=True)
            status, _ = api.tasks.get_status(session, task_id)
            if status == "queued":
                api.tasks.dequeue(session, task_id)  # so no worker pulls it while it runs here
        except APIError as err:
            print(f"notebook-agent execute: {_explain(err, config)}", file=sys.stderr)
            return 2
        settings = RunnerSettings(
            work_root=Path(tempfile.gettempdir()) / "notebook-agent" / worker_id.replace(":", "_"),
            build=build_settings(config),
            task_config=task_config_sections(config.tree),
            visible_devices="" if args.cpu_only else args.gpus,
            docker=None
            if args.docker is None
            else docker_settings(config, args.docker, env=os.environ, force_current_version=args.force_current_version),
        )
        runner = TaskRunner(session, config.api, worker_id, settings, bus=bus)
        # Like clearml-agent's execute: report the task as ours (the server then shows this worker on it),
        # and leave no worker behind afterwards. Registered first: a server answers a status report of a worker
        # it does not know with 400/1001.
        api.workers.register(session, worker_id)
        try:
            api.workers.status_report(session, worker_id, int(time.time()) * 1000, task=task_id)
            outcome = runner.run(task_id, pulled_message="launch by agent")
        finally:
            api.workers.unregister(session, worker_id)
        print(f"task {task_id}: {outcome.phase.value} ({outcome.reason})", flush=True)
        if outcome.phase is TaskPhase.COMPLETED:
            return 0
        return outcome.exit_code if outcome.exit_code not in (None, 0) else 1
    finally:
        printer.close()
        session.close()
        if server is not None:
            server.stop()


def _explain(err: APIError, config: Config) -> str:
    """A refused login or an unreachable server gets its fix; a task error (unknown id) is clear as it is."""
    if isinstance(err, (api.TransportError, api.UnauthorizedError)):
        return explain_api_error(err, config)
    return str(err)
