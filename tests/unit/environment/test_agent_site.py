"""System site packages mean the agent's environment when a task venv is made from the agent's own interpreter."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from notebook_agent.environment import ListReporter, agent_site
from notebook_agent.environment.cache_key import cache_key
from notebook_agent.environment.managers import PipManager


def test_only_the_agents_own_interpreter_is_linked(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.setattr(agent_site, "agent_site_dirs", lambda: ["/agent/venv/site-packages"])
    assert agent_site.is_agent_interpreter(sys.executable, env)
    assert agent_site.linked_dirs(sys.executable, True, env) == ["/agent/venv/site-packages"]
    assert agent_site.linked_dirs(sys.executable, False, env) == []
    # The same binary reached from another folder (the base Python of a venv) is another interpreter: its user
    # means that interpreter's packages.
    real = os.path.realpath(sys.executable)
    if os.path.dirname(real) != os.path.dirname(os.path.abspath(sys.executable)):
        assert not agent_site.is_agent_interpreter(real, env)
    assert not agent_site.is_agent_interpreter("no-such-python-here", env)


def test_the_link_is_part_of_the_cache_key(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    reporter = ListReporter()
    inputs = PipManager(env, reporter, sys.executable, system_site_packages=True).cache_key_inputs
    monkeypatch.setattr(agent_site, "agent_site_dirs", lambda: [])
    unlinked = inputs()
    assert "agent_site" not in unlinked
    monkeypatch.setattr(agent_site, "agent_site_dirs", lambda: ["/one/venv/site-packages"])
    one = inputs()
    monkeypatch.setattr(agent_site, "agent_site_dirs", lambda: ["/another/venv/site-packages"])
    another = inputs()
    assert len({cache_key(k, "six\n") for k in (unlinked, one, another)}) == 3


def test_dirs_of_the_running_agent() -> None:
    dirs = agent_site.agent_site_dirs()
    if sys.prefix != sys.base_prefix:
        assert dirs and all(Path(d).resolve().is_relative_to(Path(sys.prefix).resolve()) for d in dirs[:1])
    assert all(d in site.getsitepackages() or d == site.getusersitepackages() for d in dirs)


@pytest.mark.slow
def test_a_linked_venv_sees_the_agents_packages_after_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]
) -> None:
    outer = tmp_path / "agent-site"
    (outer / "only_in_agent_env").mkdir(parents=True)
    (outer / "only_in_agent_env" / "__init__.py").write_text("WHERE = 'agent'\n")
    (outer / "nested.pth").write_text(str(tmp_path / "nested") + "\n")  # the agent env's .pth files work too
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "from_nested_pth.py").write_text("OK = True\n")
    monkeypatch.setattr(agent_site, "agent_site_dirs", lambda: [str(outer)])
    reporter = ListReporter()
    python = PipManager(env, reporter, sys.executable, system_site_packages=True).create_env(tmp_path / "venv")
    assert "the task also sees the agent's environment" in reporter.text
    code = "import only_in_agent_env, from_nested_pth, sys; print(only_in_agent_env.WHERE, from_nested_pth.OK)"
    ran = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["agent", "True"]
    order = subprocess.run(
        [str(python), "-c", "import sys; print('\\n'.join(sys.path))"], capture_output=True, text=True, env=env
    ).stdout.splitlines()
    own = next(i for i, p in enumerate(order) if p.startswith(str(tmp_path / "venv")))
    assert own < order.index(str(outer))  # the task's own packages win
