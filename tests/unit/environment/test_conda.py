"""Conda mode: a prefix from a local channel (py-rattler, offline), a conda binary on PATH, errors, and prepare()."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from notebook_agent.environment import BuildSettings, EnvironmentSetupError, ListReporter, prepare
from notebook_agent.environment.conda import NO_ENGINE, CondaManager, channel_source
from tests.fakes.conda_channel import build_conda_package, index_channel
from tests.unit.environment.conftest import GREETING, hermetic_env

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the fake conda packages and tools are POSIX shell scripts")

SITE_PACKAGES = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
MODULE_VALUE = "from the conda package"
# The tool reads its data file through CONDA_PREFIX, so it only works with the task's environment.
TOOL = '#!/bin/sh\necho "na-conda-tool says: $(cat "$CONDA_PREFIX/share/na-conda/data.txt")"\n'


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local channel: na-conda-tool (bin/na-conda-tool) depends on na-conda-data (a data file, a module)."""
    folder = tmp_path_factory.mktemp("channel")
    build_conda_package(
        folder,
        "na-conda-data",
        "1.0",
        {"share/na-conda/data.txt": "conda data\n", f"{SITE_PACKAGES}/na_conda_mod.py": f"VALUE = {MODULE_VALUE!r}\n"},
    )
    build_conda_package(folder, "na-conda-tool", "1.0", {"bin/na-conda-tool": TOOL}, depends=["na-conda-data >=1"])
    index_channel(folder)
    return folder


@dataclass(frozen=True)
class Built:
    manager: CondaManager
    reporter: ListReporter
    prefix: Path
    python: Path


@pytest.fixture(scope="module")
def built(channel: Path, tmp_path_factory: pytest.TempPathFactory, offline_pip_args: tuple[str, ...]) -> Built:
    """One conda prefix with na-conda-tool and the pip requirement na-hello, built by py-rattler."""
    root = tmp_path_factory.mktemp("conda")
    reporter = ListReporter()
    manager = CondaManager(
        hermetic_env(),
        reporter,
        sys.executable,
        specs=("na-conda-tool",),
        channels=(str(channel),),
        pip_args=offline_pip_args,
        pkgs_dir=root / "pkgs",
    )
    prefix = root / "env"
    python = manager.create_env(prefix)
    manager.install(python, "na-hello\n", cwd=root)
    return Built(manager, reporter, prefix, python)


def run_in(built: Built, argv: list[str]) -> str:
    env = {**built.manager.env, **built.manager.task_env(built.python)}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_conda_packages_and_pip_requirements_share_one_prefix(built: Built) -> None:
    assert built.python == built.prefix / "bin" / "python"
    code = "import na_conda_mod, na_hello; print(na_conda_mod.VALUE); print(na_hello.GREETING)"
    assert run_in(built, [str(built.python), "-c", code]).splitlines() == [MODULE_VALUE, GREETING]
    assert run_in(built, ["na-conda-tool"]) == "na-conda-tool says: conda data"  # found on the task's PATH
    assert sorted(p.name for p in (built.prefix / "conda-meta").glob("*.json")) == [
        "na-conda-data-1.0-0.json",
        "na-conda-tool-1.0-0.json",
    ]
    assert "na-hello==1.0" in built.manager.freeze(built.python)
    lines = built.reporter.lines
    assert any(line.startswith("conda engine: py-rattler") for line in lines)
    assert any(line.startswith("conda (py-rattler): solved 2 packages in ") for line in lines)
    assert any(line.startswith(f"conda: installed 2 packages into {built.prefix} in ") for line in lines)
    assert any(line.startswith("python: no python among the conda packages; a virtualenv") for line in lines)


def test_a_second_build_links_from_the_package_cache(built: Built, tmp_path: Path) -> None:
    pkgs_dir = built.manager.pkgs_dir
    assert pkgs_dir is not None
    cached = pkgs_dir / "na-conda-tool-1.0-0" / "bin" / "na-conda-tool"
    before = cached.stat()
    reporter = ListReporter()
    manager = CondaManager(
        built.manager.env,
        reporter,
        sys.executable,
        specs=("na-conda-tool",),
        channels=built.manager.channels,
        pkgs_dir=pkgs_dir,
    )
    prefix = tmp_path / "env"
    manager.create_env(prefix)

    after = cached.stat()
    # Not extracted again: the cached file is the same one, and the new prefix links to it.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (prefix / "bin" / "na-conda-tool").stat().st_ino == before.st_ino
    assert any(line.startswith(f"conda: installed 2 packages into {prefix} in ") for line in reporter.lines)


def test_prepare_runs_a_conda_task(
    channel: Path, tmp_path: Path, env: dict[str, str], reporter: ListReporter, offline_pip_args: tuple[str, ...]
) -> None:
    source = (
        "import subprocess\nimport na_conda_mod, na_hello\n"
        "print(na_conda_mod.VALUE, '|', na_hello.GREETING)\n"
        "print(subprocess.run(['na-conda-tool'], capture_output=True, text=True, check=True).stdout.strip())\n"
    )
    task = {
        "script": {
            "entry_point": "run.py",
            "diff": source,
            "requirements": {"conda": "na-conda-tool\n", "pip": "na-hello\n"},
        }
    }
    settings = BuildSettings(
        package_manager="conda",
        conda_channels=(channel.as_uri(),),
        conda_pkgs_dir=tmp_path / "pkgs",
        pip_args=offline_pip_args,
    )
    prepared = prepare(task, tmp_path / "work", settings=settings, env=env, reporter=reporter)

    task_env = CondaManager(env, ListReporter(), sys.executable).task_env(prepared.python)
    result = subprocess.run(
        prepared.argv, cwd=prepared.cwd, env={**env, **task_env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{MODULE_VALUE} | {GREETING}", "na-conda-tool says: conda data"]
    assert "na-hello==1.0" in prepared.frozen
    assert any(line.startswith("package manager: conda (1 conda specs") for line in reporter.lines)
    assert any(line.startswith("conda engine: py-rattler") for line in reporter.lines)


def test_an_unknown_spec_is_named_in_the_reason(
    channel: Path, tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    manager = CondaManager(
        env, reporter, sys.executable, specs=("na-conda-tool", "na-missing>=2"), channels=(str(channel),)
    )
    with pytest.raises(EnvironmentSetupError) as caught:
        manager.create_env(tmp_path / "env")
    assert caught.value.reason.startswith("conda could not solve na-missing>=2: ")
    assert "na-conda-tool" not in caught.value.reason
    assert "na-missing" in caught.value.detail


def test_without_any_engine_the_reason_says_how_to_get_one(
    tmp_path: Path, env: dict[str, str], reporter: ListReporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rattler", None)  # `import rattler` now raises ImportError
    (tmp_path / "bin").mkdir()
    manager = CondaManager({**env, "PATH": str(tmp_path / "bin")}, reporter, sys.executable, specs=("numpy",))
    with pytest.raises(EnvironmentSetupError) as caught:
        manager.create_env(tmp_path / "env")
    assert caught.value.reason == NO_ENGINE


FAKE_MICROMAMBA = """#!{python}
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
prefix = Path(args[args.index("-p") + 1])
(prefix / "conda-meta").mkdir(parents=True)
(prefix / "conda-meta" / "na-python-1.0-0.json").write_text("{{}}")
(prefix / "bin").mkdir()
(prefix / "bin" / "python").symlink_to({python!r})
Path({record!r}).write_text(json.dumps({{"argv": args, "pkgs_dirs": os.environ.get("CONDA_PKGS_DIRS")}}))
print("Transaction finished")
"""

FAILING_CONDA = """#!/bin/sh
echo "Channels:"
echo "PackagesNotFoundError: The following packages are not available from current channels:"
echo ""
echo "  - na-missing"
echo ""
echo "Current channels:"
echo "  - conda-forge"
exit 1
"""


def write_tool(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    (folder / name).chmod(0o755)


def test_a_micromamba_on_path_comes_first_and_gets_the_channels_and_package_cache(
    tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    tools, record = tmp_path / "tools", tmp_path / "argv.json"
    write_tool(tools, "micromamba", FAKE_MICROMAMBA.format(python=sys.executable, record=str(record)))
    write_tool(tools, "conda", FAILING_CONDA)  # never run: micromamba is preferred
    local = tmp_path / "local-channel"
    manager = CondaManager(
        {**env, "PATH": f"{tools}{os.pathsep}{env['PATH']}"},
        reporter,
        sys.executable,
        specs=("python=3.11", "na-conda-tool>=1"),
        channels=(str(local), "conda-forge", "https://conda.example/private"),
        pkgs_dir=tmp_path / "pkgs",
    )
    prefix = tmp_path / "env"
    python = manager.create_env(prefix)

    recorded = json.loads(record.read_text())
    assert recorded["argv"] == [
        *("create", "-y", "-p", str(prefix), "--override-channels"),
        *("-c", local.resolve().as_uri(), "-c", "conda-forge", "-c", "https://conda.example/private"),
        *("python=3.11", "na-conda-tool>=1"),
    ]
    assert recorded["pkgs_dirs"] == str(tmp_path / "pkgs")
    assert python == prefix / "bin" / "python"  # the prefix brought its own python: no virtualenv
    assert not (prefix / "pyvenv.cfg").exists()
    assert f"conda engine: micromamba ({tools / 'micromamba'})" in reporter.lines
    assert any(
        line.startswith(f"conda (micromamba): installed 1 packages into {prefix} in ") for line in reporter.lines
    )
    assert f"python: the conda environment's own ({python})" in reporter.lines


def test_a_failing_conda_names_the_missing_packages(
    tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    write_tool(tmp_path / "tools", "conda", FAILING_CONDA)
    env = {**env, "PATH": f"{tmp_path / 'tools'}{os.pathsep}{env['PATH']}"}
    manager = CondaManager(env, reporter, sys.executable, specs=("na-missing",), channels=("conda-forge",))
    with pytest.raises(EnvironmentSetupError) as caught:
        manager.create_env(tmp_path / "env")
    assert caught.value.reason == (
        "conda create failed: PackagesNotFoundError: The following packages are not available from current "
        "channels: na-missing"
    )
    assert "Current channels:" in caught.value.detail


def test_create_env_from_a_thread_that_runs_an_event_loop(
    channel: Path, tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    manager = CondaManager(
        env, reporter, sys.executable, specs=("na-conda-data",), channels=(str(channel),), pkgs_dir=tmp_path / "pkgs"
    )

    async def from_the_loop() -> Path:
        # As in a notebook kernel: a synchronous call made while this thread's loop is running.
        return manager.create_env(tmp_path / "env")

    python = asyncio.run(from_the_loop())
    assert (tmp_path / "env" / "share" / "na-conda" / "data.txt").read_text() == "conda data\n"
    result = subprocess.run([str(python), "-c", "import na_conda_mod"], env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_channel_sources() -> None:
    assert channel_source("conda-forge") == "conda-forge"
    assert channel_source("pytorch/label/nightly") == "pytorch/label/nightly"
    assert channel_source("https://conda.example/c") == "https://conda.example/c"
    assert channel_source("file:///srv/channel") == "file:///srv/channel"
    assert channel_source("/srv/channel") == "file:///srv/channel"
    assert channel_source("./channel") == (Path.cwd() / "channel").as_uri()


def test_task_env_puts_the_prefix_first_on_path(tmp_path: Path) -> None:
    manager = CondaManager({"PATH": "/usr/bin"}, ListReporter(), sys.executable)
    assert manager.task_env(tmp_path / "env" / "bin" / "python") == {
        "CONDA_PREFIX": str(tmp_path / "env"),
        "CONDA_DEFAULT_ENV": str(tmp_path / "env"),
        "PATH": f"{tmp_path / 'env' / 'bin'}{os.pathsep}/usr/bin",
    }
    assert manager.cache_key_inputs() is None
