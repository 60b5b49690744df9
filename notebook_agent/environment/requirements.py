"""What a task asks to install: its pip requirements (or the repository's requirements.txt files, in
clearml-agent's order) and its conda specs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from notebook_agent.environment.cache_key import local_requirement


def task_requirements(script: Mapping[str, Any], repo_root: Path | None, entry_dir: Path | None = None) -> str:
    """The task's `requirements.pip` (text, or the list of lines the agent stores), else every requirements.txt
    from the repository root down to the entry point's folder (clearml-agent's order), else nothing."""
    pip = (script.get("requirements") or {}).get("pip")
    if isinstance(pip, (list, tuple)):
        pip = "\n".join(str(line) for line in pip)
    if isinstance(pip, str) and pip.strip():
        return pip
    if repo_root is None:
        return ""
    parts = []
    for folder in folders_down_to(repo_root, entry_dir or repo_root):
        found = folder / "requirements.txt"
        if found.is_file():
            text = found.read_text(encoding="utf-8")
            # Inline when self-contained (so the venv cache can key on it); by reference when it names other
            # files, so pip resolves them next to it.
            if local_requirement(text) is None:
                parts.append(text if text.endswith("\n") else text + "\n")
            else:
                parts.append(f"-r {found.relative_to(repo_root)}\n")
    return "".join(parts)


def with_frozen(requirements: Mapping[str, Any] | None, frozen: list[str]) -> dict[str, Any] | None:
    """A task's requirements after its run, as clearml-agent stores them: `frozen` as `pip`, the original list kept
    as `org_pip`; None when there is nothing to record.

    The frozen lines that name files of this machine are left out (editable installs of a checkout such as
    `-e /src/...`, `pkg @ file://...`): a clone runs this record as its requirements, and those lines would rebuild
    local checkouts or fail where the files are not."""
    kept = [line for line in frozen if local_requirement(line) is None]
    if not kept:
        return None
    stored = dict(requirements or {})
    if "pip" in stored and "org_pip" not in stored:
        stored["org_pip"] = stored["pip"]
    stored["pip"] = kept
    return stored


def folders_down_to(root: Path, leaf: Path) -> list[Path]:
    """root, then each folder on the way to `leaf` (only `root` when `leaf` is not inside it)."""
    try:
        relative = leaf.resolve().relative_to(root.resolve())
    except ValueError:
        return [root]
    folders = [root]
    for part in relative.parts:
        folders.append(folders[-1] / part)
    return folders


def conda_specs(script: Mapping[str, Any]) -> tuple[str, ...]:
    """The task's `requirements.conda` as match specs (text or list; comments and blank lines dropped)."""
    conda = (script.get("requirements") or {}).get("conda")
    if isinstance(conda, (list, tuple)):
        conda = "\n".join(str(line) for line in conda)
    if not isinstance(conda, str):
        return ()
    specs = []
    for line in conda.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            specs.append(line)
    return tuple(specs)
