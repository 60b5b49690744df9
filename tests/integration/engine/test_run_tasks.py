"""Acceptance: queued tasks run end to end; failures before start are precise; order follows the mode."""

from __future__ import annotations

import textwrap

import pytest

from notebook_agent.engine.events import TaskPhase, TaskPhaseChanged
from tests.fakes.gitrepo import make_git_repo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def script_task(raw, name: str, source: str, queue: str, **script) -> str:
    task_id = raw.new_task(
        name, script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": source, **script}
    )
    raw.ok("tasks.enqueue", {"task": task_id, "queue": queue})
    return task_id


def task_log(raw, task_id: str) -> list[str]:
    events = raw.ok("events.get_task_log", {"task": task_id, "batch_size": 10000, "navigate_earlier": False})
    return [line for e in events["events"] for line in e["msg"].split("\n")]


def test_script_task_runs_to_completed(raw, run_worker):
    queue = raw.default_queue()
    task_id = script_task(raw, "no repository", "import sys\nprint('script from the diff field', sys.argv)\n", queue)
    with run_worker([]) as run:
        run.wait()
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "completed", task["status_reason"]
    assert task["status_reason"] == "worker execution done"
    assert task["last_worker"] == run.worker.worker_id
    assert any("script from the diff field" in line for line in task_log(raw, task_id))
    phases = [e.phase for e in run.events if isinstance(e, TaskPhaseChanged)]
    assert phases == [TaskPhase.PULLED, TaskPhase.BUILDING, TaskPhase.RUNNING, TaskPhase.COMPLETED]


def test_failures_before_start_are_precise_and_the_next_task_runs(raw, run_worker, tmp_path):
    queue = raw.default_queue()
    repo = tmp_path / "repo"
    sha = make_git_repo(repo, {"train.py": "print('v1')\n"})
    bad = {
        "git clone failed: repository not found": script_task(
            raw, "bad repo", "", queue, repository=str(tmp_path / "nowhere"), entry_point="train.py"
        ),
        "git apply failed": script_task(
            raw,
            "bad diff",
            "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-not v1\n+v2\n",
            queue,
            repository=str(repo),
            version_num=sha,
            entry_point="train.py",
        ),
        "entry point not found": script_task(
            raw, "no entry", "", queue, repository=str(repo), version_num=sha, entry_point="missing.py"
        ),
        "pip install failed": script_task(
            raw, "bad requirement", "print('never')\n", queue, requirements={"pip": "no-such-package==9.9\n"}
        ),
    }
    good = script_task(raw, "after the failures", "print('still running tasks')\n", queue)
    with run_worker([]) as run:
        run.wait()
    for expected, task_id in bad.items():
        task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
        assert task["status"] == "failed", (expected, task["status"])
        assert expected in task["status_reason"], task["status_reason"]
        assert any("Environment setup failed" in line for line in task_log(raw, task_id))
    reasons = {k: raw.ok("tasks.get_by_id", {"task": v})["task"]["status_reason"] for k, v in bad.items()}
    assert "no-such-package" in reasons["pip install failed"]
    assert "missing.py" in reasons["entry point not found"]
    assert raw.ok("tasks.get_by_id", {"task": good})["task"]["status"] == "completed"


@pytest.mark.parametrize(
    ("fairness", "expected"),
    [(False, ["high 1", "high 2", "low 1", "low 2"]), (True, ["high 1", "low 1", "high 2", "low 2"])],
)
def test_priority_and_fairness_order(raw, run_worker, fairness, expected):
    high = raw.ok("queues.create", {"name": "high-queue"})["id"]
    low = raw.ok("queues.create", {"name": "low-queue"})["id"]
    names = {}
    for queue, label in ((high, "high"), (low, "low")):
        for n in (1, 2):
            names[script_task(raw, f"{label} {n}", "print('ok')\n", queue)] = f"{label} {n}"
    with run_worker(["high-queue", "low-queue"], order_fairness=fairness) as run:
        run.wait()
    ran = [names[o.task_id] for o in run.worker.outcomes]
    assert ran == expected
    assert all(o.phase is TaskPhase.COMPLETED for o in run.worker.outcomes)


def test_200k_lines_with_carriage_returns_arrive_once_in_order(raw, run_worker):
    source = textwrap.dedent(
        """
        import sys
        out = sys.stdout
        for i in range(200_000):
            if i % 1000 == 0:
                out.write(f"progress {i} 10%\\rprogress {i} 50%\\rline {i}\\n")
            else:
                out.write(f"line {i}\\n")
        """
    )
    task_id = script_task(raw, "log flood", source, raw.default_queue())
    with run_worker([]) as run:
        run.wait()
    assert raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "completed"
    lines = []
    cursor = None
    while True:
        query = {"task": task_id, "batch_size": 10000, "navigate_earlier": False, "order": "asc"}
        if cursor is not None:
            query["from_timestamp"] = cursor
        page = raw.ok("events.get_task_log", query)["events"]
        if not page:
            break
        lines += [line for e in page for line in e["msg"].split("\n")]
        cursor = page[-1]["timestamp"]
    task_lines = [line for line in lines if line.startswith("line ")]
    assert task_lines == [f"line {i}" for i in range(200_000)]
    assert not any(line.startswith("progress") for line in lines)


def test_long_polling_worker_picks_up_at_once_and_stops_promptly(raw, agent_config, agent_env, tmp_path):
    import time

    from notebook_agent.api import Session
    from notebook_agent.engine.worker import Worker, WorkerOptions
    from tests.integration.engine.conftest import wait_for

    session = Session.from_config(agent_config.api)
    worker = Worker(agent_config, WorkerOptions(state_dir=tmp_path / "state"), session=session, base_env=agent_env)
    worker.start()
    try:
        wait_for(lambda: worker._long_poll and worker.state.value == "idle", timeout=30)
        worker.pause()
        wait_for(lambda: worker.state.value == "paused", timeout=10)
        task_id = script_task(raw, "while paused", "print('ran after resume')\n", raw.default_queue())
        assert raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "queued"
        worker.resume()
        wait_for(lambda: raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "completed", timeout=60)
    finally:
        started = time.monotonic()
        worker.stop(timeout=30)
        stop_took = time.monotonic() - started
    assert not worker._thread.is_alive()
    assert stop_took < 10  # the pending long poll was ended, not waited out
    assert not any(w["id"] == worker.worker_id for w in raw.ok("workers.get_all", {})["workers"])


def test_setup_shell_script_runs_before_the_build_when_enabled(raw, server, agent_env, tmp_path):
    from notebook_agent.config import load_config
    from tests.integration.engine.conftest import WorkerRun

    conf = tmp_path / "setup.conf"
    conf.write_text(server.config_file.read_text() + "agent { enable_setup_shell_script: true }\n")
    task_id = raw.new_task(
        "with setup",
        script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": "print('task ran')\n"},
        container={"setup_shell_script": "echo prepared-by-setup-script; exit 0"},
    )
    failing = raw.new_task(
        "setup fails",
        script={"binary": "python3", "entry_point": "job.py", "working_dir": ".", "diff": "print('never')\n"},
        container={"setup_shell_script": "echo about to fail; exit 7"},
    )
    for task in (task_id, failing):
        raw.ok("tasks.enqueue", {"task": task, "queue": raw.default_queue()})
    from notebook_agent.engine.worker import WorkerOptions

    options = WorkerOptions(stop_when_idle=True, state_dir=tmp_path / "state")
    with WorkerRun(load_config(conf, env={}), options, agent_env) as run:
        run.wait()
    log = task_log(raw, task_id)
    assert "prepared-by-setup-script" in log and "task ran" in log
    assert log.index("prepared-by-setup-script") < log.index("task ran")
    failed = raw.ok("tasks.get_by_id", {"task": failing})["task"]
    assert failed["status"] == "failed"
    assert failed["status_reason"] == "setup shell script failed with exit code 7"


def test_an_agent_error_fails_the_task_and_the_worker_goes_on(raw, run_worker, monkeypatch):
    import notebook_agent.engine.runner as runner_module

    real = runner_module.TaskProcess
    calls = []

    def broken_then_real(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("cannot start the process")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "TaskProcess", broken_then_real)
    queue = raw.default_queue()
    first = script_task(raw, "start fails", "print('x')\n", queue)
    second = script_task(raw, "runs next", "print('fine')\n", queue)
    with run_worker([]) as run:
        run.wait()
    task = raw.ok("tasks.get_by_id", {"task": first})["task"]
    assert task["status"] == "failed"
    assert task["status_reason"] == "agent error: OSError: cannot start the process"
    assert raw.ok("tasks.get_by_id", {"task": second})["task"]["status"] == "completed"


def test_the_second_task_with_the_same_requirements_is_a_cache_hit(raw, run_worker):
    queue = raw.default_queue()
    source = "import demo_dep\nprint(demo_dep.VALUE)\n"
    first = script_task(raw, "cold", source, queue, requirements={"pip": "demo-dep==1.0\n"})
    second = script_task(raw, "warm", source, queue, requirements={"pip": "# same set\ndemo-dep == 1.0\n"})
    with run_worker([]) as run:
        run.wait()
    for task_id in (first, second):
        assert raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "completed"
        assert "demo-dep says 42" in task_log(raw, task_id)
    assert any(line.startswith("cache miss") for line in task_log(raw, first))
    assert any(line.startswith("cache hit") for line in task_log(raw, second))


def test_stdout_and_stderr_reach_the_task_log_in_the_order_written(raw, run_worker):
    """20 runs of a task alternating flushed writes to stdout and stderr: its log on the server keeps their order."""
    source = textwrap.dedent(
        """
        import sys
        for i in range(50):
            print(f"out {i}", flush=True)
            print(f"err {i}", file=sys.stderr, flush=True)
        """
    )
    queue = raw.default_queue()
    tasks = [script_task(raw, f"ordered output {n}", source, queue) for n in range(20)]
    with run_worker([]) as run:
        run.wait()
    expected = [line for i in range(50) for line in (f"out {i}", f"err {i}")]
    for task_id in tasks:
        task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
        assert task["status"] == "completed", task["status_reason"]
        written = [line for line in task_log(raw, task_id) if line.startswith(("out ", "err "))]
        assert written == expected, task_id
