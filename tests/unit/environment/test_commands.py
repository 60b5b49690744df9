"""commands.run: streaming, masking, exit codes, stdin, timeouts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from notebook_agent.environment import ListReporter
from notebook_agent.environment.commands import TAIL_LINES, mask_text, run


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_streams_lines_and_returns_the_exit_code(tmp_path: Path, env: dict[str, str], reporter: ListReporter) -> None:
    result = run(
        py("import sys; print('one'); print('two', file=sys.stderr); sys.exit(3)"),
        cwd=tmp_path,
        env=env,
        reporter=reporter,
    )
    assert result.returncode == 3
    assert reporter.lines[0].startswith("$ ") and reporter.lines[0].endswith("sys.exit(3)'")
    assert sorted(reporter.lines[1:]) == ["one", "two"]
    assert sorted(result.stdout.splitlines()) == ["one", "two"]
    assert not result.timed_out


def test_masks_credentials_in_the_command_and_output(
    tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    url = "https://alice:hunter2pw@example.com/x.git"
    result = run(
        [*py("import sys; print(sys.argv[1]); print('token=tok-123')"), url],
        cwd=tmp_path,
        env=env,
        reporter=reporter,
        secrets=["tok-123"],
    )
    text = reporter.text + result.stdout + " ".join(result.args)
    assert "hunter2pw" not in text and "tok-123" not in text
    assert "https://alice:****@example.com/x.git" in reporter.lines[0]
    assert reporter.lines[1:] == ["https://alice:****@example.com/x.git", "token=****"]


def test_mask_text_hides_url_encoded_secrets() -> None:
    assert mask_text("https://u:p%40ss@h/ and p@ss", ["p@ss"]) == "https://u:****@h/ and ****"


def test_missing_executable_is_a_result_not_an_exception(
    tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    result = run(["no-such-command-xyz"], cwd=tmp_path, env=env, reporter=reporter)
    assert result.returncode == 127
    assert "cannot run no-such-command-xyz" in result.stdout


def test_input_goes_to_stdin_and_quiet_keeps_the_reporter_out(
    tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    result = run(
        py("import sys; sys.stdout.write(sys.stdin.read().upper())"),
        cwd=tmp_path,
        env=env,
        reporter=reporter,
        input="abc\n" * 50_000,
        quiet=True,
        capture=True,
    )
    assert result.returncode == 0
    assert result.stdout.count("ABC\n") == 50_000  # capture keeps everything
    assert reporter.lines == []


def test_only_the_tail_is_kept_but_every_line_is_logged(
    tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    result = run(py("for i in range(1000): print(i)"), cwd=tmp_path, env=env, reporter=reporter)
    assert len(reporter.lines) == 1001
    assert result.stdout.splitlines() == [str(i) for i in range(1000 - TAIL_LINES, 1000)]


def test_timeout_kills_the_process_group(tmp_path: Path, env: dict[str, str], reporter: ListReporter) -> None:
    code = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('started', flush=True); time.sleep(60)"
    )
    result = run(py(code), cwd=tmp_path, env=env, reporter=reporter, timeout=1.5)
    assert result.timed_out
    assert result.returncode != 0
    assert "started" in reporter.lines
    assert reporter.lines[-1].startswith("timed out after 1.5 s")


def test_env_is_exactly_what_is_given(tmp_path: Path, reporter: ListReporter) -> None:
    result = run(
        py("import os; print(sorted(k for k in os.environ if k.startswith('NA_')))"),
        cwd=tmp_path,
        env={"NA_ONLY": "1"},
        reporter=reporter,
    )
    assert result.stdout.strip() == "['NA_ONLY']"


class Interrupt(Exception):
    pass


class InterruptingReporter(ListReporter):
    """Raises on the first output line, as a Ctrl-C in the notebook would during a long pip install."""

    def log(self, line: str) -> None:
        super().log(line)
        if not line.startswith("$ "):
            raise Interrupt


def test_an_interrupt_kills_the_command(tmp_path: Path, env: dict[str, str]) -> None:
    reporter = InterruptingReporter()
    with pytest.raises(Interrupt):
        run(
            py("import os, time; print(os.getpid(), flush=True); time.sleep(60)"),
            cwd=tmp_path,
            env=env,
            reporter=reporter,
        )
    with pytest.raises(ProcessLookupError):
        os.kill(int(reporter.lines[-1]), 0)
