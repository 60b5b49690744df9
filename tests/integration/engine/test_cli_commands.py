"""`notebook-agent submit`, `execute` and `daemon` against the embedded server, as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notebook_agent", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def env(client_env, agent_env):
    return {**agent_env, **{k: v for k, v in client_env.items() if k.startswith("CLEARML_")}}


def test_submit_then_execute_reports_the_exit_code(env, raw, tmp_path):
    good = tmp_path / "good.py"
    good.write_text("print('submitted and executed')\n")
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nprint('about to fail')\nsys.exit(3)\n")
    submitted = cli(env, "submit", "--script", str(good), "--project", "cli tests", "--name", "good one")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "queued" and task["name"] == "good one"

    executed = cli(env, "execute", "--id", task_id)
    assert executed.returncode == 0, executed.stdout + executed.stderr
    assert "submitted and executed" in executed.stdout
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "completed"
    assert not raw.ok("queues.get_by_id", {"queue": raw.default_queue()})["queue"]["entries"]
    assert task["last_worker"].split(":")[-1].isdigit()  # standalone worker id host:pid

    failing = cli(env, "submit", "--script", str(bad)).stdout.strip()
    clone = cli(env, "execute", "--id", failing, "--clone")
    assert clone.returncode == 3, clone.stdout + clone.stderr
    assert raw.ok("tasks.get_by_id", {"task": failing})["task"]["status"] == "queued"  # the original waits on


def test_bad_input_gets_clear_errors(env, tmp_path):
    unknown = cli(env, "daemon", "--queue", "no-such-queue", timeout=60)
    assert unknown.returncode == 2
    assert "no-such-queue" in unknown.stderr and "--create-queue" in unknown.stderr
    assert cli(env, "submit", "--repo", str(tmp_path)).returncode == 2
    assert cli(env, "daemon", "--gpus", "0", "--cpu-only").returncode == 2
    missing = cli(env, "execute", "--id", "f" * 32)
    assert missing.returncode == 2 and "Invalid task id" in missing.stderr


def test_build_prepares_the_environment_without_running(env, raw, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import demo_dep\nprint(demo_dep.VALUE)\n")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("demo-dep==1.0\n")
    task_id = cli(env, "submit", "--script", str(script), "--requirements", str(requirements)).stdout.strip()
    target = tmp_path / "built"
    built = cli(env, "build", "--id", task_id, "--target", str(target))
    assert built.returncode == 0, built.stdout + built.stderr
    assert "environment ready" in built.stdout
    python = target / "venv" / "bin" / "python"
    ran = subprocess.run([str(python), "job.py"], cwd=target / "code", capture_output=True, text=True, timeout=60)
    assert ran.stdout.strip() == "demo-dep says 42"
    assert raw.ok("tasks.get_by_id", {"task": task_id})["task"]["status"] == "queued"  # built, not run
