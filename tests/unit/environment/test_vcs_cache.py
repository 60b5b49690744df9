"""The repository mirror cache: a second checkout fetches into the mirror instead of cloning, sees new commits,
keeps the real origin, and never stores a password; a private mirror fetches with the configured credentials."""

from __future__ import annotations

import subprocess
from pathlib import Path

from notebook_agent.environment import ListReporter
from notebook_agent.environment.git import checkout
from notebook_agent.environment.vcs_cache import mirror_path
from tests.fakes.git_http import GitHttpServer
from tests.fakes.gitrepo import commit_files, git, make_git_repo


def test_second_checkout_fetches_into_the_mirror(tmp_path: Path, env: dict[str, str]) -> None:
    source = tmp_path / "source"
    first = make_git_repo(source, {"train.py": "print(1)\n"})
    mirrors = tmp_path / "vcs"
    one = ListReporter()
    assert checkout(str(source), tmp_path / "a", env=env, reporter=one, mirror_root=mirrors) == first
    assert any("mirror" in line and "created" in line for line in one.lines), one.lines
    second = commit_files(source, {"train.py": "print(2)\n"})
    two = ListReporter()
    assert checkout(str(source), tmp_path / "b", env=env, reporter=two, mirror_root=mirrors, branch="main") == second
    assert any("mirror" in line and "updated" in line for line in two.lines), two.lines
    assert not any("clone --mirror" in line for line in two.lines)
    assert (tmp_path / "b" / "train.py").read_text() == "print(2)\n"
    # The task's own git sees the real repository as origin, not the mirror.
    assert git(tmp_path / "b", "remote", "get-url", "origin") == str(source)
    assert mirror_path(mirrors, str(source)).is_dir()


def test_a_broken_mirror_falls_back_to_a_direct_clone(tmp_path: Path, env: dict[str, str]) -> None:
    source = tmp_path / "source"
    sha = make_git_repo(source, {"a.py": "x = 1\n"})
    mirrors = tmp_path / "not-a-dir"
    mirrors.write_text("a file where the cache folder should be")
    reporter = ListReporter()
    assert checkout(str(source), tmp_path / "code", env=env, reporter=reporter, mirror_root=mirrors) == sha
    assert any("cloning directly" in line for line in reporter.lines), reporter.lines


def test_private_mirror_uses_the_credentials_and_stores_none(tmp_path: Path, env: dict[str, str]) -> None:
    password = "mirror-Secret-77"
    source = tmp_path / "source"
    sha = make_git_repo(source, {"a.py": "x = 1\n"})
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(served / "team.git")], check=True)
    mirrors = tmp_path / "vcs"
    reporter = ListReporter()
    with GitHttpServer(served, "alice", password) as server:
        url = f"{server.url}/team.git"
        creds = {"git_user": "alice", "git_pass": password, "mirror_root": mirrors}
        for dest in ("a", "b"):
            assert checkout(url, tmp_path / dest, env=env, reporter=reporter, **creds) == sha
        # A URL carrying its own password is never mirrored (the mirror's config would keep it).
        with_password = url.replace("http://", f"http://alice:{password}@")
        assert checkout(with_password, tmp_path / "c", env=env, reporter=reporter, mirror_root=mirrors) == sha
    assert any("updated" in line for line in reporter.lines)
    assert any("carries a password" in line for line in reporter.lines)
    stored = [p.read_text(errors="replace") for p in mirrors.rglob("config")]
    assert stored and all(password not in text for text in stored)
    assert all(password not in line for line in reporter.lines)
