"""Small real git repositories for tests, committed with a local identity (no global git config needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git(path: Path, *args: str) -> str:
    """Run git in `path` with an environment that ignores the user's and the system's git config."""
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
    }
    result = subprocess.run(["git", *args], cwd=path, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


def commit_files(path: Path, files: dict[str, str], message: str = "update") -> str:
    """Write `files` (relative path -> text) into the repository at `path`, commit them and return the sha."""
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "--message", message)
    return git(path, "rev-parse", "HEAD")


def make_git_repo(path: Path, files: dict[str, str], *, branch: str = "main") -> str:
    """Create a repository at `path` with one commit of `files` on `branch`; returns the commit sha."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", f"--initial-branch={branch}")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "commit.gpgsign", "false")
    return commit_files(path, files, "initial")
