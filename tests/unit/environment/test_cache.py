"""The virtualenv cache: thin per-task venvs over read-only cached entries, keys, eviction and concurrent builds."""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

from notebook_agent.environment import BuildSettings, ListReporter, NullReporter, PreparedEnvironment, prepare
from notebook_agent.environment.cache import CacheEntry, VenvCache
from notebook_agent.environment.cache_key import (
    cache_key,
    interpreter_identity,
    local_requirement,
    normalize_requirements,
)
from notebook_agent.environment.managers import PipManager
from notebook_agent.environment.thin_venv import PTH_NAME, make_thin_venv
from tests.fakes.gitrepo import make_git_repo
from tests.fakes.wheels import build_wheel
from tests.unit.environment.conftest import hermetic_env

pytestmark = pytest.mark.slow

SCRIPT = "import na_hello\nprint('task says', na_hello.GREETING)\n"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """na-hello 1.0 (with a `na-hello` console script), na-solo, and na-late (installed only by tests)."""
    folder = tmp_path_factory.mktemp("cache-wheels")
    hello = "GREETING = 'cached hello'\n\ndef main():\n    print('script says', GREETING)\n"
    build_wheel(
        folder,
        "na-hello",
        "1.0",
        {"na_hello.py": hello},
        entry_points={"console_scripts": {"na-hello": "na_hello:main"}},
    )
    build_wheel(folder, "na-solo", "1.0")
    build_wheel(folder, "na-late", "1.0")
    return folder


@pytest.fixture(scope="module")
def upgrade_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("upgrade-wheels")
    build_wheel(folder, "na-hello", "2.0", {"na_hello.py": "GREETING = 'upgraded'\n"})
    return folder


def settings_for(wheels: Path, cache: Path, *, max_entries: int = 10, free_gb: float = 0.0) -> BuildSettings:
    return BuildSettings(
        pip_args=("--no-index", "--find-links", str(wheels)),
        venvs_cache_dir=cache,
        venvs_cache_max_entries=max_entries,
        venvs_cache_free_space_threshold_gb=free_gb,
    )


def prep(
    work: Path, requirements: str, settings: BuildSettings, reporter: ListReporter | None = None
) -> PreparedEnvironment:
    task = {"script": {"entry_point": "task.py", "diff": SCRIPT, "requirements": {"pip": requirements}}}
    return prepare(task, work, settings=settings, env=hermetic_env(), reporter=reporter or ListReporter())


def output(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=hermetic_env(), capture_output=True, text=True, timeout=60)


def entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")}


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def test_second_prepare_is_a_hit_that_imports_and_runs_console_scripts(wheels: Path, tmp_path: Path) -> None:
    settings = settings_for(wheels, tmp_path / "cache")
    first_log, second_log = ListReporter(), ListReporter()
    first = prep(tmp_path / "w1", "na-hello==1.0", settings, first_log)
    assert first.lease is not None
    first.lease.close()
    second = prep(tmp_path / "w2", "# the same, written differently\n  NA_Hello == 1.0  \n", settings, second_log)
    assert second.lease is not None and second.lease.held

    key = second.lease.key
    assert any(line == f"cache miss {key[:12]}: building" for line in first_log.lines)
    assert any(line.startswith(f"cache hit {key[:12]}: environment ready in ") for line in second_log.lines)
    assert not any(line.startswith("$ ") for line in second_log.lines)  # no virtualenv, no pip, no freeze
    assert [name for name, _ in second_log.steps] == ["diff", "cache", "ready"]
    assert second.frozen == first.frozen and "na-hello==1.0" in second.frozen
    assert entries(tmp_path / "cache") == {key}

    work = (tmp_path / "w2").resolve()
    assert second.python == work / "venv" / "bin" / "python"
    run = output(second.argv, second.cwd)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "task says cached hello\n"
    prefix = output([str(second.python), "-c", "import sys; print(sys.prefix)"]).stdout.strip()
    assert prefix == str(work / "venv")
    # The console script of the cached package, started by path, runs with the thin venv's python.
    script = work / "venv" / "bin" / "na-hello"
    assert script.read_text().startswith(f"#!{work / 'venv' / 'bin' / 'python'}\n")
    run = output([str(script)])
    assert run.returncode == 0, run.stderr
    assert run.stdout == "script says cached hello\n"
    # pyvenv.cfg is the entry's (the same interpreter and flags) without virtualenv's build command.
    entry_cfg = (tmp_path / "cache" / key / "venv" / "pyvenv.cfg").read_text().splitlines()
    thin_cfg = (work / "venv" / "pyvenv.cfg").read_text().splitlines()
    assert thin_cfg == [line for line in entry_cfg if not line.startswith("command")]
    second.lease.close()


def test_thin_venvs_of_one_entry_are_isolated(wheels: Path, upgrade_wheels: Path, tmp_path: Path) -> None:
    settings = settings_for(wheels, tmp_path / "cache")
    one = prep(tmp_path / "one", "na-hello==1.0", settings)
    two = prep(tmp_path / "two", "na-hello==1.0", settings)
    assert one.lease is not None and two.lease is not None and one.lease.key == two.lease.key
    entry_python = tmp_path / "cache" / one.lease.key / "venv" / "bin" / "python"

    # The task installs a package and upgrades a cached one with its own pip (the entry's, through the .pth).
    links = ["--find-links", str(wheels), "--find-links", str(upgrade_wheels)]
    pip = [str(one.python), "-m", "pip", "install", "--disable-pip-version-check", "--no-index", *links]
    installed = output([*pip, "na-late==1.0", "na-hello==2.0"])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (site_packages(tmp_path / "one" / "venv") / "na_late.py").is_file()

    probe = "import na_hello; print(na_hello.GREETING)"
    assert output([str(one.python), "-c", probe]).stdout == "upgraded\n"
    assert output([str(one.python), "-c", "import na_late"]).returncode == 0
    for python in (two.python, entry_python):
        assert output([str(python), "-c", probe]).stdout == "cached hello\n"
        assert output([str(python), "-c", "import na_late"]).returncode != 0
    one.lease.close()
    two.lease.close()


def test_least_recently_used_entry_is_evicted_but_not_one_in_use(wheels: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    settings = settings_for(wheels, cache, max_entries=2)

    def key_of(work: str, requirements: str) -> str:
        prepared = prep(tmp_path / work, requirements, settings)
        assert prepared.lease is not None
        prepared.lease.close()
        return prepared.lease.key

    a = key_of("a", "")
    b = key_of("b", "na-solo==1.0")
    assert key_of("a-again", "") == a  # a hit: `a` is now more recently used than `b`
    c = key_of("c", "na-hello==1.0")
    assert entries(cache) == {a, c}  # b was the least recently used

    # `a` is the least recently used now, but a task runs from it: `c` goes instead.
    with VenvCache(cache).acquire(a):
        d = key_of("d", "na-hello==1.0\nna-solo==1.0")
        assert entries(cache) == {a, d}
    assert not (cache / f"{b}.lock").exists() and not (cache / f"{c}.lock").exists()


def test_free_space_threshold(wheels: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    tiny = settings_for(wheels, cache, free_gb=1e-6)
    a = prep(tmp_path / "a", "", tiny)
    b = prep(tmp_path / "b", "na-solo==1.0", tiny)
    assert a.lease is not None and b.lease is not None
    b.lease.close()
    assert entries(cache) == {a.lease.key, b.lease.key}  # plenty of space: nothing evicted

    # More free space wanted than any disk has: every entry goes, except the one just built and those in use.
    huge = settings_for(wheels, cache, free_gb=1e9)
    c = prep(tmp_path / "c", "na-hello==1.0", huge)
    assert c.lease is not None
    assert entries(cache) == {a.lease.key, c.lease.key}
    a.lease.close()
    c.lease.close()
    assert output(c.argv, c.cwd).stdout == "task says cached hello\n"


def test_concurrent_builds_of_one_key(wheels: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    settings = settings_for(wheels, cache)
    barrier = threading.Barrier(2)
    results: dict[str, PreparedEnvironment | BaseException] = {}
    logs = {name: ListReporter() for name in ("x", "y")}

    def build(name: str) -> None:
        barrier.wait()
        try:
            results[name] = prep(tmp_path / name, "na-hello==1.0", settings, logs[name])
        except BaseException as exc:
            results[name] = exc

    threads = [threading.Thread(target=build, args=(name,)) for name in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    prepared = [results[name] for name in logs]
    assert all(isinstance(p, PreparedEnvironment) for p in prepared), prepared
    keys = {p.lease.key for p in prepared if isinstance(p, PreparedEnvironment) and p.lease is not None}
    assert len(keys) == 1
    assert entries(cache) == keys
    assert not [p.name for p in cache.iterdir() if p.name.startswith((".tmp-", ".trash-"))]
    misses = [log for log in logs.values() if "cache miss" in log.text]
    assert misses
    if len(misses) == 2:  # both built (the usual case): the second rename lost and took the winner's entry
        assert sum("another build of this environment finished first" in log.text for log in misses) == 1
    for p in prepared:
        assert isinstance(p, PreparedEnvironment) and p.lease is not None
        assert output(p.argv, p.cwd).stdout == "task says cached hello\n"
        p.lease.close()


def test_requirements_with_local_files_are_not_cached(wheels: Path, tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    commit = make_git_repo(origin, {"task.py": SCRIPT, "extra.txt": "na-hello==1.0\n"})
    task = {
        "script": {
            "repository": origin.as_uri(),
            "version_num": commit,
            "entry_point": "task.py",
            "requirements": {"pip": "-r extra.txt\n"},
        }
    }
    reporter = ListReporter()
    cache = tmp_path / "cache"
    prepared = prepare(
        task, tmp_path / "work", settings=settings_for(wheels, cache), env=hermetic_env(), reporter=reporter
    )
    assert "not cached: requirements refer to local files (-r extra.txt)" in reporter.lines
    assert prepared.lease is None
    assert not cache.exists() or not entries(cache)
    assert output(prepared.argv, prepared.cwd).stdout == "task says cached hello\n"


@pytest.mark.parametrize(
    ("text", "local"),
    [
        ("-e .", "-e ."),
        ("numpy\n--editable=git+https://example.com/r.git#egg=r", "--editable=git+https://example.com/r.git#egg=r"),
        ("./pkg", "./pkg"),
        ("pkg/", "pkg/"),
        ("dist/na_hello-1.0-py3-none-any.whl", "dist/na_hello-1.0-py3-none-any.whl"),
        (
            "na-hello @ file:///tmp/na_hello-1.0-py3-none-any.whl",
            "na-hello @ file:///tmp/na_hello-1.0-py3-none-any.whl",
        ),
        ("na-hello @ ./wheels/x.whl", "na-hello @ ./wheels/x.whl"),
        ("-r requirements-dev.txt", "-r requirements-dev.txt"),
        ("-rother.txt", "-rother.txt"),
        ("-c constraints.txt", "-c constraints.txt"),
        ("--find-links ./wheels\nna-hello", "--find-links ./wheels"),
        ("numpy==1.26 # ./not/a/path", None),
        ("numpy>=1.2; python_version >= '3.8'\ntorch --extra-index-url https://download.pytorch.org/whl/cu121", None),
        ("--extra-index-url https://pypi.example.com/simple\nna-hello", None),
        ("na-hello @ https://example.com/na_hello-1.0-py3-none-any.whl", None),
        ("git+https://github.com/org/repo.git@v1#egg=repo", None),
        ("", None),
    ],
)
def test_local_requirement(text: str, local: str | None) -> None:
    assert local_requirement(text) == local


def test_key_normalization() -> None:
    python_id = {"executable": "/usr/bin/python3.11", "version": "3.11.7"}
    inputs = {"manager": "pip", "python": python_id}
    base = cache_key(inputs, "numpy==1.26\nNa_Hello[CLI, extra] >= 1.0 ; python_version >= '3.8'\n")
    same = [
        "# pinned\nna-hello[extra,cli]>=1.0;python_version>='3.8'   # why\n\n   numpy == 1.26\n",
        "na.hello [ Extra , CLI ]>=1.0; python_version >= '3.8'\nNUMPY==1.26",
        "numpy==\\\n1.26\nna-hello[cli,extra]>=1.0 ; python_version>='3.8'",
    ]
    assert all(cache_key(inputs, text) == base for text in same)
    assert normalize_requirements("b\n--pre\na\n-i https://x/simple\n") == ["--pre", "-i https://x/simple", "a", "b"]

    different = [
        "numpy==1.26\nna-hello[cli,extra]>=2.0 ; python_version >= '3.8'",
        "numpy==1.26\nna-hello>=1.0 ; python_version >= '3.8'",
        "--pre\nnumpy==1.26\nna-hello[cli,extra]>=1.0 ; python_version >= '3.8'",
    ]
    assert all(cache_key(inputs, text) != base for text in different)
    # Options keep their order: it can matter to pip (index precedence).
    assert cache_key(inputs, "-i https://a\n--extra-index-url https://b") != cache_key(
        inputs, "--extra-index-url https://b\n-i https://a"
    )
    text = "numpy==1.26\nna-hello[cli,extra]>=1.0;python_version>='3.8'"
    assert cache_key(inputs, text) == base
    for python in (
        {"executable": "/usr/bin/python3.11", "version": "3.11.8"},
        {"executable": "/opt/py/bin/python3.11"},
    ):
        assert cache_key({**inputs, "python": {**python_id, **python}}, text) != base


def test_key_covers_the_interpreter_and_system_site_packages() -> None:
    env = hermetic_env()
    isolated = PipManager(env, NullReporter(), sys.executable).cache_key_inputs()
    with_system = PipManager(env, NullReporter(), sys.executable, system_site_packages=True).cache_key_inputs()
    assert cache_key(isolated, "na-hello") != cache_key(with_system, "na-hello")
    identity = interpreter_identity(sys.executable, env)
    assert identity["executable"] == os.path.realpath(sys.executable)
    assert identity["version"] == sys.version
    assert identity["implementation"] == sys.implementation.name
    assert identity["platform"] == sysconfig.get_platform()
    others = [
        p
        for p in ("/usr/bin/python3", "/usr/local/bin/python3")
        if Path(p).exists() and os.path.realpath(p) != identity["executable"]
    ]
    if others:  # another interpreter on this machine: another key
        other = PipManager(env, NullReporter(), others[0]).cache_key_inputs()
        assert cache_key(other, "na-hello") != cache_key(isolated, "na-hello")


def test_leftovers_of_dead_builds_are_cleared_and_live_ones_kept(tmp_path: Path) -> None:
    cache = VenvCache(tmp_path)
    dead = tmp_path / ".tmp-dead"
    dead.mkdir()
    (dead / ".building").touch()
    live = tmp_path / ".tmp-live"
    live.mkdir()
    (live / ".building").touch()
    trash = tmp_path / ".trash-x"
    (trash / "k").mkdir(parents=True)
    failed_build_lock = tmp_path / f"{'a' * 32}.lock"  # a build that failed leaves its key's lock file
    failed_build_lock.touch()
    with io.FileIO(os.open(live / ".building", os.O_RDWR), "r+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert cache.evict() == []
        assert live.exists() and not dead.exists() and not trash.exists() and not failed_build_lock.exists()


def test_a_damaged_entry_is_rebuilt(wheels: Path, tmp_path: Path) -> None:
    settings = settings_for(wheels, tmp_path / "cache")
    first = prep(tmp_path / "a", "na-solo==1.0", settings)
    assert first.lease is not None
    first.lease.close()
    (tmp_path / "cache" / first.lease.key / "meta.json").write_text("{not json")
    reporter = ListReporter()
    again = prep(tmp_path / "b", "na-solo==1.0", settings, reporter)
    assert again.lease is not None and again.lease.key == first.lease.key
    assert f"cache miss {first.lease.key[:12]}: building" in reporter.lines
    assert output([str(again.python), "-c", "import na_solo"]).returncode == 0
    again.lease.close()


def test_thin_venv_pth_adds_the_entry(wheels: Path, tmp_path: Path) -> None:
    # The thin venv's own site-packages holds only the .pth (and what the task installs later).
    prepared = prep(tmp_path / "w", "na-hello==1.0", settings_for(wheels, tmp_path / "cache"))
    assert prepared.lease is not None
    thin = site_packages((tmp_path / "w").resolve() / "venv")
    assert sorted(p.name for p in thin.iterdir()) == [PTH_NAME]
    entry_site = site_packages(tmp_path / "cache" / prepared.lease.key / "venv")
    assert str(entry_site) in (thin / PTH_NAME).read_text()
    paths = output([str(prepared.python), "-c", "import sys; print('\\n'.join(sys.path))"]).stdout.splitlines()
    assert paths.index(str(thin)) < paths.index(str(entry_site))
    prepared.lease.close()


def test_console_scripts_with_long_paths(wheels: Path, tmp_path: Path) -> None:
    # Past 127 bytes a `#!` line fails: pip then writes (and the thin venv rewrites) the `#!/bin/sh` exec form.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    prepared = prep(deep / "work", "na-hello==1.0", settings_for(wheels, deep / "cache"))
    assert prepared.lease is not None
    entry_script = deep / "cache" / prepared.lease.key / "venv" / "bin" / "na-hello"
    script = (deep / "work").resolve() / "venv" / "bin" / "na-hello"
    assert entry_script.read_text().startswith("#!/bin/sh\n")
    assert not script.is_symlink()
    assert script.read_text().startswith(f"#!/bin/sh\n'''exec' \"{script.parent / 'python'}\" ")
    run = output([str(script)])
    assert run.returncode == 0, run.stderr
    assert run.stdout == "script says cached hello\n"
    prepared.lease.close()


def test_thin_venv_of_a_hand_made_entry(tmp_path: Path) -> None:
    # An entry as a build leaves it, written by hand: built in a temp folder, then renamed to its key.
    built = tmp_path / ".tmp-build" / "venv"
    venv = tmp_path / ("f" * 32) / "venv"
    site = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
    (venv / site).mkdir(parents=True)
    (venv / site / "na_handmade.py").write_text("VALUE = 'from the entry'\n")
    (venv / "pyvenv.cfg").write_text(
        f"home = {Path(sys.executable).parent}\ninclude-system-site-packages = false\ncommand = virtualenv {built}\n"
    )
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    (venv / "bin" / "python3").symlink_to("python")
    (venv / "bin" / "tool").write_text(f"#!{built}/bin/python\nimport na_handmade\nprint(na_handmade.VALUE)\n")
    (venv / "bin" / "tool").chmod(0o755)
    (venv / "bin" / "data.bin").write_bytes(b"\x00\x01")
    (venv / "bin" / "activate").write_text(f"VIRTUAL_ENV='{built}'\n")
    (venv / "share" / "jupyter" / "kernels" / "python3").mkdir(parents=True)
    (venv / "share" / "jupyter" / "kernels" / "python3" / "kernel.json").write_text("{}")
    (venv / "share" / "many").mkdir()
    for i in range(300):
        (venv / "share" / "many" / f"f{i}").touch()
    meta = {"python": "bin/python", "purelib": site, "platlib": site, "built_prefix": str(built)}
    entry = CacheEntry("f" * 32, venv.parent, meta)

    thin = tmp_path / "work" / "venv"
    python = make_thin_venv(entry, thin)
    assert python == thin / "bin" / "python" and (thin / "bin" / "python3").readlink() == Path("python")
    assert "command" not in (thin / "pyvenv.cfg").read_text()
    assert (thin / "bin" / "activate").read_text() == f"VIRTUAL_ENV='{thin}'\n"
    assert (thin / "bin" / "data.bin").resolve() == venv / "bin" / "data.bin"
    kernels = thin / "share" / "jupyter" / "kernels"
    assert kernels.is_dir() and not kernels.is_symlink()  # a kernel the task adds stays in its venv
    assert (kernels / "python3" / "kernel.json").read_text() == "{}"
    assert (thin / "share" / "many").is_symlink()  # past the budget: one link, not 300
    assert output([str(thin / "bin" / "tool")]).stdout == "from the entry\n"
    assert output([str(python), "-c", "import sys; print(sys.prefix)"]).stdout.strip() == str(thin)
