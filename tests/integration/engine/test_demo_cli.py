"""Acceptance: `notebook-agent demo` on a fresh machine exits 0 and prints the sample task's output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_demo_runs_the_sample_task(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env["HOME"] = str(tmp_path)  # a fresh ~: no clearml.conf, no embedded server data yet
    done = subprocess.run(
        [sys.executable, "-m", "notebook_agent", "demo"], env=env, capture_output=True, text=True, timeout=200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "started the embedded server" in out
    assert "hello from a task run by notebook-agent" in out
    assert "result: 46 primes below 200, the largest is 199" in out
    assert "progress 100%" in out and "progress  20%" not in out
    assert "completed in" in out
