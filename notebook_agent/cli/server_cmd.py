"""`notebook-agent server`: the embedded ClearML-compatible server in the foreground."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path

from notebook_agent.cli.common import port_free
from notebook_agent.server import EmbeddedServer
from notebook_agent.server.http_handler import DEFAULT_MAX_BODY

_DESCRIPTION = """\
Run the embedded ClearML-API server (SQLite, authenticated) until Ctrl-C. It writes a clearml.conf with its
URL and keys into its data folder, for the SDK, clearml-agent and this agent to use.

example:
  notebook-agent server --port 8010 --data-dir ~/my-server
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "server",
        help="run the embedded ClearML-compatible server in the foreground",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument(
        "--max-body-mb",
        type=_positive_mb,
        default=DEFAULT_MAX_BODY // 2**20,
        help=f"largest request body accepted, in MiB (default {DEFAULT_MAX_BODY // 2**20}; bigger ones get 413)",
    )
    p.set_defaults(func=run)


def _positive_mb(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 MiB")
    return value


def _interrupt(*_: object) -> None:
    """SIGTERM ends the foreground server as cleanly as Ctrl-C does."""
    raise KeyboardInterrupt


def _port_fix(exc: OSError, host: str, port: int) -> str:
    """What to do when the port can't be had: another free port to pass, or why none would help."""
    if exc.errno == errno.EADDRINUSE:
        free = _free_port(host, port + 1)
        other = f"--port {free}" if free else "--port with another port"
        return f"another program (another server?) listens on port {port}: pass {other}, or stop that program"
    if exc.errno == errno.EACCES and port < 1024:
        return f"ports below 1024 need root: pass --port {_free_port(host, 8008) or 8008}"
    return f"check --host {host} (an address of this machine) and --port"


def _free_port(host: str, start: int) -> int | None:
    return next((port for port in range(start, min(start + 100, 65536)) if port_free(port, host)), None)


def run(args: argparse.Namespace) -> int:
    if bool(args.access_key) != bool(args.secret_key):
        print("notebook-agent server: give --access-key and --secret-key together", file=sys.stderr)
        return 2
    server = EmbeddedServer(
        args.data_dir,
        host=args.host,
        port=args.port,
        access_key=args.access_key,
        secret_key=args.secret_key,
        max_body=args.max_body_mb * 2**20,
    )
    try:
        server.start()
    except OSError as exc:
        print(
            f"notebook-agent server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}\n"
            f"  Fix: {_port_fix(exc, args.host, args.port)}",
            file=sys.stderr,
        )
        return 1
    print(f"notebook-agent server listening on {server.url}", flush=True)
    print(f"client configuration (api section, mode 0600): {server.config_file}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0
