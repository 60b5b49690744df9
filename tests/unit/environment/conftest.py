"""Fixtures for the environment tests: an offline wheel folder, a hermetic environment and one shared venv."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from notebook_agent.environment import ListReporter
from notebook_agent.environment.venv import create_venv
from tests.fakes.wheels import build_wheel

GREETING = "hello from the wheel"


def hermetic_env() -> dict[str, str]:
    """os.environ without pip settings or the user's git config, so the host cannot change what tests see."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONHOME"))}
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "PIP_NO_CACHE_DIR": "1"})
    return env


@pytest.fixture
def env() -> dict[str, str]:
    return hermetic_env()


@pytest.fixture
def reporter() -> ListReporter:
    return ListReporter()


@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels `na-hello` (module na_hello) and `na-extra` (module na_extra), for `--no-index --find-links`."""
    folder = tmp_path_factory.mktemp("wheels")
    build_wheel(folder, "na-hello", "1.0", {"na_hello.py": f"GREETING = {GREETING!r}\n"})
    build_wheel(folder, "na-extra", "2.0", {"na_extra/__init__.py": "EXTRA = 2\n"}, requires=["na-hello>=1.0"])
    return folder


@pytest.fixture(scope="session")
def offline_pip_args(wheel_dir: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(wheel_dir))


@pytest.fixture(scope="module")
def shared_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One virtualenv per test module (creating one takes seconds); tests that install into it must not clash."""
    return create_venv(tmp_path_factory.mktemp("venv") / "venv", env=hermetic_env(), reporter=ListReporter())


def run_lines(reporter: ListReporter) -> list[str]:
    """The commands a reporter saw (`$ ...` lines)."""
    return [line for line in reporter.lines if line.startswith("$ ")]
