"""PoetryManager: `poetry install` of a repository's project into the task's venv (never into the interpreter poetry
runs on), offline, and its cache key; finding poetry; falling back to pip."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from notebook_agent.environment import BuildSettings, EnvironmentSetupError, ListReporter, prepare
from notebook_agent.environment.managers import PipManager
from notebook_agent.environment.poetry import PoetryManager, poetry_command
from notebook_agent.environment.selection import select_manager
from tests.fakes.gitrepo import make_git_repo
from tests.unit.environment.conftest import GREETING, hermetic_env, run_lines

# Anything that tries the network fails at once (nothing listens on port 9), except the local index below.
NO_NETWORK = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}
AGENT_POETRY = (sys.executable, "-m", "poetry")
HELLO_WHEEL = "na_hello-1.0-py3-none-any.whl"
NOT_IN_AGENT = "import importlib.util as u; print(u.find_spec('na_hello'), u.find_spec('na_extra'))"


def without_poetry_on(path: str) -> str:
    """PATH less the folders that hold a `poetry` executable (the pyenv shims), so the agent's module is used."""
    return os.pathsep.join(d for d in path.split(os.pathsep) if d and not shutil.which("poetry", path=d))


@pytest.fixture(scope="module")
def poetry_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Hermetic, network off, and poetry's cache, config and data in this module's own folders."""
    home = tmp_path_factory.mktemp("poetry-home")
    env = {**hermetic_env(), **NO_NETWORK}
    env["PATH"] = without_poetry_on(env.get("PATH", ""))
    for name in ("CACHE", "CONFIG", "DATA"):
        env[f"POETRY_{name}_DIR"] = str(home / name.lower())
    return env


def write_project(folder: Path, dependencies: str, *, package: bool = False, extra: str = "") -> Path:
    """A poetry project; `dependencies` are lines of [tool.poetry.dependencies] below `python`."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (
        '[tool.poetry]\nname = "demo"\nversion = "0.1.0"\ndescription = ""\nauthors = []\n'
        + ("" if package else "package-mode = false\n")
        + f'\n[tool.poetry.dependencies]\npython = ">=3.8"\n{dependencies}'
        + extra
    )
    if package:
        text += '\n[build-system]\nrequires = ["poetry-core>=1.0.0"]\nbuild-backend = "poetry.core.masonry.api"\n'
        (folder / "demo").mkdir(exist_ok=True)
        (folder / "demo" / "__init__.py").write_text("WHERE = 'checkout'\n", encoding="utf-8")
    (folder / "pyproject.toml").write_text(text, encoding="utf-8")
    return folder


def path_dependencies(folder: Path, wheel_dir: Path) -> str:
    """Both wheels copied into `folder`/wheels, as path dependencies (poetry.lock pins their hashes)."""
    (folder / "wheels").mkdir(parents=True, exist_ok=True)
    lines = []
    for wheel in sorted(wheel_dir.glob("*.whl")):
        shutil.copy(wheel, folder / "wheels" / wheel.name)
        lines.append(f'{wheel.name.split("-")[0].replace("_", "-")} = {{path = "wheels/{wheel.name}"}}\n')
    return "".join(lines)


def poetry_lock(project: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [*AGENT_POETRY, "lock", "-n"],
        cwd=project,
        # Resolving needs no environment of the project's own: none is created under the test's cache dir.
        env={**env, "POETRY_VIRTUALENVS_CREATE": "false"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "poetry.lock").is_file()


def python_says(python: Path | str, code: str, env: dict[str, str]) -> str:
    result = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def in_agent_interpreter(env: dict[str, str]) -> str:
    """What a fresh process of the agent's interpreter finds of the wheels' modules."""
    importlib.invalidate_caches()
    assert importlib.util.find_spec("na_hello") is None
    return python_says(sys.executable, NOT_IN_AGENT, env)


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory, wheel_dir: Path, poetry_env: dict[str, str]
) -> tuple[PoetryManager, Path, ListReporter]:
    """A poetry.lock project with path dependencies, installed once: (manager, venv python, its reporter)."""
    project = tmp_path_factory.mktemp("path-project") / "demo"
    write_project(project, path_dependencies(project, wheel_dir))
    poetry_lock(project, poetry_env)
    reporter = ListReporter()
    manager = PoetryManager(poetry_env, reporter, sys.executable, project, command=AGENT_POETRY)
    python = manager.create_env(tmp_path_factory.mktemp("installed") / "venv")
    manager.install(python, "", cwd=project)
    return manager, python, reporter


# --- finding poetry --------------------------------------------------------------------------------------------


def test_poetry_on_path_wins(tmp_path: Path) -> None:
    fake = tmp_path / "poetry"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert poetry_command({"PATH": str(tmp_path)}) == [str(fake)]


def test_else_the_agents_poetry_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert poetry_command({"PATH": str(tmp_path)}) == [sys.executable, "-m", "poetry"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "poetry" else real(name, *a))
    assert poetry_command({"PATH": str(tmp_path)}) is None


# --- install ---------------------------------------------------------------------------------------------------


def test_poetry_installs_into_the_task_venv_not_the_agents_interpreter(
    installed: tuple[PoetryManager, Path, ListReporter], poetry_env: dict[str, str]
) -> None:
    manager, python, reporter = installed
    check = "import na_extra, na_hello; print(na_hello.GREETING, na_extra.EXTRA)"
    assert python_says(python, check, poetry_env) == f"{GREETING} 2"
    assert in_agent_interpreter(poetry_env) == "None None"

    [install] = [line for line in run_lines(reporter) if " install " in line]
    assert install == f"$ {sys.executable} -m poetry install -n --no-ansi --no-root"
    assert "Installing dependencies from lock file" in reporter.lines
    assert not (manager.project / ".venv").exists()
    assert [line.split(" @ ")[0] for line in manager.freeze(python)] == ["na-extra", "na-hello"]


def test_path_dependencies_are_not_cached(installed: tuple[PoetryManager, Path, ListReporter]) -> None:
    manager, _, _ = installed
    reporter = ListReporter()
    manager = PoetryManager(manager.env, reporter, manager.python, manager.project, command=AGENT_POETRY)
    assert manager.cache_key_inputs() is None
    assert reporter.lines == ["not cached: pyproject.toml installs na-extra from local files"]


def test_a_package_is_installed_from_its_checkout_locking_first_and_not_cached(
    tmp_path: Path, wheel_dir: Path, poetry_env: dict[str, str]
) -> None:
    project = tmp_path / "demo"
    write_project(project, path_dependencies(project, wheel_dir), package=True)
    reporter = ListReporter()
    manager = PoetryManager(poetry_env, reporter, sys.executable, project, command=AGENT_POETRY)
    python = manager.create_env(tmp_path / "venv")
    manager.install(python, "", cwd=project)  # no poetry.lock yet: poetry resolves and writes it first

    assert (project / "poetry.lock").is_file()
    assert python_says(python, "import demo, na_hello; print(demo.WHERE)", poetry_env) == "checkout"
    [install] = [line for line in run_lines(reporter) if " install " in line]
    assert install.endswith("poetry install -n --no-ansi")  # the root too
    assert in_agent_interpreter(poetry_env) == "None None"
    assert manager.cache_key_inputs() is None
    assert reporter.lines[-1] == (
        "not cached: the project is installed from its checkout (pyproject.toml has [build-system])"
    )


def test_a_lock_out_of_date_fails_with_one_readable_line(
    tmp_path: Path, poetry_env: dict[str, str], shared_venv: Path
) -> None:
    project = write_project(tmp_path / "demo", "")
    poetry_lock(project, poetry_env)
    write_project(project, 'na-hello = "^1.0"\n')  # pyproject moved on
    manager = PoetryManager(poetry_env, ListReporter(), sys.executable, project, command=AGENT_POETRY)
    with pytest.raises(EnvironmentSetupError) as failed:
        manager.install(shared_venv, "", cwd=project)
    assert failed.value.reason == (
        "poetry install failed: pyproject.toml changed significantly since poetry.lock was last generated. "
        "Run `poetry lock` to fix the lock file."
    )
    assert "Installing dependencies from lock file" in failed.value.detail


# --- a local package index: what a cacheable poetry project installs from --------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def simple_index(tmp_path_factory: pytest.TempPathFactory, wheel_dir: Path) -> Iterator[str]:
    """A PEP 503 index of the test wheels on 127.0.0.1 (a registry: poetry.lock names it and each file's hash)."""
    root = tmp_path_factory.mktemp("index")
    for wheel in sorted(wheel_dir.glob("*.whl")):
        folder = root / "simple" / wheel.name.split("-")[0].replace("_", "-")
        folder.mkdir(parents=True)
        shutil.copy(wheel, folder / wheel.name)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        link = f'<a href="{wheel.name}#sha256={digest}">{wheel.name}</a>'
        (folder / "index.html").write_text(f"<!DOCTYPE html><html><body>{link}</body></html>\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def index_source(url: str) -> str:
    return f'\n[[tool.poetry.source]]\nname = "local"\nurl = "{url}"\npriority = "primary"\n'


# --- through prepare -------------------------------------------------------------------------------------------


def project_repo(path: Path, dependencies: str, env: dict[str, str], *, extra: str = "") -> str:
    """A git repository with the poetry project (lock included) and src/train.py; returns the commit."""
    write_project(path, dependencies, extra=extra)
    poetry_lock(path, env)
    (path / "src").mkdir()
    (path / "src" / "train.py").write_text("import na_hello\nprint(na_hello.GREETING)\n", encoding="utf-8")
    return make_git_repo(path, {".gitignore": ".venv/\n"})  # commits everything there, wheels included


def run_task(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_prepare_installs_a_project_from_an_index_and_hits_the_cache_the_second_time(
    tmp_path: Path, poetry_env: dict[str, str], simple_index: str
) -> None:
    commit = project_repo(tmp_path / "origin", 'na-extra = "^2.0"\n', poetry_env, extra=index_source(simple_index))
    script = {"repository": (tmp_path / "origin").as_uri(), "version_num": commit, "entry_point": "src/train.py"}
    settings = BuildSettings(package_manager="poetry", venvs_cache_dir=tmp_path / "cache")

    first = ListReporter()
    built = prepare({"script": script}, tmp_path / "w1", settings=settings, env=poetry_env, reporter=first)
    assert built.lease is not None
    try:
        assert f"package manager: poetry ({' '.join(AGENT_POETRY)}) in code" in first.lines
        assert any(line.startswith("cache miss ") for line in first.lines)
        assert "na-extra==2.0" in built.frozen and "na-hello==1.0" in built.frozen
        assert run_task(built.argv, built.cwd, poetry_env) == GREETING
    finally:
        built.lease.close()

    second = ListReporter()
    again = prepare({"script": script}, tmp_path / "w2", settings=settings, env=poetry_env, reporter=second)
    assert again.lease is not None
    try:
        assert any(line.startswith(f"cache hit {again.lease.key[:12]}") for line in second.lines)
        assert not any(" install " in line for line in run_lines(second))
        assert run_task(again.argv, again.cwd, poetry_env) == GREETING
    finally:
        again.lease.close()
    assert in_agent_interpreter(poetry_env) == "None None"


def test_prepare_installs_a_project_with_path_dependencies_without_the_cache(
    tmp_path: Path, wheel_dir: Path, poetry_env: dict[str, str]
) -> None:
    origin = tmp_path / "origin"
    commit = project_repo(origin, path_dependencies(origin, wheel_dir), poetry_env)
    script = {"repository": origin.as_uri(), "version_num": commit, "entry_point": "src/train.py"}
    settings = BuildSettings(package_manager="poetry", venvs_cache_dir=tmp_path / "cache")
    reporter = ListReporter()
    prepared = prepare({"script": script}, tmp_path / "work", settings=settings, env=poetry_env, reporter=reporter)

    assert prepared.lease is None
    assert "not cached: pyproject.toml installs na-extra from local files" in reporter.lines
    assert run_task(prepared.argv, prepared.cwd, poetry_env) == GREETING
    assert in_agent_interpreter(poetry_env) == "None None"


# --- selection -------------------------------------------------------------------------------------------------


def select(root: Path, reporter: ListReporter, env: dict[str, str]) -> object:
    manager, _ = select_manager(
        BuildSettings(package_manager="poetry"), env, reporter, script={}, repo_root=root, cwd=root, entry_dir=root
    )
    return manager


def test_poetry_without_project_files_installs_with_pip(tmp_path: Path, poetry_env: dict[str, str]) -> None:
    (tmp_path / "requirements.txt").write_text("na-hello\n")
    reporter = ListReporter()
    assert isinstance(select(tmp_path, reporter, poetry_env), PipManager)
    assert "package manager: poetry asked, but no pyproject.toml or poetry.lock; using pip" in reporter.lines


def test_poetry_not_found_installs_with_pip(
    tmp_path: Path, poetry_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_project(tmp_path, "")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "poetry" else real(name, *a))
    reporter = ListReporter()
    assert isinstance(select(tmp_path, reporter, poetry_env), PipManager)
    assert "package manager: poetry not found (pip install poetry); installing requirements with pip" in reporter.lines


def test_poetry_with_a_project_installs_it(tmp_path: Path, poetry_env: dict[str, str]) -> None:
    write_project(tmp_path, "")
    manager = select(tmp_path, ListReporter(), poetry_env)
    assert isinstance(manager, PoetryManager) and manager.project == tmp_path
    assert manager.command == AGENT_POETRY
