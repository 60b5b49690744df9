"""Shared fixtures: a fake home folder and secret-looking values that are easy to search for in output."""

from __future__ import annotations

from pathlib import Path

import pytest

SECRET = "s3cr3t-Sx9!XTov_G-#vspE*Y(h$Anm&DIc5Ou"
ACCESS = "AKEY1234567890ABCDEFGH"
GIT_PASS = "ghp_gitTokenValue0123456789"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty home folder; pass env={"HOME": str(home)} so ~ resolves there."""
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
