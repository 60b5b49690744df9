"""UvSyncManager: `uv sync` of a repository's uv project into the task's venv, offline, and its cache key."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from notebook_agent.environment import BuildSettings, EnvironmentSetupError, ListReporter, prepare
from notebook_agent.environment.managers import PipManager
from notebook_agent.environment.selection import select_manager
from notebook_agent.environment.uv import uv_binary
from notebook_agent.environment.uv_sync import UvSyncManager
from notebook_agent.environment.venv import create_venv
from tests.fakes.gitrepo import git, make_git_repo
from tests.unit.environment.conftest import GREETING, hermetic_env, run_lines

# Anything that tries the network fails at once: nothing listens on port 9.
NO_NETWORK = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "UV_OFFLINE": "1",
    "UV_PYTHON_DOWNLOADS": "never",
}
HELLO_WHEEL = "na_hello-1.0-py3-none-any.whl"
IMPORT_CHECK = "import na_extra, na_hello; print(na_hello.GREETING, na_extra.EXTRA)"


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The hermetic environment with the network off and a uv cache of this module's own."""
    return {**hermetic_env(), **NO_NETWORK, "UV_CACHE_DIR": str(tmp_path_factory.mktemp("uv-cache"))}


def write_project(folder: Path, wheel_dir: Path, *, source: str, dependencies: tuple[str, ...] = ()) -> Path:
    """A virtual uv project (no [build-system]) that depends on na-extra (and with it na-hello).

    source "path": both wheels copied into the project and named as path sources (uv.lock pins their hashes; uv
    takes sources for direct dependencies only, so na-hello is one too); "find-links": resolved from the absolute
    folder `wheel_dir`, a flat index outside the checkout.
    """
    folder.mkdir(parents=True, exist_ok=True)
    direct = ("na-extra", "na-hello") if source == "path" else ("na-extra",)
    deps = ", ".join(f'"{d}"' for d in (*direct, *dependencies))
    text = f'[project]\nname = "demo"\nversion = "0.1"\nrequires-python = ">=3.8"\ndependencies = [{deps}]\n'
    if source == "path":
        (folder / "wheels").mkdir(exist_ok=True)
        lines = []
        for wheel in sorted(wheel_dir.glob("*.whl")):
            shutil.copy(wheel, folder / "wheels" / wheel.name)
            name = wheel.name.split("-")[0].replace("_", "-")
            lines.append(f'{name} = {{ path = "wheels/{wheel.name}" }}\n')
        text += "\n[tool.uv.sources]\n" + "".join(lines)
    else:
        text += f'\n[tool.uv]\nfind-links = ["{wheel_dir}"]\nno-index = true\n'
    (folder / "pyproject.toml").write_text(text, encoding="utf-8")
    return folder


def uv_lock(project: Path, env: dict[str, str]) -> None:
    uv = uv_binary()
    assert uv is not None
    result = subprocess.run(
        [uv, "lock", "--offline"], cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (project / "uv.lock").is_file()


def python_says(python: Path, code: str, env: dict[str, str]) -> str:
    result = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def path_project(tmp_path_factory: pytest.TempPathFactory, wheel_dir: Path, offline_env: dict[str, str]) -> Path:
    project = write_project(tmp_path_factory.mktemp("path-project") / "demo", wheel_dir, source="path")
    uv_lock(project, offline_env)
    return project


@pytest.fixture(scope="module")
def find_links_project(tmp_path_factory: pytest.TempPathFactory, wheel_dir: Path, offline_env: dict[str, str]) -> Path:
    project = write_project(tmp_path_factory.mktemp("find-links-project") / "demo", wheel_dir, source="find-links")
    uv_lock(project, offline_env)
    return project


@pytest.fixture(scope="module")
def synced(
    tmp_path_factory: pytest.TempPathFactory, path_project: Path, offline_env: dict[str, str]
) -> tuple[UvSyncManager, Path, ListReporter]:
    """The path-source project synced once into a fresh venv: (manager, venv python, its reporter)."""
    reporter = ListReporter()
    manager = UvSyncManager(offline_env, reporter, "python3", path_project)
    python = manager.create_env(tmp_path_factory.mktemp("synced") / "venv")
    manager.install(python, "", cwd=path_project)
    return manager, python, reporter


# --- install ---------------------------------------------------------------------------------------------------


def test_sync_builds_a_working_env_from_a_uv_lock_project(
    synced: tuple[UvSyncManager, Path, ListReporter], offline_env: dict[str, str]
) -> None:
    manager, python, reporter = synced
    assert python_says(python, IMPORT_CHECK, offline_env) == f"{GREETING} 2"

    [sync] = [line for line in run_lines(reporter) if " sync " in line]
    assert f" sync --python {python} --locked --no-install-project --inexact" in sync
    # uv installed into the given venv (not a .venv in the project), next to what virtualenv seeded.
    assert not (manager.project / ".venv").exists()
    # Path sources freeze as direct references to the wheels.
    frozen = manager.freeze(python)
    assert [line.split(" @ ")[0] for line in frozen] == ["na-extra", "na-hello"]
    assert frozen[1].endswith(f"/wheels/{HELLO_WHEEL}")
    assert python_says(python, "import pip; print('pip kept')", offline_env) == "pip kept"


def test_path_sources_are_not_cached(synced: tuple[UvSyncManager, Path, ListReporter]) -> None:
    manager, _, _ = synced
    reporter = ListReporter()
    manager = UvSyncManager(manager.env, reporter, manager.python, manager.project)
    assert manager.cache_key_inputs() is None
    assert reporter.lines == ["not cached: pyproject.toml installs na-extra from local files"]


def test_a_find_links_project_is_cacheable(find_links_project: Path, offline_env: dict[str, str]) -> None:
    reporter = ListReporter()
    manager = UvSyncManager(offline_env, reporter, "python3", find_links_project, extra_args=("--no-dev",))
    inputs = manager.cache_key_inputs()
    assert inputs is not None and reporter.lines == []
    assert inputs["manager"] == "uv-sync" and inputs["extra_args"] == ["--no-dev"]
    assert set(inputs["files"]) == {"uv.lock", "pyproject.toml"}
    assert inputs["index_flags"] == []  # the lock names where each wheel comes from
    assert manager.sync_flags() == ["--locked", "--no-install-project", "--inexact", "--no-dev"]
    frozen = UvSyncManager(offline_env, reporter, "python3", find_links_project, extra_args=("--frozen",))
    assert frozen.sync_flags() == ["--no-install-project", "--inexact", "--frozen"]  # uv refuses both


def test_without_a_lock_the_agents_index_settings_apply(tmp_path: Path, wheel_dir: Path) -> None:
    project = write_project(tmp_path / "demo", wheel_dir, source="find-links")
    env = {**hermetic_env(), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheel_dir)}
    manager = UvSyncManager(env, ListReporter(), "python3", project)
    assert manager.sync_flags() == ["--no-index", "--find-links", str(wheel_dir), "--no-install-project", "--inexact"]
    inputs = manager.cache_key_inputs()
    assert inputs is not None and inputs["index_flags"] == ["--no-index", "--find-links", str(wheel_dir)]
    assert list(inputs["files"]) == ["pyproject.toml"]


def test_a_package_project_is_installed_from_its_checkout_and_not_cached(
    tmp_path: Path, wheel_dir: Path, offline_env: dict[str, str]
) -> None:
    project = write_project(tmp_path / "demo", wheel_dir, source="find-links")
    with (project / "pyproject.toml").open("a", encoding="utf-8") as fh:
        # uv's own build backend, which uv runs built in: no download.
        fh.write('\n[build-system]\nrequires = ["uv_build>=0.8,<1"]\nbuild-backend = "uv_build"\n')
    (project / "src" / "demo").mkdir(parents=True)
    (project / "src" / "demo" / "__init__.py").write_text("WHERE = 'checkout'\n")
    uv_lock(project, offline_env)
    reporter = ListReporter()
    manager = UvSyncManager(offline_env, reporter, "python3", project)
    python = manager.create_env(tmp_path / "venv")
    manager.install(python, "", cwd=project)

    assert python_says(python, "import demo, na_hello; print(demo.WHERE)", offline_env) == "checkout"
    [sync] = [line for line in run_lines(reporter) if " sync " in line]
    assert "--no-install-project" not in sync and "--locked" in sync
    assert manager.cache_key_inputs() is None
    assert reporter.lines[-1] == (
        "not cached: the project is installed from its checkout (pyproject.toml has [build-system])"
    )


# --- failures --------------------------------------------------------------------------------------------------


def test_a_lock_out_of_date_fails_with_one_readable_line(
    tmp_path: Path, wheel_dir: Path, offline_env: dict[str, str], shared_venv: Path
) -> None:
    project = write_project(tmp_path / "demo", wheel_dir, source="find-links")
    uv_lock(project, offline_env)
    write_project(project, wheel_dir, source="find-links", dependencies=("na-hello>=1",))  # pyproject moved on
    manager = UvSyncManager(offline_env, ListReporter(), "python3", project)
    with pytest.raises(EnvironmentSetupError) as failed:
        manager.install(shared_venv, "", cwd=project)
    # uv 0.13.10 adds its cause ("Requirements for `demo==0.1` differ; ..."), which goes on the same line.
    reason = failed.value.reason
    expected = "uv sync failed: The lockfile at `uv.lock` needs to be updated, but `--locked` was provided."
    assert reason.startswith(expected), reason
    assert "\n" not in reason
    assert "uv lock" in failed.value.detail


def test_a_missing_dependency_fails_with_one_readable_line(
    tmp_path: Path, wheel_dir: Path, offline_env: dict[str, str], shared_venv: Path
) -> None:
    project = write_project(tmp_path / "demo", wheel_dir, source="find-links", dependencies=("na-missing",))
    manager = UvSyncManager(offline_env, ListReporter(), "python3", project)
    with pytest.raises(EnvironmentSetupError) as failed:
        manager.install(shared_venv, "", cwd=project)
    reason = failed.value.reason
    assert reason.startswith("uv sync failed: No solution found when resolving dependencies: Because na-missing")
    assert "\n" not in reason and "error:" in failed.value.detail


# --- through prepare -------------------------------------------------------------------------------------------


def project_repo(path: Path, wheel_dir: Path, env: dict[str, str], *, source: str) -> str:
    """A git repository holding the uv project (lock included) and src/train.py; returns the commit."""
    write_project(path, wheel_dir, source=source)
    uv_lock(path, env)
    (path / "src").mkdir()
    (path / "src" / "train.py").write_text(f"{IMPORT_CHECK}\n", encoding="utf-8")
    return make_git_repo(path, {".gitignore": ".venv/\n"})  # commits everything there, wheels included


def run_task(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_prepare_syncs_a_cacheable_project_and_hits_the_cache_the_second_time(
    tmp_path: Path, wheel_dir: Path, offline_env: dict[str, str]
) -> None:
    commit = project_repo(tmp_path / "origin", wheel_dir, offline_env, source="find-links")
    script = {"repository": (tmp_path / "origin").as_uri(), "version_num": commit, "entry_point": "src/train.py"}
    settings = BuildSettings(package_manager="uv", venvs_cache_dir=tmp_path / "cache")

    first = ListReporter()
    built = prepare({"script": script}, tmp_path / "w1", settings=settings, env=offline_env, reporter=first)
    assert built.lease is not None
    try:
        assert any(line.startswith("cache miss ") for line in first.lines)
        assert any(" sync --python " in line for line in run_lines(first))
        assert built.requirements == "" and "na-extra==2.0" in built.frozen
        assert run_task(built.argv, built.cwd, offline_env) == f"{GREETING} 2"
    finally:
        built.lease.close()

    second = ListReporter()
    started = time.monotonic()
    again = prepare({"script": script}, tmp_path / "w2", settings=settings, env=offline_env, reporter=second)
    assert again.lease is not None
    try:
        assert any(line.startswith(f"cache hit {again.lease.key[:12]}") for line in second.lines)
        assert again.lease.key == built.lease.key and time.monotonic() - started < 30
        assert not any(" sync " in line for line in run_lines(second))
        assert again.frozen == built.frozen
        assert run_task(again.argv, again.cwd, offline_env) == f"{GREETING} 2"
    finally:
        again.lease.close()


def test_prepare_syncs_a_project_with_path_sources_without_the_cache(
    tmp_path: Path, wheel_dir: Path, offline_env: dict[str, str]
) -> None:
    commit = project_repo(tmp_path / "origin", wheel_dir, offline_env, source="path")
    assert "wheels/" + HELLO_WHEEL in git(tmp_path / "origin", "ls-files")
    script = {"repository": (tmp_path / "origin").as_uri(), "version_num": commit, "entry_point": "src/train.py"}
    settings = BuildSettings(package_manager="uv", venvs_cache_dir=tmp_path / "cache")
    reporter = ListReporter()
    prepared = prepare({"script": script}, tmp_path / "work", settings=settings, env=offline_env, reporter=reporter)

    assert prepared.lease is None
    assert "not cached: pyproject.toml installs na-extra from local files" in reporter.lines
    assert run_task(prepared.argv, prepared.cwd, offline_env) == f"{GREETING} 2"


# --- selection -------------------------------------------------------------------------------------------------


def select(settings: BuildSettings, root: Path, reporter: ListReporter) -> object:
    manager, _ = select_manager(settings, hermetic_env(), reporter, script={}, repo_root=root, cwd=root, entry_dir=root)
    return manager


def test_uv_without_project_files_installs_with_uv_pip(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("na-hello\n")
    reporter = ListReporter()
    manager = select(BuildSettings(package_manager="uv"), tmp_path, reporter)
    assert isinstance(manager, PipManager) and manager.use_uv
    assert "package manager: uv asked, but no uv.lock or pyproject.toml; installing with uv pip" in reporter.lines


def test_uv_with_a_project_syncs_it(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n')
    reporter = ListReporter()
    settings = BuildSettings(package_manager="UV", uv_sync_extra_args=("--no-dev",))
    manager = select(settings, tmp_path, reporter)
    assert isinstance(manager, UvSyncManager) and manager.project == tmp_path
    assert manager.extra_args == ("--no-dev",)


def test_an_unknown_manager_type_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentSetupError, match=r"agent\.package_manager\.type 'pipenv'"):
        select(BuildSettings(package_manager="pipenv"), tmp_path, ListReporter())


def test_a_venv_of_our_own_is_what_uv_syncs_into(tmp_path: Path, path_project: Path) -> None:
    # VIRTUAL_ENV of the agent's own environment must not redirect uv (it would warn and could pick it).
    other = create_venv(tmp_path / "other", env=hermetic_env(), reporter=ListReporter())
    env = {**hermetic_env(), **NO_NETWORK, "VIRTUAL_ENV": str(other.parent.parent)}
    manager = UvSyncManager(env, ListReporter(), "python3", path_project)
    target = manager.create_env(tmp_path / "target")
    manager.install(target, "", cwd=path_project)
    assert python_says(target, "import na_hello; print('ok')", env) == "ok"
    missing = "import importlib.util as u; print(u.find_spec('na_hello'))"
    assert python_says(other, missing, env) == "None"
