"""Tasks without a repository: the SDK stores the whole script in `script.diff`; write it out as the entry point."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from notebook_agent.environment.errors import EnvironmentSetupError


def is_literal_script(diff: str) -> bool:
    """True when `script.diff` holds a script rather than a git diff (clearml-agent's LiteralScriptManager rule)."""
    text = diff.lstrip().lower()
    if not text:
        return False
    if text.startswith("diff "):
        return False
    # A diff that starts with a submodule summary line ("Submodule x 1a2b..3c4d:") is still a diff.
    lines = text.splitlines()
    return not (text.startswith("submodule ") and len(lines) > 1 and lines[1].lstrip().startswith("diff "))


def is_absolute(path: str) -> bool:
    """An absolute path on POSIX or Windows (`/x`, `C:\\x`, `C:x`): never one to join under a checkout."""
    windows = PureWindowsPath(path)
    return PurePosixPath(path).is_absolute() or windows.is_absolute() or bool(windows.drive)


def inside(base: Path, relative: str, what: str) -> Path:
    """`base / relative`, refusing absolute paths and any that resolve outside `base` (`../x.py`, symlinks)."""
    if not relative.strip():
        raise EnvironmentSetupError(f"{what} is empty")
    if is_absolute(relative):
        raise EnvironmentSetupError(f"{what} must be a relative path: {relative}")
    target = (base / relative).resolve()
    if not target.is_relative_to(base.resolve()):
        raise EnvironmentSetupError(f"{what} escapes its directory: {relative}")
    return target


def write_script(work_dir: Path, entry_point: str, source: str) -> Path:
    """Write `source` as `work_dir/entry_point` (creating folders) and return its path."""
    path = inside(work_dir, entry_point, "entry point")
    path.parent.mkdir(parents=True, exist_ok=True)
    # newline="" keeps the source's own line endings byte for byte.
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(source)
    return path
