"""`notebook-agent submit`: create a task from a script or a repository and enqueue it (like clearml-task)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from notebook_agent import api
from notebook_agent.api import APIError
from notebook_agent.api.errors import TransportError, UnauthorizedError
from notebook_agent.cli.common import connect
from notebook_agent.engine.connection_errors import explain_api_error, retry_budget
from notebook_agent.engine.queue_lookup import QueueNotFoundError, resolve_queues
from notebook_agent.environment.interpreter import sdk_binary

_DESCRIPTION = """\
Create a task from a local script or a git repository, as clearml-task does, and put it on a queue.

examples:
  notebook-agent submit --script train.py --requirements requirements.txt --queue default
  notebook-agent submit --repo https://github.com/me/proj.git --entry-point train.py --branch main
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="create a task and enqueue it; prints the task id",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--script", type=Path, help="a local Python file: its source travels with the task")
    source.add_argument("--repo", help="a git repository URL or path")
    p.add_argument("--branch", default="", help="branch to check out (with --repo)")
    p.add_argument("--commit", default="", help="commit to check out (with --repo)")
    p.add_argument("--entry-point", default="", help="script to run, relative to --working-dir (with --repo)")
    p.add_argument("--working-dir", default=".", help="folder the entry point runs from (default .)")
    p.add_argument("--requirements", type=Path, help="a requirements.txt for the task's environment")
    p.add_argument("--queue", default="", help="queue name or id (default: the server's default queue)")
    p.add_argument("--create-queue", action="store_true", help="create the queue if it does not exist")
    p.add_argument("--project", default="notebook-agent", help="project name (created if missing)")
    p.add_argument("--name", default="", help="task name (default: the script's name)")
    p.set_defaults(func=run)


def task_script(args: argparse.Namespace) -> dict:
    """The task's `script` section, as the SDK would store it."""
    requirements = {"pip": args.requirements.read_text()} if args.requirements else {}
    if args.script is not None:
        return {
            "binary": sdk_binary(),
            "repository": "",
            "entry_point": args.script.name,
            "working_dir": ".",
            "diff": args.script.read_text(),
            "requirements": requirements,
        }
    if not args.entry_point:
        raise ValueError("--entry-point is required with --repo")
    return {
        "binary": sdk_binary(),
        "repository": args.repo,
        "branch": args.branch,
        "version_num": args.commit,
        "entry_point": args.entry_point,
        "working_dir": args.working_dir,
        "requirements": requirements,
    }


def run(args: argparse.Namespace) -> int:
    try:
        script = task_script(args)
    except (OSError, ValueError) as err:
        print(f"notebook-agent submit: {err}", file=sys.stderr)
        return 2
    config, server = connect(sys.stderr)
    session = api.Session.from_config(config.api, retry_total_seconds=retry_budget(config))
    try:
        (queue,) = resolve_queues(session, [args.queue] if args.queue else [], create=args.create_queue)
        project = api.projects.get_or_create(session, args.project)
        name = args.name or Path(script["entry_point"]).stem
        task_id = api.tasks.create(session, name, "training", project=project, script=script)
        api.tasks.enqueue(session, task_id, queue=queue.id)
    except QueueNotFoundError as err:
        print(f"notebook-agent submit: {err}", file=sys.stderr)
        return 2
    except (TransportError, UnauthorizedError) as err:  # an unreachable server, wrong keys: which, and the fix
        print(f"notebook-agent submit: {explain_api_error(err, config)}", file=sys.stderr)
        return 2
    except APIError as err:
        print(f"notebook-agent submit: {err}", file=sys.stderr)
        return 2
    finally:
        session.close()
        if server is not None:
            server.stop()
    print(task_id, flush=True)
    return 0
