"""prepare(): from a task document to code, a venv and an argv that runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from notebook_agent.environment import BuildSettings, EnvironmentSetupError, ListReporter, prepare
from notebook_agent.environment.build import _entry_argv
from notebook_agent.environment.requirements import task_requirements as _requirements
from notebook_agent.environment.requirements import with_frozen
from tests.fakes.gitrepo import commit_files, git, make_git_repo
from tests.unit.environment.conftest import GREETING


def run_task(prepared_argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(prepared_argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository whose task commit is c1; c2 (later on main) must not be what runs. Returns (path, c1, diff)."""
    path = tmp_path / "origin"
    c1 = make_git_repo(path, {"src/train.py": "print('committed')\n", "requirements.txt": "unused-by-the-task\n"})
    (path / "src" / "train.py").write_text("import na_hello\nprint('diff says', na_hello.GREETING)\n")
    diff = git(path, "diff") + "\n"
    git(path, "checkout", "--quiet", "--", ".")
    commit_files(path, {"src/train.py": "print('later commit')\n"})
    return path, c1, diff


def test_repository_task(
    repo: tuple[Path, str, str], tmp_path: Path, env: dict[str, str], offline_pip_args: tuple[str, ...]
) -> None:
    path, c1, diff = repo
    task = {
        "script": {
            "repository": path.as_uri(),
            "branch": "main",
            "version_num": c1,
            "entry_point": "train.py",
            "working_dir": "src",
            "diff": diff,
            "requirements": {"pip": "na-hello==1.0\n"},
        }
    }
    reporter = ListReporter()
    work = tmp_path / "work"
    prepared = prepare(task, work, settings=BuildSettings(pip_args=offline_pip_args), env=env, reporter=reporter)

    assert prepared.commit == c1
    assert prepared.cwd == work.resolve() / "code" / "src"
    assert prepared.python == work.resolve() / "venv" / "bin" / "python"
    assert prepared.argv == [str(prepared.python), "-u", "train.py"]
    assert prepared.requirements == "na-hello==1.0\n"
    assert "na-hello==1.0" in prepared.frozen
    assert run_task(prepared.argv, prepared.cwd, env) == f"diff says {GREETING}\n"

    names = [name for name, _ in reporter.steps]
    assert names == ["clone", "diff", "venv", "requirements", "freeze", "ready"]
    fractions = [fraction for _, fraction in reporter.steps]
    assert fractions == sorted(fractions) and reporter.steps[-1] == ("ready", 1.0)
    assert any(line.startswith("$ git -c advice.detachedHead=false clone") for line in reporter.lines)
    assert "installing requirements with uv pip" in reporter.lines  # uv replaces pip by default
    assert any(" pip install --python " in line and line.startswith("$ ") for line in reporter.lines)
    assert BuildSettings().venvs_cache_dir is None and prepared.lease is None  # the cache is off unless set


def test_repository_task_from_the_venv_cache(
    repo: tuple[Path, str, str], tmp_path: Path, env: dict[str, str], offline_pip_args: tuple[str, ...]
) -> None:
    path, c1, diff = repo
    script = {"repository": path.as_uri(), "version_num": c1, "entry_point": "train.py", "working_dir": "src"}
    task = {"script": {**script, "diff": diff, "requirements": {"pip": "na-hello==1.0\n"}}}
    settings = BuildSettings(pip_args=offline_pip_args, venvs_cache_dir=tmp_path / "cache")
    built = prepare(task, tmp_path / "w1", settings=settings, env=env, reporter=ListReporter())
    assert built.lease is not None
    built.lease.close()

    reporter = ListReporter()
    work = tmp_path / "w2"
    prepared = prepare(task, work, settings=settings, env=env, reporter=reporter)
    assert prepared.lease is not None and prepared.lease.key == built.lease.key
    assert [name for name, _ in reporter.steps] == ["clone", "diff", "cache", "ready"]
    assert ("cache", 0.2, "hit", None) in reporter.events  # the panel's progress bar says so too
    assert any(line.startswith(f"cache hit {built.lease.key[:12]}:") for line in reporter.lines)
    assert prepared.python == work.resolve() / "venv" / "bin" / "python"
    assert prepared.frozen == built.frozen and "na-hello==1.0" in prepared.frozen
    assert run_task(prepared.argv, prepared.cwd, env) == f"diff says {GREETING}\n"
    prepared.lease.close()


def test_task_without_repository(tmp_path: Path, env: dict[str, str], offline_pip_args: tuple[str, ...]) -> None:
    # As the SDK stores it: the whole script in script.diff, entry_point a file name, working_dir ".".
    source = "import na_hello\nprint('standalone', na_hello.GREETING)\n"
    task = {
        "script": {
            "repository": "",
            "branch": "",
            "version_num": "",
            "entry_point": "hello.py",
            "working_dir": ".",
            "diff": source,
            # The agent stores the frozen list back as a list of lines.
            "requirements": {"pip": ["# Python 3.11.7", "na-hello==1.0"]},
        }
    }
    reporter = ListReporter()
    prepared = prepare(task, tmp_path, settings=BuildSettings(pip_args=offline_pip_args), env=env, reporter=reporter)

    assert prepared.commit is None
    assert prepared.requirements == "# Python 3.11.7\nna-hello==1.0"
    assert (prepared.cwd / "hello.py").read_text() == source
    assert run_task(prepared.argv, prepared.cwd, env) == f"standalone {GREETING}\n"
    assert [name for name, _ in reporter.steps] == ["diff", "venv", "requirements", "freeze", "ready"]
    # Each step is in the log with its seconds; the install is counted.
    assert "environment: requirements" in reporter.lines
    summary = [line for line in reporter.lines if line.startswith("environment built in ")]
    assert len(summary) == 1 and "requirements " in summary[0] and "1 package installed" in summary[0], summary
    # The task runs as if its venv were activated: its bin/ first on PATH.
    venv_bin = str(prepared.python.parent)
    assert prepared.env["PATH"].split(os.pathsep)[0] == venv_bin
    assert prepared.env["VIRTUAL_ENV"] == str(prepared.python.parent.parent)


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ({"entry_point": "nope.py"}, "entry point not found: nope.py in working dir src"),
        ({"entry_point": "train.py", "working_dir": "."}, "entry point not found: train.py in working dir ."),
        ({"entry_point": "train.py", "working_dir": "docs"}, "working dir not found: docs"),
        ({"entry_point": "train.py", "working_dir": "../.."}, "working dir escapes its directory: ../.."),
        ({"entry_point": ""}, "entry point not set: the task has no script.entry_point"),
    ],
)
def test_missing_entry_point_or_working_dir(
    repo: tuple[Path, str, str], tmp_path: Path, env: dict[str, str], script: dict, reason: str
) -> None:
    task = {"script": {"repository": str(repo[0]), "working_dir": "src", **script}}
    with pytest.raises(EnvironmentSetupError) as info:
        prepare(task, tmp_path / "work", settings=BuildSettings(), env=env, reporter=ListReporter())
    assert info.value.reason == reason
    assert not (tmp_path / "work" / "venv").exists()  # it fails before spending time on a venv


def test_no_repository_and_no_source(tmp_path: Path, env: dict[str, str]) -> None:
    task = {"script": {"entry_point": "train.py", "diff": "diff --git a/x b/x\n"}}
    with pytest.raises(EnvironmentSetupError) as info:
        prepare(task, tmp_path, settings=BuildSettings(), env=env, reporter=ListReporter())
    assert info.value.reason.startswith("entry point not found: train.py: the task has no repository and no script")
    assert "Task.init" in info.value.reason  # and how to give the task its source


def test_requirement_precedence(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("from-repo\n")
    assert _requirements({"requirements": {"pip": "from-task"}}, tmp_path) == "from-task"
    assert _requirements({"requirements": {"pip": ["a", "b"]}}, tmp_path) == "a\nb"
    assert _requirements({"requirements": {"pip": "  \n"}}, tmp_path) == "from-repo\n"
    assert _requirements({"requirements": None}, tmp_path) == "from-repo\n"
    assert _requirements({}, None) == ""
    assert _requirements({}, tmp_path / "elsewhere") == ""


def test_requirements_record_keeps_the_original_and_leaves_out_local_files() -> None:
    frozen = ["six==1.17.0", "-e file:///src/notebook-agent", "demo @ file:///tmp/demo-1.0.whl", "clearml==2.1.12"]
    assert with_frozen({"pip": "six\nclearml"}, frozen) == {
        "pip": ["six==1.17.0", "clearml==2.1.12"],
        "org_pip": "six\nclearml",
    }
    # A second run keeps the first original; nothing recordable leaves the task's requirements as they are.
    assert with_frozen({"pip": ["six==1.16"], "org_pip": "six"}, ["six==1.17.0"])["org_pip"] == "six"
    assert with_frozen({"pip": "six"}, ["-e /src/x"]) is None


def test_entry_point_forms(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "train.py").write_text("")
    assert _entry_argv(tmp_path, tmp_path, "train.py", ".") == ["train.py"]
    assert _entry_argv(tmp_path, tmp_path, "-m pkg.main --fast", ".") == ["-m", "pkg.main", "--fast"]
    assert _entry_argv(tmp_path, tmp_path, "train.py --epochs 3", ".") == [
        "train.py",
        "--epochs",
        "3",
    ]
    assert _entry_argv(tmp_path, tmp_path / "src", "../train.py", "src") == ["../train.py"]
    with pytest.raises(EnvironmentSetupError, match="escapes"):
        _entry_argv(tmp_path / "src", tmp_path / "src", "../train.py", ".")
    # An absolute path is refused in a checkout, also when it names a file of the checkout.
    with pytest.raises(EnvironmentSetupError, match="must be a path inside the repository"):
        _entry_argv(tmp_path, tmp_path, str(tmp_path / "train.py"), ".")


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"uv_replace_pip": False}, "uv_replace_pip is off"),
        ({"system_site_packages": True}, "system site packages are on"),
    ],
)
def test_pip_installs_when_uv_must_not(
    tmp_path: Path, env: dict[str, str], offline_pip_args: tuple[str, ...], settings: dict, why: str
) -> None:
    task = {"script": {"entry_point": "job.py", "diff": "import na_hello\n", "requirements": {"pip": "na-hello\n"}}}
    reporter = ListReporter()
    prepared = prepare(
        task, tmp_path, settings=BuildSettings(pip_args=offline_pip_args, **settings), env=env, reporter=reporter
    )
    said = [line for line in reporter.lines if line.startswith("installing requirements with pip")]
    assert said and why in said[0]
    assert any(line.startswith(f"$ {prepared.python} -m pip install") for line in reporter.lines)
    assert any(line.startswith("na-hello==") for line in prepared.frozen)


def test_a_failing_uv_install_falls_back_to_pip_and_the_reason_names_the_requirement(
    tmp_path: Path, env: dict[str, str], offline_pip_args: tuple[str, ...]
) -> None:
    task = {"script": {"entry_point": "job.py", "diff": "x = 1\n", "requirements": {"pip": "no-such-thing==3.1\n"}}}
    reporter = ListReporter()
    with pytest.raises(EnvironmentSetupError) as info:
        prepare(task, tmp_path, settings=BuildSettings(pip_args=offline_pip_args), env=env, reporter=reporter)
    fallback = [line for line in reporter.lines if line.startswith("uv pip install failed")]
    assert fallback and "installing with pip instead" in fallback[0]
    assert info.value.reason.startswith("pip install failed:")
    assert "no-such-thing" in info.value.reason


def test_repository_requirements_from_the_root_down_to_the_entry_point(tmp_path: Path) -> None:
    (tmp_path / "src" / "models").mkdir(parents=True)
    (tmp_path / "requirements.txt").write_text("root-dep\n")
    (tmp_path / "src" / "requirements.txt").write_text("src-dep")
    (tmp_path / "src" / "models" / "requirements.txt").write_text("-r ../../extra.txt\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "requirements.txt").write_text("not-on-the-way\n")
    text = _requirements({}, tmp_path, tmp_path / "src" / "models")
    assert text == "root-dep\nsrc-dep\n-r src/models/requirements.txt\n"
    assert _requirements({}, tmp_path, tmp_path / "elsewhere-outside" / ".." / "..") == "root-dep\n"
