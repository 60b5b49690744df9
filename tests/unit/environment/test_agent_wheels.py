"""A task that requires clearml gets the agent's own installed copy, repacked into wheels, with no index."""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import zipfile
from pathlib import Path

import pytest

from notebook_agent.environment import ListReporter
from notebook_agent.environment.agent_wheels import AgentPackagesFirst, agent_closure, repack
from notebook_agent.environment.managers import PipManager


def test_closure_follows_installed_dependencies_and_respects_the_specifier() -> None:
    names = {d.metadata["Name"].lower() for d in agent_closure("clearml\n")}
    assert {"clearml", "requests", "pyjwt", "furl"} <= names
    installed = metadata.version("clearml")
    assert agent_closure(f"clearml=={installed}  # pinned\n")
    assert agent_closure("clearml<1.0\n") == []  # the agent's version does not fit: fetch as usual
    assert agent_closure("requests\n-r other.txt\n") == []  # not an agent package
    assert agent_closure("clearml @ https://example.org/clearml.whl\n") == []


def test_repack_makes_an_installable_wheel(tmp_path: Path) -> None:
    dist = metadata.distribution("furl")
    wheel = repack(dist, tmp_path)
    assert wheel.name.startswith(f"furl-{dist.version}-py")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(n.endswith(".dist-info/RECORD") for n in names)
    assert any(n.endswith(".dist-info/WHEEL") for n in names)
    assert not any(n.startswith("../") or n.endswith((".pyc", "INSTALLER", "direct_url.json")) for n in names)
    assert repack(dist, tmp_path) == wheel  # made once


@pytest.mark.slow
def test_clearml_installs_without_an_index(tmp_path: Path, env: dict[str, str]) -> None:
    reporter = ListReporter()
    pip = PipManager(env, reporter, "python3", pip_args=("--no-index",), use_uv=True)
    manager = AgentPackagesFirst(pip, tmp_path / "wheels", reporter)
    python = manager.create_env(tmp_path / "venv")
    manager.install(python, "clearml\n", cwd=tmp_path)
    assert any("from the agent's environment (no download)" in line for line in reporter.lines), reporter.text
    ran = subprocess.run(
        [str(python), "-c", "import clearml, sys; print(clearml.__version__, sys.prefix)"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    version, prefix = ran.stdout.split()
    assert version == metadata.version("clearml")
    assert Path(prefix) == tmp_path / "venv"
    assert manager.cache_key_inputs() == pip.cache_key_inputs()
