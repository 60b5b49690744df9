"""The notebook unit tests and the quickstart again under ipywidgets 7.7 (what Colab runs), in the interpreter named by
NOTEBOOK_AGENT_IPYWIDGETS7_PYTHON (a venv with `ipywidgets==7.7.*` and this package installed; CI prepares it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

VARIABLE = "NOTEBOOK_AGENT_IPYWIDGETS7_PYTHON"
ROOT = Path(__file__).resolve().parents[3]
SELF = "tests/unit/notebook/test_ipywidgets7.py"
QUICKSTART = "tests/integration/notebook/test_notebooks.py::test_quickstart_runs_its_tasks_to_completed"


@pytest.mark.slow
def test_the_notebook_tests_pass_under_ipywidgets_7():
    python = os.environ.get(VARIABLE, "").strip()
    if not python:
        pytest.skip(f"{VARIABLE} is not set: no interpreter with ipywidgets 7.7 to run the notebook tests under")
    version = subprocess.run(
        [python, "-c", "import ipywidgets; print(ipywidgets.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert version.returncode == 0, f"{python} cannot import ipywidgets:\n{version.stderr[-2000:]}"
    assert version.stdout.strip().startswith("7."), f"{python} has ipywidgets {version.stdout.strip()}, not 7.x"
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}  # the inner run skips this test
    run = subprocess.run(
        # The widget tests, and the quickstart notebook in a kernel of that interpreter (its widgets are 7.7's).
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/notebook", QUICKSTART, f"--ignore={SELF}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert " passed" in run.stdout and "skipped" not in run.stdout.splitlines()[-1], run.stdout[-2000:]
    assert run.returncode == 0, f"ipywidgets {version.stdout.strip()}:\n{(run.stdout + run.stderr)[-6000:]}"
