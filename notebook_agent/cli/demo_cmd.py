"""`notebook-agent demo`: on the embedded server, submit the sample task, run it, print its log and result."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from notebook_agent import api
from notebook_agent.cli.common import ConsolePrinter, connect
from notebook_agent.engine.connection_errors import retry_budget
from notebook_agent.engine.events import EventBus, TaskPhase
from notebook_agent.engine.queue_lookup import resolve_queues
from notebook_agent.engine.worker import Worker, WorkerOptions
from notebook_agent.environment.interpreter import sdk_binary

DEMO_QUEUE = "notebook-agent-demo"
DEMO_TASK = Path(__file__).with_name("demo_task.py")


_DESCRIPTION = """\
Start the embedded server, submit a small sample task, run it with an agent and show its log: a check that
everything works on this machine, with no account and no network.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run a sample task end to end on the embedded server",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config, server = connect(sys.stdout, force_embedded=True)
    session = api.Session.from_config(config.api, retry_total_seconds=retry_budget(config))
    bus = EventBus()
    printer = ConsolePrinter(bus)
    try:
        (queue,) = resolve_queues(session, [DEMO_QUEUE], create=True)
        project = api.projects.get_or_create(session, "notebook-agent demo")
        script = {
            "binary": sdk_binary(),
            "entry_point": DEMO_TASK.name,
            "working_dir": ".",
            "diff": DEMO_TASK.read_text(),
        }
        task_id = api.tasks.create(session, "notebook-agent demo task", "training", project=project, script=script)
        api.tasks.enqueue(session, task_id, queue=queue.id)
        print(f"submitted task {task_id} to queue {DEMO_QUEUE}", flush=True)
        started = time.monotonic()
        worker = Worker(config, WorkerOptions(queues=[queue.id], stop_when_idle=True), session=session, bus=bus)
        worker.run()
        elapsed = time.monotonic() - started
        outcome = next((o for o in worker.outcomes if o.task_id == task_id), None)
        log = api.events.get_task_log(session, task_id, batch_size=10000, navigate_earlier=False, order="asc")
        lines = sum(len(e.get("msg", "").splitlines()) for e in log.get("events", []))
        status, _ = api.tasks.get_status(session, task_id)
        print(f"demo task {task_id}: {status} in {elapsed:.1f} s; its log on the server holds {lines} lines")
        return 0 if outcome is not None and outcome.phase is TaskPhase.COMPLETED and status == "completed" else 1
    finally:
        printer.close()
        session.close()
        if server is not None:
            server.stop()
