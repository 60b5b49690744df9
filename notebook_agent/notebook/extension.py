"""`%load_ext notebook_agent` and the `%agent` magic: thin wrappers over one Agent per kernel. Magics run in the
main thread, so they may print; the agent's own thread never does."""

from __future__ import annotations

import argparse
import logging
import shlex
from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import HTML, display

from notebook_agent.notebook.agent import Agent, AgentError

logger = logging.getLogger(__name__)

_AGENT: Agent | None = None

USAGE = """%agent                 show the panel
%agent status          compact text status
%agent start [--queue Q ...] [--gpus 0,1 | --cpu-only] [--order-fairness] [--embedded]
             [--services-mode N] [--uptime "8-18 MON-FRI" | --downtime ...] [--gpu-min-free-gb GB]
%agent stop [--drain]  leave now (aborting the running task) or after it
%agent pause | resume  stop or restart pulling new tasks
%agent logs [TASK_ID] [-n LINES]
%agent abort TASK_ID
%agent config          the effective configuration, secrets masked"""


def agent() -> Agent:
    """This kernel's agent (made on first use; `%load_ext` makes it)."""
    global _AGENT
    if _AGENT is None:
        _AGENT = Agent()
    return _AGENT


def load(ipython: Any) -> None:
    ipython.register_magics(AgentMagics)
    target = agent()
    # Tasks a restarted kernel left running are ended and marked in the background; the panel shows the news.
    target.reap_leftovers()
    show_panel(target)


def unload(ipython: Any) -> None:
    global _AGENT
    if _AGENT is not None:
        _AGENT.shutdown()  # abort (or drain, per agent.notebook.shutdown) the running task, then unregister
        _AGENT.close()
        _AGENT = None


def show_panel(target: Agent) -> None:
    """The widget panel, or the HTML card where widgets can't be made (no ipywidgets, no comm)."""
    try:
        display(target.panel())
    except Exception as exc:
        logger.warning("notebook-agent panel unavailable (%s); showing the status card", exc)
        display(HTML(target._repr_html_()))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit the kernel's process
        raise AgentError(f"{message}\n{USAGE}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%agent", add_help=False)
    sub = parser.add_subparsers(dest="command")
    start = sub.add_parser("start", add_help=False)
    start.add_argument("--queue", "--queues", nargs="+", default=None)
    start.add_argument("--gpus", default=None)
    start.add_argument("--cpu-only", action="store_true")
    start.add_argument("--order-fairness", action="store_true")
    start.add_argument("--embedded", action="store_true")
    start.add_argument("--services-mode", type=int, default=None, metavar="N")
    start.add_argument("--uptime", nargs="+", default=None)
    start.add_argument("--downtime", nargs="+", default=None)
    start.add_argument("--gpu-min-free-gb", type=float, default=None, metavar="GB")
    stop = sub.add_parser("stop", add_help=False)
    stop.add_argument("--drain", action="store_true")
    for name in ("status", "pause", "resume", "config", "panel", "help"):
        sub.add_parser(name, add_help=False)
    logs = sub.add_parser("logs", add_help=False)
    logs.add_argument("task_id", nargs="?", default=None)
    logs.add_argument("-n", "--lines", type=int, default=50)
    abort = sub.add_parser("abort", add_help=False)
    abort.add_argument("task_id")
    return parser  # subparsers are _Parsers too (argparse makes them of the parent's class)


@magics_class
class AgentMagics(Magics):
    @line_magic("agent")
    def agent_magic(self, line: str) -> None:
        """Control this kernel's ClearML worker; `%agent help` lists the commands."""
        try:
            self._run(line)
        except AgentError as err:
            print(f"%agent: {err}")

    def _run(self, line: str) -> None:
        try:
            args = _parser().parse_args(shlex.split(line))
        except ValueError as err:
            raise AgentError(str(err)) from None
        target = agent()
        command = args.command or "panel"
        if command == "panel":
            show_panel(target)
        elif command == "help":
            print(USAGE)
        elif command == "status":
            print(target.status())
        elif command == "start":
            if args.embedded:
                target.embedded = True
            modes = {
                name: value
                for name, value in (
                    ("services_mode", args.services_mode),
                    ("uptime", args.uptime),
                    ("downtime", args.downtime),
                    ("gpu_min_free_gb", args.gpu_min_free_gb),
                )
                if value is not None
            }
            target.start(
                args.queue,
                gpus=args.gpus,
                cpu_only=args.cpu_only,
                order_fairness=args.order_fairness,
                **modes,
            )
            for message in target.messages:
                print(message)
            print(f"agent started on {', '.join(target.queues)}; %agent status or %agent to watch it")
        elif command == "stop":
            target.stop(drain=args.drain)
            print("draining: the agent leaves after the running task" if args.drain else "agent stopped")
        elif command == "pause":
            target.pause()
            print("paused: no new task is pulled; the running one goes on")
        elif command == "resume":
            target.resume()
            print("resumed")
        elif command == "logs":
            print(target.logs(args.task_id, lines=args.lines))
        elif command == "abort":
            if not target.abort(args.task_id):
                raise AgentError(f"no running task {args.task_id!r} here (abort others from the ClearML web app)")
            print(f"aborting {args.task_id}")
        elif command == "config":
            print(target.config_text())
