"""Entry point of the `notebook-agent` command: parses arguments and hands off to one subcommand."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from notebook_agent import __version__
from notebook_agent.cli import build_cmd, daemon_cmd, demo_cmd, execute_cmd, submit_cmd
from notebook_agent.config import ConfigError


def _add_server_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="run the embedded ClearML-compatible server in the foreground")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the SQLite data lives (default ~/.notebook_agent/server)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others get a warning)")
    p.add_argument("--port", type=int, default=8008, help="port to listen on (default 8008; 0 picks a free one)")
    p.add_argument("--access-key", default=None, help="use this access key instead of a generated one")
    p.add_argument("--secret-key", default=None, help="the secret key that goes with --access-key")
    p.set_defaults(func=_run_server)


def _run_server(args: argparse.Namespace) -> int:
    from notebook_agent.server import EmbeddedServer

    if bool(args.access_key) != bool(args.secret_key):
        print("notebook-agent server: give --access-key and --secret-key together", file=sys.stderr)
        return 2
    server = EmbeddedServer(
        args.data_dir, host=args.host, port=args.port, access_key=args.access_key, secret_key=args.secret_key
    )
    try:
        server.start()
    except OSError as exc:
        print(
            f"notebook-agent server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    print(f"notebook-agent server listening on {server.url}", flush=True)
    print(f"client configuration (api section, mode 0600): {server.config_file}", flush=True)
    # SIGTERM ends the foreground server as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notebook-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"notebook-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_server_parser(sub)
    for command in (daemon_cmd, execute_cmd, build_cmd, submit_cmd, demo_cmd):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except ConfigError as err:  # a broken clearml.conf or CLEARML_* variable: say where and how to fix it
        print(f"notebook-agent: {err}", file=sys.stderr)
        return 2
