"""Acceptance: an agent installed in a venv runs a task that requires `clearml`, with system site packages on and
off, and the task's SDK is the agent's (not the base Python's, which may have none or another).

The agent's venv is made here as a user makes one: virtualenv from this interpreter, clearml (and what it needs)
installed into it for real from wheels repacked from this interpreter, offline; the rest of the agent's packages
reach it through a .pth, since they are not what the test is about.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from notebook_agent.environment.agent_wheels import agent_closure, repack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TASK = textwrap.dedent(
    """
    import sys
    import clearml
    from clearml import Task
    task = Task.init(project_name="agent from venv", task_name="needs clearml", auto_connect_frameworks=False,
                     auto_resource_monitoring=False)
    print("ATTACHED", task.id)
    print("CLEARML", clearml.__file__)
    print("PREFIX", sys.prefix)
    """
)


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("agent-venv")
    venv = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "virtualenv", "--no-download", "--no-periodic-update", "-q", str(venv)], check=True
    )
    python = venv / "bin" / "python"
    wheels = root / "wheels"
    closure = agent_closure("clearml\n")
    for dist in closure:
        repack(dist, wheels)
    pins = [f"{d.metadata['Name']}=={d.version}" for d in closure]
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels), *pins],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    # notebook_agent and its other dependencies: this interpreter's site dirs and the checkout, after the venv's own.
    here = [*site.getsitepackages(), str(Path(__file__).resolve().parents[3])]
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "zz_test_outer.pth").write_text(
        "".join(f"import site; site.addsitedir({d!r})\n" for d in here), encoding="utf-8"
    )
    return venv


def _sdk_create(client_env: dict[str, str], folder: Path) -> str:
    (folder / "needs_clearml.py").write_text(TASK)
    code = textwrap.dedent(
        """
        from clearml import Task
        task = Task.create(project_name="agent from venv", task_name="needs clearml", script="needs_clearml.py",
                           add_task_init_call=False, packages=["clearml"])
        print("ID", task.id)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, env=client_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("ID "))


@pytest.mark.parametrize("system_site_packages", [True, False], ids=["system-site-on", "system-site-off"])
def test_an_agent_in_a_venv_gives_the_task_its_own_clearml(
    system_site_packages, agent_venv, server, raw, client_env, agent_env, tmp_path
):
    task_id = _sdk_create(client_env, tmp_path)
    conf = tmp_path / "agent.conf"
    conf.write_text(
        server.config_file.read_text()
        + "agent {\n"
        + f"  package_manager {{ system_site_packages: {json.dumps(system_site_packages)} }}\n"
        + f'  venvs_cache {{ path: "{tmp_path / "venvs-cache"}" }}\n'
        + "}\n"
    )
    env = {**agent_env, "CLEARML_CONFIG_FILE": str(conf), "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [str(agent_venv / "bin" / "python"), "-m", "notebook_agent", "execute", "--id", task_id],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    task = raw.ok("tasks.get_by_id", {"task": task_id})["task"]
    assert task["status"] == "completed", task["status_reason"]
    events = raw.ok("events.get_task_log", {"task": task_id, "batch_size": 10000, "navigate_earlier": False})
    log = "\n".join(e["msg"] for e in events["events"])
    assert f"ATTACHED {task_id}" in log, log
    clearml_file = Path(next(line.split(" ", 1)[1] for line in log.splitlines() if line.startswith("CLEARML ")))
    prefix = Path(next(line.split(" ", 1)[1] for line in log.splitlines() if line.startswith("PREFIX ")))
    version = metadata.version("clearml")
    if system_site_packages:
        # The agent's venv is what system site packages mean: its clearml, not the base Python's.
        assert clearml_file.is_relative_to(agent_venv.resolve()) or clearml_file.is_relative_to(agent_venv), log
        assert "the task also sees the agent's environment" in log
        assert f"clearml {version} already visible through system site packages" in log
    else:
        # Installed into the task's own environment from the agent's copy, without an index.
        assert not clearml_file.is_relative_to(agent_venv), log
        assert clearml_file.resolve().is_relative_to((tmp_path / "venvs-cache").resolve()) or (
            clearml_file.is_relative_to(prefix)
        ), log
        assert "from the agent's environment (no download)" in log
    assert not clearml_file.is_relative_to(Path(sys.base_prefix)), log
