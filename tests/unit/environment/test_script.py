"""write_script and the literal-script rule for tasks whose source travels in script.diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from notebook_agent.environment import EnvironmentSetupError
from notebook_agent.environment.script import is_literal_script, write_script


def test_writes_the_source_byte_for_byte(tmp_path: Path) -> None:
    source = "print('hi')\r\nprint('ü')\n"
    path = write_script(tmp_path, "sub/dir/train.py", source)
    assert path == (tmp_path / "sub" / "dir" / "train.py").resolve()
    assert path.read_bytes() == source.encode()


@pytest.mark.parametrize("entry", ["../x.py", "a/../../x.py", "/tmp/x.py", "C:\\x.py", "", "  "])
def test_refuses_entry_points_outside_the_work_dir(tmp_path: Path, entry: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(EnvironmentSetupError, match="entry point"):
        write_script(work, entry, "print(1)\n")
    assert list(tmp_path.iterdir()) == [work]


def test_refuses_a_symlink_that_leads_out(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "out").symlink_to(tmp_path)
    with pytest.raises(EnvironmentSetupError, match="escapes"):
        write_script(work, "out/x.py", "print(1)\n")


@pytest.mark.parametrize(
    ("diff", "literal"),
    [
        ("print('hi')\n", True),
        ("diff --git a/x.py b/x.py\n", False),
        ("\n  DIFF --git a/x b/x\n", False),
        ("Submodule lib 1a2b..3c4d:\ndiff --git a/lib/x b/lib/x\n", False),
        ("", False),
    ],
)
def test_is_literal_script(diff: str, literal: bool) -> None:
    assert is_literal_script(diff) is literal
