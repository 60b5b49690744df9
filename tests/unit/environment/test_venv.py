"""create_venv, install_requirements and freeze with real virtualenvs and offline wheels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from notebook_agent.environment import EnvironmentSetupError, ListReporter
from notebook_agent.environment.venv import freeze, install_requirements
from tests.unit.environment.conftest import GREETING, run_lines


def test_venv_is_isolated_and_uses_the_given_python(shared_venv: Path, env: dict[str, str]) -> None:
    out = subprocess.run(
        [str(shared_venv), "-c", "import sys; print(sys.prefix != sys.base_prefix, sys.version_info[:2])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == f"True {tuple(sys.version_info[:2])}"


def test_install_from_a_local_wheel_and_freeze(
    shared_venv: Path, env: dict[str, str], reporter: ListReporter, offline_pip_args: tuple[str, ...]
) -> None:
    install_requirements(shared_venv, "na-hello==1.0\n", env=env, reporter=reporter, pip_args=offline_pip_args)
    assert run_lines(reporter)[0].startswith(f"$ {shared_venv} -m pip install --disable-pip-version-check")
    assert any("Successfully installed na-hello-1.0" in line for line in reporter.lines)
    assert "na-hello==1.0" in freeze(shared_venv, env=env)
    out = subprocess.run(
        [str(shared_venv), "-c", "import na_hello; print(na_hello.GREETING)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == GREETING


def test_requirement_lines_pass_through_to_pip(
    shared_venv: Path, tmp_path: Path, env: dict[str, str], reporter: ListReporter, offline_pip_args: tuple[str, ...]
) -> None:
    # -r resolves next to the requirements text, which is written into cwd; options and comments go to pip.
    (tmp_path / "other.txt").write_text("na-extra==2.0\n")
    text = f"# a comment\n\n--find-links {offline_pip_args[-1]}\n-r other.txt\n"
    install_requirements(shared_venv, text, env=env, reporter=reporter, pip_args=("--no-index",), cwd=tmp_path)
    assert "na-extra==2.0" in freeze(shared_venv, env=env)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]  # the temporary file is gone


def test_empty_requirements_install_nothing(shared_venv: Path, env: dict[str, str], reporter: ListReporter) -> None:
    install_requirements(shared_venv, " \n\n", env=env, reporter=reporter)
    assert run_lines(reporter) == []


def test_missing_requirement(
    shared_venv: Path, env: dict[str, str], reporter: ListReporter, offline_pip_args: tuple[str, ...]
) -> None:
    with pytest.raises(EnvironmentSetupError) as info:
        install_requirements(shared_venv, "nosuchpkg==1.0", env=env, reporter=reporter, pip_args=offline_pip_args)
    assert info.value.reason == "pip install failed: No matching distribution found for nosuchpkg==1.0"
    assert "Could not find a version that satisfies the requirement nosuchpkg==1.0" in info.value.detail
