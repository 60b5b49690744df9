"""Acceptance: `tasks.stop` from the real SDK's APIClient ends the whole process tree within the grace period."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.integration.engine.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

STUBBORN = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, lambda *_: print("parent ignores SIGTERM", flush=True))
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time\\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\\nwhile True: time.sleep(0.1)"])
    print("PIDS", os.getpid(), child.pid, flush=True)
    while True:
        time.sleep(0.1)
    """
)
GRACE = 2.0


def alive(pid: int) -> bool:
    """Running, not a zombie (PID 1 of a container may never reap an orphan killed with its parent)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_abort_through_tasks_stop_kills_the_tree(raw, run_worker, client_env, tmp_path):
    task_id = raw.new_task(
        "stubborn", script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": STUBBORN}
    )
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})

    def pids():
        events = raw.ok("events.get_task_log", {"task": task_id, "batch_size": 1000, "navigate_earlier": False})
        for event in events["events"]:
            for line in event["msg"].split("\n"):
                if line.startswith("PIDS "):
                    return [int(p) for p in line.split()[1:]]
        return None

    with run_worker([], grace_sec=GRACE) as run:
        tree = wait_for(pids, timeout=120, interval=0.2)
        assert all(alive(p) for p in tree)
        stop = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys\nfrom clearml.backend_api.session.client import APIClient\n"
                "APIClient().tasks.stop(task=sys.argv[1])",
                task_id,
            ],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stop.returncode == 0, stop.stderr
        stopped_at = time.monotonic()
        wait_for(lambda: not any(alive(p) for p in tree), timeout=GRACE + 2.0, interval=0.05)
        gone_after = time.monotonic() - stopped_at
        run.wait()
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "stopped"
    # The abort is seen within half a second, then the grace period, then SIGKILL.
    assert gone_after < GRACE + 2.0


def test_abort_from_the_engine_api(raw, run_worker):
    task_id = raw.new_task(
        "stop me",
        script={
            "binary": "python3",
            "entry_point": "job.py",
            "working_dir": ".",
            "diff": "import time\nprint('RUNNING', flush=True)\ntime.sleep(600)\n",
        },
    )
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})
    with run_worker([], grace_sec=GRACE) as run:
        wait_for(lambda: task_id in (run.worker._runner.running if run.worker._runner else []), timeout=120)
        wait_for(
            lambda: any("RUNNING" in e["msg"] for e in raw.ok("events.get_task_log", {"task": task_id})["events"]),
            timeout=60,
        )
        assert run.worker.abort(task_id)
        run.wait()
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "stopped"
    assert task["status_reason"] == "user abort"
