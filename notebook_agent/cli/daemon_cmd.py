"""`notebook-agent daemon`: a worker on one or more queues, in the foreground, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NamedTuple

from notebook_agent import api
from notebook_agent.cli.common import ConsolePrinter, connect
from notebook_agent.cli.detach import STOP_REASON, start_detached, stop_daemons
from notebook_agent.cli.docker_args import add_docker_arguments
from notebook_agent.config import Config
from notebook_agent.engine import task_registry
from notebook_agent.engine.connection_errors import explain_api_error, retry_budget
from notebook_agent.engine.events import EventBus
from notebook_agent.engine.gpu_allocator import GpuAllocator
from notebook_agent.engine.gpus import looks_like_queue_gpus, nvml_gpu_ids, parse_gpus, parse_queue_gpus
from notebook_agent.engine.queue_lookup import QueueNotFoundError
from notebook_agent.engine.schedule import Schedule, ScheduleError
from notebook_agent.engine.worker import STATE_DIR, Worker, WorkerOptions
from notebook_agent.monitor.nvml import GpuMonitor

_DESCRIPTION = """\
Register a worker with the ClearML server and run the tasks enqueued on its queues, one at a time (or side by
side with --services-mode or --dynamic-gpus), until Ctrl-C or SIGTERM. With no server configured (clearml.conf or
CLEARML_API_HOST and keys) it starts the embedded server.

examples:
  notebook-agent daemon --queue high low            # high first, then low
  notebook-agent daemon --queue default --gpus 0,1  # the tasks see GPUs 0 and 1
  notebook-agent daemon --queue services --services-mode 4
  notebook-agent daemon --queue default --detached  # in the background; stop with: notebook-agent daemon --stop
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "daemon",
        help="pull tasks from ClearML queues and run them (like clearml-agent daemon)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--queue",
        nargs="+",
        default=[],
        metavar="Q",
        help="queue names or ids, highest priority first; with --dynamic-gpus name=N or name=min-max GPUs each",
    )
    p.add_argument("--order-fairness", action="store_true", help="round-robin over the queues instead of priority")
    p.add_argument("--gpus", default=None, help="GPUs for the tasks: 0,1, 0-3, all, MIG slices 0:1, or UUIDs")
    p.add_argument(
        "--dynamic-gpus",
        action="store_true",
        help="tasks side by side, each on the GPUs its queue asks for (--gpus 0-7 --queue quad=4 dual=2 opp=1-4)",
    )
    p.add_argument(
        "--services-mode",
        nargs="?",
        type=_services_limit,
        const=0,
        default=None,
        metavar="N",
        help="launch each task and go on pulling, at most N tasks at once (no limit without N); the tasks see no "
        "GPU unless --gpus names some",
    )
    p.add_argument(
        "--gpu-min-free-gb",
        type=float,
        default=None,
        metavar="GB",
        help="pull only while the GPUs have this much free memory (GiB); overrides agent.gpu_min_free_memory_gb",
    )
    p.add_argument("--cpu-only", action="store_true", help="hide every GPU from the tasks")
    p.add_argument("--create-queue", action="store_true", help="create queues that do not exist")
    p.add_argument(
        "--abort-grace-sec", type=float, default=10.0, help="after SIGTERM, seconds an aborted task gets before SIGKILL"
    )
    p.add_argument(
        "--uptime",
        nargs="+",
        default=None,
        metavar="ENTRY",
        help='working hours as "<hours> <days>", e.g. "17-20 SUN-TUE" "13-22 WED"; overrides agent.uptime',
    )
    p.add_argument(
        "--downtime",
        nargs="+",
        default=None,
        metavar="ENTRY",
        help='hours without pulling, e.g. "0-8 SAT,SUN"; overrides agent.downtime (use one of --uptime/--downtime)',
    )
    p.add_argument("--foreground", action="store_true", help="accepted for clearml-agent compatibility (always on)")
    p.add_argument(
        "--detached",
        action="store_true",
        help=f"run in the background (pid file and log in {STATE_DIR / 'daemons'}); stop it with --stop",
    )
    p.add_argument(
        "--stop",
        action="store_true",
        help="stop the daemons started with --detached (their running tasks are reported stopped)",
    )
    add_docker_arguments(p)
    p.set_defaults(func=run)


class GpuPlan(NamedTuple):
    """The GPU side of the command line, checked: what goes into WorkerOptions."""

    queues: list[str]  # names without their `=N`
    gpus: str | None  # the parsed ids as a comma list (`0-3` -> `0,1,2,3`), None for no selection
    dynamic_gpus: bool
    queue_gpus: dict[str, tuple[int, int]]  # dynamic mode: queue -> (min, max) GPUs
    gpu_min_free_gb: float | None


def _services_limit(text: str) -> int:
    """--services-mode N: a positive task count (argparse turns the ValueError into a usage error)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def gpu_plan(args: argparse.Namespace, available: Sequence[str] | int | None) -> GpuPlan:
    """Check --gpus, --cpu-only, --dynamic-gpus, `--queue name=N` and --gpu-min-free-gb together, against the GPUs
    that exist (`available`: NVML's ids, or None when unknown). A ValueError says what is wrong."""
    if args.gpus and args.cpu_only:
        raise ValueError("--gpus and --cpu-only exclude each other")
    if args.dynamic_gpus and getattr(args, "services_mode", None) is not None:
        raise ValueError("--dynamic-gpus and --services-mode exclude each other")
    if args.dynamic_gpus and args.cpu_only:
        raise ValueError("--dynamic-gpus and --cpu-only exclude each other")
    if args.gpu_min_free_gb is not None and args.gpu_min_free_gb < 0:
        raise ValueError(f"--gpu-min-free-gb {args.gpu_min_free_gb:g}: give 0 (off) or more GiB")
    gpus = parse_gpus(args.gpus, available) if args.gpus else []
    if not args.dynamic_gpus:
        for queue in args.queue:
            if looks_like_queue_gpus(queue):
                raise ValueError(f"--queue {queue}: a GPU count per queue needs --dynamic-gpus")
        return GpuPlan(list(args.queue), ",".join(gpus) or None, False, {}, args.gpu_min_free_gb)
    if not gpus:
        raise ValueError("--dynamic-gpus needs the GPUs to share out, e.g. --gpus 0-7")
    if not args.queue:
        raise ValueError("--dynamic-gpus needs queues with GPU counts, e.g. --queue quad_gpu=4 dual_gpu=2")
    needs = [parse_queue_gpus(queue) for queue in args.queue]
    GpuAllocator(gpus, needs)  # the loop's own checks: a queue needing more GPUs than given, a queue twice
    queue_gpus = {need.queue: (need.min, need.max) for need in needs}
    return GpuPlan([need.queue for need in needs], ",".join(gpus), True, queue_gpus, args.gpu_min_free_gb)


def _nvml_gpu_ids() -> list[str] | None:
    monitor = GpuMonitor()
    try:
        return nvml_gpu_ids(monitor)
    finally:
        monitor.close()


def run(args: argparse.Namespace) -> int:
    if args.stop:
        return _stop_detached()
    try:
        # NVML is asked only when GPUs are named: `all` needs the list, and ids are checked against it.
        plan = gpu_plan(args, _nvml_gpu_ids() if args.gpus else None)
    except ValueError as err:
        print(f"notebook-agent daemon: {err}", file=sys.stderr)
        return 2
    if args.uptime and args.downtime:
        print(
            "notebook-agent daemon: --uptime and --downtime exclude each other; give the working hours "
            '(--uptime "8-18 MON-FRI") or the hours off (--downtime "18-8 MON-FRI")',
            file=sys.stderr,
        )
        return 2
    try:
        Schedule.parse(args.uptime, args.downtime)  # report a bad entry before connecting
    except ScheduleError as err:
        print(f"notebook-agent daemon: {err}", file=sys.stderr)
        return 2
    if args.detached:
        return _detach(args)
    config, server = connect(sys.stdout)
    bus = EventBus()
    printer = ConsolePrinter(bus)
    options = WorkerOptions(
        queues=plan.queues,
        order_fairness=args.order_fairness,
        create_queue=args.create_queue,
        gpus=plan.gpus,
        # As clearml-agent, services mode hides the GPUs from its tasks, unless --gpus names some to share.
        cpu_only=args.cpu_only or (args.services_mode is not None and not args.gpus),
        dynamic_gpus=plan.dynamic_gpus,
        queue_gpus=plan.queue_gpus,
        services_mode=args.services_mode,
        gpu_min_free_gb=plan.gpu_min_free_gb,
        grace_sec=args.abort_grace_sec,
        uptime=args.uptime,
        downtime=args.downtime,
        docker=args.docker,
        force_current_version=args.force_current_version,
    )
    # The configured retry budget: an unreachable server is reported in seconds rather than after a minute.
    session = api.Session.from_config(config.api, retry_total_seconds=retry_budget(config))
    worker = Worker(config, options, bus=bus, session=session)
    # SIGTERM (`daemon --stop`, a service manager): abort the running tasks, reported `stopped` with this reason.
    signal.signal(signal.SIGTERM, lambda *_: worker.stop(drain=False, reason=STOP_REASON))
    threading.Thread(target=_deliver_leftovers, args=(config,), name="notebook-agent-reaper", daemon=True).start()
    try:
        worker.run()
    except (QueueNotFoundError, ScheduleError, NotImplementedError) as err:
        print(f"notebook-agent daemon: {err}", file=sys.stderr)
        return 2
    except api.APIError as err:  # wrong credentials, an unreachable server: say which and how to fix it
        print(f"notebook-agent daemon: {explain_api_error(err, config)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        worker.stop(drain=False)
    finally:
        printer.close()
        session.close()
        if server is not None:
            server.stop()
    return 0


def _deliver_leftovers(config: Config) -> None:
    """What an earlier agent left behind (log lines, final statuses, orphaned tasks) goes to the server now."""
    try:
        for item in task_registry.reap(STATE_DIR, task_registry.session_factory([config.api])):
            print(f"notebook-agent: {item.message()}", flush=True)
    except Exception:  # a background thread: say it, never take the daemon down
        logging.getLogger(__name__).exception("delivering what an earlier agent left failed")


def _detach(args: argparse.Namespace) -> int:
    """Start this same command without --detached in the background (its arguments were checked above)."""
    typed = list(getattr(args, "argv", None) or sys.argv[1:])
    daemon_args = typed[typed.index("daemon") + 1 :] if "daemon" in typed else typed
    pid = start_detached([a for a in daemon_args if a != "--detached"], STATE_DIR)
    print(f"notebook-agent daemon running in the background (pid {pid}); stop it with: notebook-agent daemon --stop")
    return 0


def _stop_detached() -> int:
    stopped, running = stop_daemons(STATE_DIR)
    for pid in stopped:
        print(f"stopped notebook-agent daemon (pid {pid})")
    for pid in running:
        print(f"notebook-agent daemon (pid {pid}) is still running; try again or kill it", file=sys.stderr)
    if not stopped and not running:
        print("no detached notebook-agent daemon is running")
    return 1 if running else 0
