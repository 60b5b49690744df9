"""The agent inside real ipykernel kernels: a notebook interrupt never reaches a task, a restarted kernel reaps the
task the old one left running, and unloading the extension or exiting the kernel stops the task and the worker.

Each kernel is started by jupyter_client's KernelManager, as Jupyter does, with HOME in tmp and the embedded
server's CLEARML_* variables; the tasks are real processes that the agent in the kernel pulls from the server.
"""

from __future__ import annotations

import os
import queue
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client import KernelManager

from notebook_agent.config import ConfigError, load_config
from notebook_agent.engine import task_registry
from notebook_agent.engine.task_registry import KERNEL_OWNER, leftover_reason
from notebook_agent.notebook.agent import SHUTDOWN_REASON, Agent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, process groups and sessions"),
]

TICKS = 40  # a line every 0.2 s: the task runs about 8 s, long enough to interrupt the kernel in the middle
# An idle ipykernel ignores SIGINT, and a child started then inherits that; the task takes SIGINT back (as a
# program started from a shell has it), so only its own session keeps the notebook's interrupt away from it.
TICKER = f"""
import signal, time
signal.signal(signal.SIGINT, signal.default_int_handler)
for i in range({TICKS}):
    print(f"tick {{i}}", flush=True)
    time.sleep(0.2)
print("ticker done", flush=True)
"""
# Prints once, then only sleeps: after its kernel died nothing reads its pipes, and a print would kill it.
SLEEPER = """
import time
print("sleeper started", flush=True)
time.sleep(120)
"""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    ticker = threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        ticker.wait(0.1)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Kernel:
    """One ipykernel kernel and a blocking client; `run` executes a cell and returns its stdout."""

    def __init__(self, env: dict[str, str], cwd: Path, connection_file: Path) -> None:
        self.km = KernelManager(kernel_name="python3", connection_file=str(connection_file))
        self.km.shutdown_wait_time = 30.0  # a graceful exit stops the worker first
        self.km.start_kernel(env=env, cwd=str(cwd))
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 60.0) -> str:
        out: list[str] = []

        def collect(msg: dict) -> None:
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])

        reply = self.kc.execute_interactive(textwrap.dedent(code), timeout=timeout, output_hook=collect)
        content = reply["content"]
        assert content["status"] == "ok", "\n".join(content.get("traceback") or [str(content)])
        return "".join(out)

    def wait_stdout(self, msg_id: str, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"cell {msg_id} printed no {text!r} within {timeout} s") from None
            ours = msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream"
            if ours and text in msg["content"]["text"]:
                return

    def wait_reply(self, msg_id: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no reply to cell {msg_id} within {timeout} s") from None
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def restart(self) -> None:
        """What the notebook's restart does when the kernel must go at once: SIGKILL to its process group."""
        self.km.restart_kernel(now=True)
        self.kc.wait_for_ready(timeout=60)

    def close(self) -> None:
        self.kc.stop_channels()
        if self.km.is_alive():
            self.km.shutdown_kernel(now=True)
        self.km.cleanup_resources()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def state_dir(home: Path) -> Path:
    """The agents' worker-id leases and pid files: the default ~/.notebook_agent of the kernel (HOME is tmp), so
    that `%load_ext` finds what an explicitly started Agent wrote."""
    return home / ".notebook_agent"


@pytest.fixture
def kernel(server, agent_config, agent_env, home, state_dir, tmp_path) -> Iterator[Kernel]:
    env = {
        **agent_env,
        **server.client_env(),
        "CLEARML_CONFIG_FILE": str(agent_config.path),  # the server's keys plus our agent section (offline pip)
        "HOME": str(home),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
    }
    started = Kernel(env, tmp_path, tmp_path / "kernel.json")
    try:
        yield started
    finally:
        started.close()
        # Whatever a killed kernel left running goes too (the owner is dead now; the server is not told).
        task_registry.reap(state_dir, lambda _: None, grace=1.0)


def start_agent(kernel: Kernel, state_dir: Path) -> None:
    kernel.run(
        f"""
        from pathlib import Path
        from notebook_agent import Agent
        a = Agent(["default"], state_dir=Path({str(state_dir)!r})).start()
        """
    )


def enqueue(raw, name: str, source: str) -> str:
    task_id = raw.new_task(
        name, script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": source}
    )
    raw.ok("tasks.enqueue", {"task": task_id, "queue": raw.default_queue()})
    return task_id


def task_doc(raw, task_id: str) -> dict:
    return raw.ok("tasks.get_by_id", {"task": task_id})["task"]


def running_record(raw, state_dir: Path, task_id: str) -> task_registry.TaskRecord:
    """Once the task process runs: its pid file, as the runner wrote it."""
    path = task_registry.pid_file(state_dir, task_id)
    record = wait_for(lambda: path.exists() and task_registry.read(path), 90, "the task's pid file")
    assert task_doc(raw, task_id)["status"] == "in_progress"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    return record


def task_log(raw, task_id: str) -> str:
    log = raw.ok("events.get_task_log", {"task": task_id, "batch_size": 1000, "navigate_earlier": False})
    return "\n".join(event["msg"] for event in log["events"])


def worker_ids(raw) -> set[str]:
    return {w["id"] for w in raw.ok("workers.get_all", {})["workers"]}


def test_an_interrupt_of_the_notebook_never_reaches_the_task(kernel, raw, state_dir) -> None:
    start_agent(kernel, state_dir)
    task_id = enqueue(raw, "ticker", TICKER)
    record = running_record(raw, state_dir, task_id)
    kernel_pid = kernel.km.provisioner.pid
    assert record.owner_pid == kernel_pid and record.sid == record.pid != os.getsid(kernel_pid)
    # A child in the kernel's own process group: the interrupt reaches it, and kills it.
    bystander = int(kernel.run("import subprocess; p = subprocess.Popen(['sleep', '60']); print(p.pid)"))

    cell = kernel.kc.execute("import time; print('sleeping', flush=True); time.sleep(30)")
    kernel.wait_stdout(cell, "sleeping")  # the cell's own code runs: an interrupt now lands in it, not in ipykernel
    kernel.km.interrupt_kernel()  # SIGINT to the kernel's process group, as the notebook's stop button does
    reply = kernel.wait_reply(cell)

    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert kernel.run("p.wait(10); print(p.returncode)").strip() == "-2" and not alive(bystander)
    assert alive(record.pid), "the task must not get the notebook's SIGINT"
    done = wait_for(lambda: (doc := task_doc(raw, task_id))["status"] != "in_progress" and doc, 60, "task end")
    assert done["status"] == "completed", done.get("status_reason")
    assert "ticker done" in task_log(raw, task_id)
    wait_for(lambda: not task_registry.pid_file(state_dir, task_id).exists(), 10, "the pid file removed")


def test_a_restarted_kernel_reaps_the_task_the_old_one_left(kernel, raw, state_dir) -> None:
    start_agent(kernel, state_dir)
    task_id = enqueue(raw, "sleeper", SLEEPER)
    record = running_record(raw, state_dir, task_id)
    wait_for(lambda: "sleeper started" in task_log(raw, task_id), 30, "the task's one line")  # then it only sleeps

    kernel.restart()  # the old kernel is killed; the task, in its own session, lives on as an orphan

    assert alive(record.pid) and not alive(record.owner_pid)
    assert task_doc(raw, task_id)["status"] == "in_progress"
    started = time.monotonic()
    kernel.run("%load_ext notebook_agent")
    assert time.monotonic() - started < 10  # reaping runs in the background

    doc = wait_for(lambda: (doc := task_doc(raw, task_id))["status"] == "stopped" and doc, 30, "the task stopped")
    assert doc["status_reason"] == leftover_reason(KERNEL_OWNER, "stopped")
    wait_for(lambda: not alive(record.pid), 10, "the orphan gone")
    assert not task_registry.pid_file(state_dir, task_id).exists()
    messages = kernel.run("import notebook_agent; print(*notebook_agent.notebook.extension.agent().messages)")
    assert task_id in messages and "was stopped" in messages


def test_unloading_the_extension_stops_the_task_and_the_worker(kernel, raw, state_dir) -> None:
    kernel.run("%load_ext notebook_agent\n%agent start --queue default")
    task_id = enqueue(raw, "sleeper", SLEEPER)
    record = running_record(raw, state_dir, task_id)
    worker_id = task_doc(raw, task_id).get("last_worker") or next(iter(worker_ids(raw)))
    assert worker_id in worker_ids(raw)

    kernel.run("%unload_ext notebook_agent")  # returns once the task was stopped and the worker left

    doc = task_doc(raw, task_id)
    assert doc["status"] == "stopped" and doc["status_reason"] == SHUTDOWN_REASON
    assert worker_id not in worker_ids(raw)
    assert not alive(record.pid) and not task_registry.pid_file(state_dir, task_id).exists()


def test_a_graceful_kernel_exit_stops_the_task(kernel, raw, state_dir) -> None:
    start_agent(kernel, state_dir)
    task_id = enqueue(raw, "sleeper", SLEEPER)
    record = running_record(raw, state_dir, task_id)

    kernel.km.shutdown_kernel(now=False)  # shutdown_request: the kernel exits and runs its atexit hooks

    doc = task_doc(raw, task_id)
    assert doc["status"] == "stopped" and doc["status_reason"] == SHUTDOWN_REASON
    assert worker_ids(raw) == set() and not alive(record.pid)


def test_drain_on_shutdown_waits_for_the_task_up_to_the_timeout(raw, agent_config, agent_env, tmp_path) -> None:
    conf = tmp_path / "drain.conf"
    conf.write_text(agent_config.path.read_text() + "agent { notebook { shutdown: drain, drain_timeout_sec: 1 } }\n")
    agent = Agent(["default"], config=load_config(conf, env={}), env=agent_env, state_dir=tmp_path / "state")
    agent.start()
    try:
        task_id = enqueue(raw, "sleeper", SLEEPER)
        running_record(raw, tmp_path / "state", task_id)
        started = time.monotonic()
        agent.shutdown()  # waits 1 s for the task, then aborts it
        took = time.monotonic() - started
    finally:
        agent.close()
    assert 1.0 <= took < 1.0 + 10.0 + 10.0  # drain timeout, then the task's grace and the last calls at most
    doc = task_doc(raw, task_id)
    assert doc["status"] == "stopped" and doc["status_reason"] == SHUTDOWN_REASON
    assert worker_ids(raw) == set()


def test_the_shutdown_keys_are_checked(tmp_path) -> None:
    assert load_config(tmp_path / "none.conf", env={}).agent("notebook.shutdown") == "abort"
    bad = tmp_path / "bad.conf"
    bad.write_text("agent { notebook { shutdown: later } }\n")
    with pytest.raises(ConfigError, match="abort or drain"):
        load_config(bad, env={})
