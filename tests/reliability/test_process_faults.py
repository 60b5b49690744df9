"""Task process faults through a real worker: a task killed by a signal (or by the OOM killer) is `failed` with the
signal's name in its status_reason and log; a task that ignores SIGTERM and forks (a grandchild in its own
session) is gone, whole tree, right after the grace period of an abort from the server."""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path

import pytest

from notebook_agent.engine import exit_status
from notebook_agent.engine.exit_status import ExitStatus, OomCounter, locate_oom_file, read_oom_kills
from tests.reliability.harness import any_alive, task_log_lines, task_status, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

GRACE = 1.0
MEMORY_EVENTS = "low 0\nhigh 0\nmax 2\noom 1\noom_kill {count}\noom_group_kill 0\n"


def _enqueue(raw, name: str, code: str) -> str:
    script = {"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": textwrap.dedent(code)}
    task_id = raw.new_task(name, script=script)
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})
    return task_id


def _fake_oom_counter(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """New task processes read their cgroup's OOM-kill count from `path` (the seam the kernel's file stands behind)."""
    monkeypatch.setattr(exit_status, "oom_counter_factory", lambda: OomCounter(path))


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL, signal.SIGABRT], ids=lambda s: s.name)
def test_a_task_killed_by_a_signal_is_failed_with_the_signal_name(raw, run_worker, monkeypatch, tmp_path, sig):
    events = tmp_path / "memory.events"
    events.write_text(MEMORY_EVENTS.format(count=4))  # kills before the task are not the task's
    _fake_oom_counter(monkeypatch, events)
    task_id = _enqueue(
        raw,
        f"killed by {sig.name}",
        f"""
        import os, signal
        print("about to die", flush=True)
        os.kill(os.getpid(), signal.{sig.name})
        print("never printed", flush=True)
        """,
    )
    with run_worker([]) as run:
        run.wait(60)
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    how = f"killed by signal {sig.name} (exit code -{int(sig)})"
    assert (task["status"], task["status_reason"]) == ("failed", f"worker execution {how}")
    lines = task_log_lines(raw, task_id)
    assert lines.count("about to die") == 1 and "never printed" not in lines
    assert f"Process failed, {how}" in lines


def test_an_oom_kill_is_named_as_such(raw, run_worker, monkeypatch, tmp_path):
    events = tmp_path / "memory.events"
    events.write_text(MEMORY_EVENTS.format(count=0))
    _fake_oom_counter(monkeypatch, events)
    # The task plays the kernel: it counts one more OOM kill in the cgroup, then takes the OOM killer's SIGKILL.
    task_id = _enqueue(
        raw,
        "out of memory",
        f"""
        import os, signal
        from pathlib import Path
        Path({str(events)!r}).write_text({MEMORY_EVENTS.format(count=1)!r})
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    with run_worker([]) as run:
        run.wait(60)
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    how = "killed by the out-of-memory killer (SIGKILL), exit code -9"
    assert (task["status"], task["status_reason"]) == ("failed", f"worker execution {how}")
    assert f"Process failed, {how}" in task_log_lines(raw, task_id)


def test_a_task_failing_after_its_child_was_oom_killed_says_so(raw, run_worker, monkeypatch, tmp_path):
    events = tmp_path / "memory.events"
    events.write_text(MEMORY_EVENTS.format(count=0))
    _fake_oom_counter(monkeypatch, events)
    # A data loader worker killed for memory: the OOM killer counts a kill, the task itself fails with exit code 1.
    task_id = _enqueue(
        raw,
        "child out of memory",
        f"""
        import subprocess, sys
        from pathlib import Path
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        Path({str(events)!r}).write_text({MEMORY_EVENTS.format(count=1)!r})
        child.kill()
        sys.exit(f"worker exited unexpectedly: {{child.wait()}}")
        """,
    )
    with run_worker([]) as run:
        run.wait(60)
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    how = "exit code 1; the out-of-memory killer ended a process in its cgroup meanwhile"
    assert (task["status"], task["status_reason"]) == ("failed", f"worker execution {how}")


def test_an_unreadable_oom_count_never_claims_oom(raw, run_worker, monkeypatch, tmp_path):
    _fake_oom_counter(monkeypatch, tmp_path / "no-such-cgroup" / "memory.events")
    task_id = _enqueue(raw, "plain sigkill", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    with run_worker([]) as run:
        run.wait(60)
    reason = raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status_reason"]
    assert reason == "worker execution killed by signal SIGKILL (exit code -9)"


def test_exit_descriptions_and_cgroup_files(tmp_path):
    assert ExitStatus(3).describe() == "exit code 3"
    assert ExitStatus(-9, oom_killed=False).describe() == "killed by signal SIGKILL (exit code -9)"
    assert ExitStatus(-9, oom_killed=None).describe() == "killed by signal SIGKILL (exit code -9)"
    assert ExitStatus(-15, oom_killed=True).describe() == "killed by signal SIGTERM (exit code -15)"  # only SIGKILL
    assert ExitStatus(-77).describe() == "killed by signal signal 77 (exit code -77)"
    assert ExitStatus(1, oom_killed=True).describe() == (
        "exit code 1; the out-of-memory killer ended a process in its cgroup meanwhile"
    )
    assert OomCounter.for_this_process().read() is None or OomCounter.for_this_process().read() >= 0  # this host
    # cgroup v2: /proc/self/cgroup "0::/a/b"; the hierarchy mounted at the container's own cgroup (no a/b inside).
    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    proc.write_text("0::/a/b\n")
    root.mkdir()
    (root / "memory.events").write_text(MEMORY_EVENTS.format(count=7))
    assert locate_oom_file(root, proc) == root / "memory.events"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "memory.events").write_text(MEMORY_EVENTS.format(count=2))
    assert read_oom_kills(locate_oom_file(root, proc)) == 2
    # cgroup v1: the memory controller's memory.oom_control (oom_kill since Linux 4.13).
    proc.write_text("4:memory:/x\n0::/\n")
    (root / "memory.events").unlink()
    (root / "memory" / "x").mkdir(parents=True)
    (root / "memory" / "x" / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    assert read_oom_kills(locate_oom_file(root, proc)) == 5
    (root / "memory" / "x" / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")  # old kernel
    assert locate_oom_file(root, proc) is None
    assert locate_oom_file(root, tmp_path / "missing") is None


# Each pid goes out in one write(2): under `python -u` a print() of several parts may interleave with a sibling's.
STUBBORN_TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
LEAF = (
    "import os, signal, time\\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "os.write(1, b'PID %d\\\\n' % os.getpid())\\n"
    "while True: time.sleep(0.1)\\n"
)
# A child that forks a grandchild in a new session (setsid), both ignoring SIGTERM like their parent.
MIDDLE = (
    "import os, signal, subprocess, sys, time\\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "os.write(1, b'PID %d\\\\n' % os.getpid())\\n"
    f"subprocess.Popen([sys.executable, '-c', {LEAF!r}], start_new_session=True)\\n"
    f"subprocess.Popen([sys.executable, '-c', {LEAF!r}])\\n"
    "while True: time.sleep(0.1)\\n"
)
os.write(1, b"PID %d\\n" % os.getpid())
for _ in range(2):
    subprocess.Popen([sys.executable, "-c", MIDDLE])
while True:
    time.sleep(0.1)
"""


def _pids(raw, task_id: str) -> list[int]:
    return [int(line.split()[1]) for line in task_log_lines(raw, task_id) if line.startswith("PID ")]


def test_an_abort_ends_a_stubborn_forking_tree_after_the_grace(raw, run_worker):
    task_id = _enqueue(raw, "stubborn tree", STUBBORN_TREE)
    with run_worker([], grace_sec=GRACE) as run:
        # 1 parent + 2 children + 2 x 2 grandchildren (one of each pair in its own session)
        try:
            pids = wait_until(lambda: len(p := _pids(raw, task_id)) == 7 and p, 60, what="7 pids in the log")
        except AssertionError:
            raise AssertionError("7 pids never reached the log:\n" + "\n".join(task_log_lines(raw, task_id))) from None
        assert any_alive(pids) == pids
        raw.ok("tasks.stop", {"task": task_id})
        stopped_at = time.monotonic()
        wait_until(lambda: not any_alive(pids), GRACE + 3.0, what="the whole tree to end")
        gone_after = time.monotonic() - stopped_at
        run.wait(30)
    assert task_status(raw, task_id) == "stopped"
    assert raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status_reason"] == "task was stopped by tasks.stop"
    # The abort is seen within the watch's poll (0.5 s), then the grace, then SIGKILL.
    assert GRACE <= gone_after < GRACE + 2.0
