"""Where a task without a repository runs, and what: the source the SDK stored in `script.diff`, or a file at the
absolute path the SDK's standalone `Task.create(script=...)` stores, as clearml-agent runs it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from notebook_agent.environment.errors import EnvironmentSetupError
from notebook_agent.environment.reporter import BuildReporter
from notebook_agent.environment.script import is_absolute, is_literal_script, write_script

# What to do when a task names a file this machine does not have: give the task its source.
HOW_TO_SHIP_SOURCE = (
    "create the task with its source (Task.init in the script, clearml-task --script, or Task.create with a repository)"
)


@dataclass(frozen=True)
class Entry:
    """How to start a task: in `cwd`, the interpreter arguments after `-u` (`[file, *args]` or `["-m", ...]`)."""

    cwd: Path
    argv: list[str]


def split_entry(entry_point: str) -> list[str]:
    """`"train.py --epochs 3"` as `["train.py", "--epochs", "3"]`; unbalanced quotes: the whole text as one name."""
    try:
        return shlex.split(entry_point) or [entry_point]
    except ValueError:
        return [entry_point.strip()]


def without_repository(code_dir: Path, entry_point: str, working_dir: str, diff: str, reporter: BuildReporter) -> Entry:
    """Write the stored source under `code_dir` and run it there, or run the absolute entry point where it is.

    The task runs in its own folder (`code_dir`), or in `working_dir` when that is an absolute folder of this
    machine; a relative `working_dir` has no folder to name without a repository and is ignored, as clearml-agent
    does. Raises EnvironmentSetupError with a one-line reason for every entry point that cannot run here."""
    cwd = _run_dir(code_dir, working_dir, reporter)
    has_source = is_literal_script(diff)
    if entry_point.startswith("-m "):
        module_argv = split_entry(entry_point[3:])
        if has_source:
            # `-m pkg.mod` with its source: write that module and run it from the code folder, where `-m` finds it.
            write_script(code_dir, module_argv[0].replace(".", "/") + ".py", diff)
            if cwd != code_dir:
                reporter.log(
                    f"working dir {working_dir} not used: the module's stored source runs from the task's folder"
                )
            cwd = code_dir
        return Entry(cwd, ["-m", *module_argv])
    # The whole entry point names the file unless it is "file.py args...", as clearml-agent reads it.
    parts = split_entry(entry_point)
    name, args = (parts[0], parts[1:]) if len(parts) > 1 and parts[0].endswith(".py") else (entry_point, [])
    if has_source:
        if is_absolute(name):
            # Its path on the machine that made the task: run the stored source, so the task runs anywhere.
            written = write_script(code_dir, PurePosixPath(name.replace("\\", "/")).name, diff)
            reporter.log(
                f"running the task's stored source as {written.name} (its entry point {name} is a path on "
                "the machine that created the task)"
            )
        else:
            written = write_script(code_dir, name, diff)
        if cwd == code_dir:
            return Entry(written.parent, [written.name, *args])
        return Entry(cwd, [str(written), *args])
    if is_absolute(name):
        if Path(name).is_file():
            reporter.log(f"running {name} from this machine: the task stores the script's path, not its source")
            return Entry(cwd, [name, *args])
        raise EnvironmentSetupError(
            f"entry point not found on this machine: {name} (the task stores only the path of its script, not its "
            f"source; copy the file to that path, or {HOW_TO_SHIP_SOURCE})"
        )
    raise EnvironmentSetupError(
        f"entry point not found: {entry_point}: the task has no repository and no script source ({HOW_TO_SHIP_SOURCE})"
    )


def _run_dir(code_dir: Path, working_dir: str, reporter: BuildReporter) -> Path:
    if working_dir in ("", "."):
        return code_dir
    if is_absolute(working_dir):
        folder = Path(working_dir)
        if not folder.is_dir():
            raise EnvironmentSetupError(f"working dir not found on this machine: {working_dir}")
        return folder
    reporter.log(
        f"script.working_dir {working_dir!r} ignored: a task without repository runs in its own folder "
        "(as under clearml-agent); an absolute working dir is used as it is"
    )
    return code_dir
