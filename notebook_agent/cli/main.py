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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notebook-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"notebook-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (server_cmd, daemon_cmd, execute_cmd, build_cmd, submit_cmd, demo_cmd):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: `daemon --detached` restarts with them
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except ConfigError as err:  # a broken clearml.conf or CLEARML_* variable: say where and how to fix it
        print(f"notebook-agent: {err}", file=sys.stderr)
        return 2
    except APIError as err:  # what a command did not explain itself (submit, build): no traceback, the reason
        print(f"notebook-agent: {explain_api_error(err, None)}", file=sys.stderr)
        return 2
