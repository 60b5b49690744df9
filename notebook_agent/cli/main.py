"""Entry point of the `notebook-agent` command: parses arguments and hands off to one subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from notebook_agent import __version__
from notebook_agent.api import APIError
from notebook_agent.cli import build_cmd, daemon_cmd, demo_cmd, execute_cmd, server_cmd, submit_cmd
from notebook_agent.config import ConfigError
from notebook_agent.engine.connection_errors import explain_api_error

DESCRIPTION = """\
A ClearML-compatible execution agent: pulls tasks from ClearML queues, rebuilds each task's environment (git
checkout, uncommitted diff, a pip/uv/poetry/conda virtualenv) and runs it, streaming logs, states and machine stats to
the server. It reads ~/clearml.conf and the CLEARML_* variables as clearml-agent does; with no server configured it
starts an embedded ClearML-compatible server, so it works on one machine with no account.
"""

EPILOG = """\
examples:
  notebook-agent demo                                   # a sample task end to end on the embedded server
  notebook-agent daemon --queue default                 # a worker on the queue "default"
  notebook-agent submit --script train.py --queue default
  notebook-agent execute --id TASK_ID                   # one task, no queue

In a notebook: %load_ext notebook_agent shows the control panel. `notebook-agent COMMAND --help` tells more.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notebook-agent",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"notebook-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for command in (server_cmd, daemon_cmd, execute_cmd, build_cmd, submit_cmd, demo_cmd):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: `daemon --detached` restarts with them
    # Without -v a warning is one short line for a person; -v adds the time and the module for a bug report.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if args.verbose else "notebook-agent: %(message)s",
    )
    try:
        return args.func(args)
    except ConfigError as err:  # a broken clearml.conf or CLEARML_* variable: say where and how to fix it
        print(f"notebook-agent: {err}", file=sys.stderr)
        return 2
    except APIError as err:  # what a command did not explain itself (submit, build): no traceback, the reason
        print(f"notebook-agent: {explain_api_error(err, None)}", file=sys.stderr)
        return 2
