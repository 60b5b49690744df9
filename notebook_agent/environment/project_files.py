"""Reading a repository's project files (pyproject.toml, uv.lock, poetry.lock) for the uv sync and poetry modes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]


def read_toml(path: Path) -> dict[str, Any] | None:
    """The parsed TOML file, or None when it is missing, malformed or there is no TOML parser (3.10 sans tomli)."""
    if tomllib is None:
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def is_local_location(value: str) -> bool:
    """A relative file path (inside or next to the checkout), as opposed to a URL or an absolute path."""
    return bool(value) and "://" not in value and not os.path.isabs(value) and not value.startswith("~")


def project_fingerprint(project: Path, names: tuple[str, ...]) -> dict[str, str]:
    """sha256 of each project file that exists (the venv cache key of a project manager)."""
    found = {}
    for name in names:
        path = project / name
        if path.is_file():
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found
