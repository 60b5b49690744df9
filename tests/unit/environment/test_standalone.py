"""Tasks without a repository: the stored source written out, or the SDK's absolute script path run where it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from notebook_agent.environment import EnvironmentSetupError, ListReporter
from notebook_agent.environment.standalone import Entry, without_repository


def test_stored_source_of_a_module_or_a_file(tmp_path: Path) -> None:
    reporter = ListReporter()
    assert without_repository(tmp_path, "-m pkg.main --fast", ".", "print('m')\n", reporter) == Entry(
        tmp_path, ["-m", "pkg.main", "--fast"]
    )
    assert (tmp_path / "pkg" / "main.py").read_text() == "print('m')\n"
    entry = without_repository(tmp_path, "sub/run.py", ".", "print('s')\n", reporter)
    assert entry == Entry((tmp_path / "sub").resolve(), ["run.py"])
    assert without_repository(tmp_path, "train.py --epochs 3", ".", "x = 1\n", reporter).argv == [
        "train.py",
        "--epochs",
        "3",
    ]


def test_absolute_entry_point_with_stored_source_runs_the_source(tmp_path: Path) -> None:
    """`Task.create(script=/abs/x.py, packages=...)` stores the path and the source: the source wins, so the task
    also runs on a machine that lacks the file."""
    code = tmp_path / "code"
    code.mkdir()
    reporter = ListReporter()
    entry = without_repository(code, "/elsewhere/scripts/train.py", ".", "print('stored')\n", reporter)
    assert entry == Entry(code.resolve(), ["train.py"])
    assert (code / "train.py").read_text() == "print('stored')\n"
    assert any("stored source as train.py" in line for line in reporter.lines)


def test_absolute_entry_point_runs_where_it_is(tmp_path: Path) -> None:
    script = tmp_path / "scripts" / "train.py"
    script.parent.mkdir()
    script.write_text("print('here')\n")
    code = tmp_path / "code"
    code.mkdir()
    reporter = ListReporter()
    entry = without_repository(code, f"{script} --lr 0.5", ".", "", reporter)
    assert entry == Entry(code, [str(script), "--lr", "0.5"])  # in the task's own folder
    assert any("from this machine" in line for line in reporter.lines)
    # An absolute working dir is used as it is; a relative one has no folder to name and is ignored, saying so.
    assert without_repository(code, str(script), str(tmp_path), "", reporter).cwd == tmp_path
    assert without_repository(code, str(script), "src", "", reporter).cwd == code
    assert any("script.working_dir 'src' ignored" in line for line in reporter.lines)


def test_missing_absolute_entry_point_says_why_and_how(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentSetupError) as info:
        without_repository(tmp_path, "/nowhere/train.py", ".", "", ListReporter())
    reason = info.value.reason
    assert reason.startswith("entry point not found on this machine: /nowhere/train.py")
    assert "Task.init" in reason and "clearml-task --script" in reason
    with pytest.raises(EnvironmentSetupError, match="working dir not found on this machine: /nowhere"):
        without_repository(tmp_path, "/nowhere/train.py", "/nowhere", "", ListReporter())


def test_stored_source_may_not_leave_the_code_folder(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentSetupError, match="escapes"):
        without_repository(tmp_path / "code", "../outside.py", ".", "print('x')\n", ListReporter())
