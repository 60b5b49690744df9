"""TaskProcess: a real child process, its output through the pipes, its tree ended with SIGTERM then SIGKILL."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from notebook_agent.engine.process import OUTPUT, READ_CHUNK, TaskProcess, _widen_pipe

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups and sessions")


class Output:
    """Collects on_output calls; lets a test wait for a condition on them with a deadline."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {OUTPUT: []}
        self.cond = threading.Condition()

    def __call__(self, stream: str, lines: list[str]) -> None:
        with self.cond:
            self.lines[stream].extend(lines)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


def start(code: str, out: Output, tmp_path: Path) -> TaskProcess:
    # -u, as the runner starts tasks: stdout unbuffered, so the lines reach the pipe in the order written.
    proc = TaskProcess([sys.executable, "-u", "-c", code], cwd=tmp_path, env=dict(os.environ), on_output=out)
    proc.start()
    return proc


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting to be reaped (by init, which may not reap in a container)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        threading.Event().wait(0.05)  # poll with a deadline
    return all(gone(pid) for pid in pids)


def test_all_output_delivered_before_wait_returns_exit_code(tmp_path: Path) -> None:
    out = Output()
    code = (
        "import sys\n"
        "for i in range(5000):\n"
        "    print(f'out {i}')\n"
        "    print(f'err {i} ' + 'é' * (i % 5), file=sys.stderr)\n"
        "sys.stdout.write('no newline at the end')\n"
        "sys.exit(3)\n"
    )
    proc = start(code, out, tmp_path)
    assert proc.wait(timeout=30) == 3
    assert proc.poll() == 3
    expected = [line for i in range(5000) for line in (f"out {i}", f"err {i} " + "é" * (i % 5))]
    assert out.lines[OUTPUT] == [*expected, "no newline at the end"]
    assert not proc.terminated_by_us


def test_stdout_and_stderr_keep_the_order_written(tmp_path: Path) -> None:
    """Flushed writes alternating between stdout and stderr arrive as written, run after run (with two pipes read
    by two threads they came out of order in 2 runs of 3)."""
    code = (
        "import sys\n"
        "for i in range(200):\n"
        "    sys.stdout.write(f'out {i}\\n'); sys.stdout.flush()\n"
        "    sys.stderr.write(f'err {i}\\n'); sys.stderr.flush()\n"
    )
    expected = [line for i in range(200) for line in (f"out {i}", f"err {i}")]
    for _ in range(20):
        out = Output()
        proc = TaskProcess([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ), on_output=out)
        proc.start()
        assert proc.wait(timeout=30) == 0
        assert out.lines[OUTPUT] == expected


def test_child_runs_in_its_own_session(tmp_path: Path) -> None:
    out = Output()
    proc = start("import os, time\nprint(os.getsid(0), flush=True)\ntime.sleep(60)\n", out, tmp_path)
    try:
        assert out.wait_for(lambda: bool(out.lines[OUTPUT]))
        assert proc.pid is not None
        assert int(out.lines[OUTPUT][0]) == proc.pid
        assert os.getsid(proc.pid) != os.getsid(0)
        assert os.getpgid(proc.pid) != os.getpgrp()
    finally:
        proc.terminate_tree(grace=1)


def test_terminate_tree_kills_children_that_ignore_sigterm(tmp_path: Path) -> None:
    sleeper = (
        "import os, signal, time\n{setsid}"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "os.write(1, f'{tag} {{os.getpid()}}\\n'.encode())\n"  # one write: atomic on the shared pipe
        "time.sleep(60)\n"
    )
    grandchild = sleeper.format(setsid="", tag="grandchild")
    escaped = sleeper.format(setsid="os.setsid()\n", tag="escaped")  # leaves the task's session and group
    code = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
        f"subprocess.Popen([sys.executable, '-c', {escaped!r}])\n"
        "os.write(1, f'child {os.getpid()}\\n'.encode())\n"
        "time.sleep(60)\n"
    )
    out = Output()
    proc = start(code, out, tmp_path)
    tags = ("child", "grandchild", "escaped")
    try:
        ok = out.wait_for(lambda: {line.split()[0] for line in out.lines[OUTPUT]} >= set(tags), timeout=20)
        assert ok, out.lines
    except BaseException:
        proc.terminate_tree(grace=0)
        raise
    pids = {line.split()[0]: int(line.split()[1]) for line in out.lines[OUTPUT]}
    assert os.getsid(pids["escaped"]) == pids["escaped"]  # it really left the task's session
    started = time.monotonic()
    assert proc.terminate_tree(grace=0.5) == -9
    assert wait_gone(list(pids.values()), timeout=0.5 + 2 - (time.monotonic() - started))
    assert proc.terminated_by_us
    assert proc.wait(timeout=5) == -9  # the readers got EOF: nobody holds the pipes any more
    assert proc.terminate_tree(grace=0.5) == -9  # twice is fine


def test_child_exiting_on_sigterm_returns_promptly(tmp_path: Path) -> None:
    out = Output()
    proc = start("import time\nprint('ready', flush=True)\ntime.sleep(60)\n", out, tmp_path)
    assert out.wait_for(lambda: out.lines[OUTPUT] == ["ready"])
    started = time.monotonic()
    assert proc.terminate_tree(grace=10) == -15
    assert time.monotonic() - started < 3
    assert proc.terminated_by_us
    assert proc.wait(timeout=5) == -15
    assert proc.terminate_tree(grace=10) == -15


def test_terminate_after_exit_is_not_ours(tmp_path: Path) -> None:
    out = Output()
    proc = start("print('bye')", out, tmp_path)
    assert proc.wait(timeout=20) == 0
    assert proc.terminate_tree(grace=1) == 0
    assert not proc.terminated_by_us


def test_failing_callback_does_not_stall_the_child(tmp_path: Path) -> None:
    def broken(stream: str, lines: list[str]) -> None:
        raise RuntimeError("closed")

    proc = TaskProcess(
        [sys.executable, "-c", "print('x' * 1000 + '\\n' * 1000, end='')\n" * 200],
        cwd=tmp_path,
        env=dict(os.environ),
        on_output=broken,
    )
    proc.start()
    assert proc.wait(timeout=20) == 0
    assert isinstance(proc.output_error, RuntimeError)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux only")
def test_pipes_are_widened_on_linux() -> None:
    import fcntl

    read_end, write_end = os.pipe()
    try:
        with os.fdopen(read_end, "rb", closefd=False) as pipe:
            assert _widen_pipe(pipe, READ_CHUNK)
        assert fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) >= READ_CHUNK
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="coalescing needs the widened pipe")
def test_a_flood_of_single_line_writes_arrives_in_order_and_in_few_chunks(tmp_path: Path) -> None:
    calls: list[int] = []
    out = Output()

    def counting(stream: str, lines: list[str]) -> None:
        calls.append(len(lines))
        out(stream, lines)

    code = "import os\nfor i in range(50000):\n    os.write(1, b'line %d\\n' % i)\n"
    proc = TaskProcess([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ), on_output=counting)
    proc.start()
    assert proc.wait(timeout=60) == 0
    assert out.lines[OUTPUT] == [f"line {i}" for i in range(50000)]
    # One write per line; the reader's pause after a short read gathers them (loose: a slow writer means more).
    assert len(calls) <= 50000 / 100, f"{len(calls)} chunks"
