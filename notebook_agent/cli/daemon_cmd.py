"""`notebook-agent daemon`: a worker on one or more queues, in the foreground, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys

from notebook_agent.cli.common import ConsolePrinter, connect
from notebook_agent.engine.events import EventBus
from notebook_agent.engine.queue_lookup import QueueNotFoundError
from notebook_agent.engine.worker import Worker, WorkerOptions


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="pull tasks from ClearML queues and run them (like clearml-agent daemon)")
    p.add_argument("--queue", nargs="+", default=[], metavar="Q", help="queue names or ids, highest priority first")
    p.add_argument("--order-fairness", action="store_true", help="round-robin over the queues instead of priority")
    p.add_argument("--gpus", default=None, help="GPUs for the tasks, e.g. 0,1 or 0-3")
    p.add_argument("--cpu-only", action="store_true", help="hide every GPU from the tasks")
    p.add_argument("--create-queue", action="store_true", help="create queues that do not exist")
    p.add_argument(
        "--abort-grace-sec", type=float, default=10.0, help="after SIGTERM, seconds an aborted task gets before SIGKILL"
    )
    p.add_argument("--foreground", action="store_true", help="accepted for clearml-agent compatibility (always on)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.gpus and args.cpu_only:
        print("notebook-agent daemon: --gpus and --cpu-only exclude each other", file=sys.stderr)
        return 2
    config, server = connect(sys.stdout)
    bus = EventBus()
    printer = ConsolePrinter(bus)
    options = WorkerOptions(
        queues=args.queue,
        order_fairness=args.order_fairness,
        create_queue=args.create_queue,
        gpus=args.gpus,
        cpu_only=args.cpu_only,
        grace_sec=args.abort_grace_sec,
    )
    worker = Worker(config, options, bus=bus)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop(drain=False))
    try:
        worker.run()
    except QueueNotFoundError as err:
        print(f"notebook-agent daemon: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        worker.stop(drain=False)
    finally:
        printer.close()
        if server is not None:
            server.stop()
    return 0
