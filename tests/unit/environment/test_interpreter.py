"""`script.binary` picks the interpreter: honoured when installed, else ours (if allowed) or a clear error."""

from __future__ import annotations

import os
import sys

import pytest

from notebook_agent.environment import EnvironmentSetupError, ListReporter
from notebook_agent.environment.interpreter import choose_python, installed_pythons, version_of

OURS = f"{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.fixture
def env(tmp_path):
    """PATH with only a python3.X link to this interpreter, and a broken python3.77 (a stale shim)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / f"python{OURS}").symlink_to(sys.executable)
    broken = folder / "python3.77"
    broken.write_text("#!/bin/sh\necho 'python3.77: command not found' >&2\nexit 127\n")
    broken.chmod(0o755)
    return {**os.environ, "PATH": str(folder)}


def test_plain_python_and_our_own_version_take_the_default(env):
    reporter = ListReporter()
    for binary in ("", "python", "python3", f"python{OURS}", f"/usr/bin/python{OURS}"):
        assert (
            choose_python(binary, sys.executable, ignore_requested=False, env=env, reporter=reporter) == sys.executable
        )
    assert reporter.lines == []


def test_a_missing_version_fails_naming_what_is_installed(env):
    assert installed_pythons(env) == {OURS: os.path.join(env["PATH"], f"python{OURS}")}
    assert version_of(os.path.join(env["PATH"], "python3.77"), env) is None
    with pytest.raises(EnvironmentSetupError) as info:
        choose_python("python3.77", sys.executable, ignore_requested=False, env=env, reporter=ListReporter())
    assert info.value.reason.startswith("python3.77 requested by the task (script.binary) is not installed")
    assert f"python{OURS}" in info.value.reason
    assert "ignore_requested_python_version" in info.value.reason


def test_ignoring_the_requested_version_warns_and_uses_ours(env):
    reporter = ListReporter()
    chosen = choose_python("python3.77", sys.executable, ignore_requested=True, env=env, reporter=reporter)
    assert chosen == sys.executable
    assert any(line.startswith("WARNING: the task asks for python3.77") for line in reporter.lines)


def test_an_installed_other_version_is_used(env, tmp_path):
    # Pretend our interpreter is another version by asking for ours while the default reports something else.
    fake_default = tmp_path / "bin" / "python3.76"
    fake_default.write_text("#!/bin/sh\nexit 1\n")
    fake_default.chmod(0o755)
    reporter = ListReporter()
    chosen = choose_python(f"python{OURS}", str(fake_default), ignore_requested=False, env=env, reporter=reporter)
    assert chosen == os.path.join(env["PATH"], f"python{OURS}")
    assert any(line.startswith("using ") for line in reporter.lines)
