"""git.checkout and git.apply_diff against real repositories on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from notebook_agent.environment import EnvironmentSetupError, ListReporter
from notebook_agent.environment.git import apply_diff, checkout
from tests.fakes.gitrepo import commit_files, git, make_git_repo
from tests.unit.environment.conftest import run_lines


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A repository with: c1 (tag v1) <- c2 on main, and c3 on branch `feature` from c1."""
    path = tmp_path_factory.mktemp("origin") / "repo"
    c1 = make_git_repo(path, {"train.py": "print('c1')\n", "lib/util.py": "X = 1\n"})
    git(path, "tag", "v1")
    c2 = commit_files(path, {"train.py": "print('c2')\n"})
    git(path, "checkout", "--quiet", "-b", "feature", c1)
    c3 = commit_files(path, {"train.py": "print('c3')\n"})
    git(path, "checkout", "--quiet", "main")
    return {"path": str(path), "c1": c1, "c2": c2, "c3": c3}


def read(dest: Path) -> str:
    return (dest / "train.py").read_text()


def test_local_path_default_branch(
    origin: dict[str, str], tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    dest = tmp_path / "code"
    sha = checkout(origin["path"], dest, env=env, reporter=reporter)
    assert sha == origin["c2"]
    assert read(dest) == "print('c2')\n"
    assert git(dest, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(dest, "status", "--porcelain") == ""
    assert run_lines(reporter)[0].startswith("$ git -c advice.detachedHead=false clone ")


def test_file_url_at_commit(
    origin: dict[str, str], tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    dest = tmp_path / "code"
    sha = checkout(Path(origin["path"]).as_uri(), dest, commit=origin["c1"], branch="main", env=env, reporter=reporter)
    assert sha == origin["c1"]
    assert read(dest) == "print('c1')\n"
    assert (dest / "lib" / "util.py").is_file()


def test_short_commit_tag_and_branch(
    origin: dict[str, str], tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    assert checkout(origin["path"], tmp_path / "a", commit=origin["c3"][:7], env=env, reporter=reporter) == origin["c3"]
    assert (
        checkout(origin["path"], tmp_path / "b", tag="v1", branch="feature", env=env, reporter=reporter) == origin["c1"]
    )
    dest = tmp_path / "c"
    assert checkout(origin["path"], dest, branch="feature", env=env, reporter=reporter) == origin["c3"]
    assert read(dest) == "print('c3')\n"
    assert git(dest, "symbolic-ref", "--short", "HEAD") == "feature"
    # Hand-edited tasks often name the remote branch.
    assert checkout(origin["path"], tmp_path / "d", branch="origin/feature", env=env, reporter=reporter) == origin["c3"]


def test_missing_repository(tmp_path: Path, env: dict[str, str], reporter: ListReporter) -> None:
    missing = tmp_path / "nowhere" / "repo"
    with pytest.raises(EnvironmentSetupError) as info:
        checkout(str(missing), tmp_path / "code", env=env, reporter=reporter)
    assert info.value.reason == f"git clone failed: repository not found: {missing}"
    assert "does not exist" in info.value.detail


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"commit": "deadbeef" * 5}, "commit " + "deadbeef" * 5 + " not found in "),
        ({"commit": "1a2b3c4"}, "commit 1a2b3c4 not found in "),
        ({"tag": "v9"}, "tag v9 not found in "),
        ({"branch": "nope"}, "branch nope not found in "),
    ],
)
def test_unknown_revision(
    origin: dict[str, str], tmp_path: Path, env: dict[str, str], reporter: ListReporter, kwargs: dict, reason: str
) -> None:
    with pytest.raises(EnvironmentSetupError) as info:
        checkout(origin["path"], tmp_path / "code", env=env, reporter=reporter, **kwargs)
    assert info.value.reason == reason + origin["path"]


def test_option_like_revision_is_refused(
    origin: dict[str, str], tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    with pytest.raises(EnvironmentSetupError, match="invalid branch"):
        checkout(origin["path"], tmp_path / "code", branch="--upload-pack=touch", env=env, reporter=reporter)
    assert reporter.lines == []


def test_credentials_never_reach_the_log_or_the_error(
    tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    # Port 1 on loopback refuses at once: the clone fails fast, after the command was logged.
    with pytest.raises(EnvironmentSetupError) as info:
        checkout(
            "https://127.0.0.1:1/team/x.git",
            tmp_path / "code",
            env=env,
            reporter=reporter,
            git_user="alice",
            git_pass="s3cr3t-pass",
        )
    everything = [*reporter.lines, info.value.reason, info.value.detail, str(info.value)]
    assert not any("s3cr3t-pass" in text or "alice" in text for text in everything)
    assert "https://127.0.0.1:1/team/x.git" in run_lines(reporter)[0]  # no userinfo in the URL at all
    assert info.value.reason.startswith("git clone failed: repository not reachable: https://127.0.0.1:1/team/x.git")
    assert not list(tmp_path.glob(".git-askpass-*"))  # the helper script is gone after the clone


@pytest.fixture
def clone(origin: dict[str, str], tmp_path: Path, env: dict[str, str]) -> Path:
    dest = tmp_path / "code"
    checkout(origin["path"], dest, commit=origin["c1"], env=env, reporter=ListReporter())
    return dest


def make_diff(repo: Path, files: dict[str, str], *args: str) -> str:
    """A `git diff` (untracked files included, as the SDK does) of `files` against HEAD; the tree is reset."""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "--all")
    diff = git(repo, *args, "diff", "--cached") + "\n"
    git(repo, "reset", "--quiet", "--hard")
    return diff


def test_apply_diff(clone: Path, env: dict[str, str], reporter: ListReporter) -> None:
    diff = make_diff(clone, {"train.py": "print('patched')\n", "new/mod.py": "Y = 2\n"})
    assert diff.startswith("diff --git a/")
    apply_diff(clone, diff.rstrip("\n"), env=env, reporter=reporter)  # a missing final newline is tolerated
    assert read(clone) == "print('patched')\n"
    assert (clone / "new" / "mod.py").read_text() == "Y = 2\n"


def test_apply_diff_without_ab_prefixes(clone: Path, env: dict[str, str], reporter: ListReporter) -> None:
    diff = make_diff(clone, {"train.py": "print('noprefix')\n"}, "-c", "diff.noprefix=true")
    assert "--- train.py" in diff
    apply_diff(clone, diff, env=env, reporter=reporter)
    assert read(clone) == "print('noprefix')\n"


def test_apply_diff_that_does_not_apply(
    origin: dict[str, str], clone: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    diff = make_diff(clone, {"train.py": "print('patched')\n"}).replace("-print('c1')", "-print('elsewhere')")
    with pytest.raises(EnvironmentSetupError) as info:
        apply_diff(clone, diff, env=env, reporter=reporter)
    assert info.value.reason == (
        f"git apply failed: the uncommitted diff does not apply to {origin['c1'][:7]} (train.py: patch does not apply)"
    )
    assert "patch failed: train.py:1" in info.value.detail
    assert read(clone) == "print('c1')\n"


def test_empty_diff_does_nothing(clone: Path, env: dict[str, str], reporter: ListReporter) -> None:
    apply_diff(clone, "  \n", env=env, reporter=reporter)
    assert reporter.lines == []


def test_private_https_repository_clones_with_configured_credentials(
    tmp_path: Path, env: dict[str, str], reporter: ListReporter
) -> None:
    import subprocess
    import threading

    import psutil

    from tests.fakes.git_http import GitHttpServer
    from tests.fakes.gitrepo import make_git_repo

    password = "pa55-Very-Secret"
    source = tmp_path / "source"
    sha = make_git_repo(source, {"train.py": "print('private')\n"})
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(served / "team.git")], check=True)
    seen: list[str] = []
    done = threading.Event()

    def watch_process_list() -> None:
        while not done.is_set():
            for proc in psutil.process_iter(["cmdline"]):
                seen.append(" ".join(proc.info["cmdline"] or []))
            done.wait(0.005)

    with GitHttpServer(served, "alice", password) as server:
        url = f"{server.url}/team.git"
        watcher = threading.Thread(target=watch_process_list)
        watcher.start()
        try:
            got = checkout(url, tmp_path / "code", env=env, reporter=reporter, git_user="alice", git_pass=password)
        finally:
            done.set()
            watcher.join()
        assert got == sha
        assert (tmp_path / "code" / "train.py").read_text() == "print('private')\n"
        with pytest.raises(EnvironmentSetupError) as wrong:
            checkout(url, tmp_path / "code2", env=env, reporter=reporter, git_user="alice", git_pass="nope-" + password)
    assert any("clone" in line for line in seen)  # the watcher did see the clone running
    for text in [*seen, *reporter.lines, str(wrong.value), wrong.value.detail]:
        assert password not in text
    assert "authentication" in wrong.value.reason or "denied" in wrong.value.reason, wrong.value.reason
    assert password not in (tmp_path / "code" / ".git" / "config").read_text()


def test_git_host_scopes_the_credentials(tmp_path: Path, env: dict[str, str], reporter: ListReporter) -> None:
    import subprocess

    from tests.fakes.git_http import GitHttpServer
    from tests.fakes.gitrepo import make_git_repo

    source = tmp_path / "source"
    make_git_repo(source, {"a.py": "x = 1\n"})
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(served / "team.git")], check=True)
    with GitHttpServer(served, "alice", "pw-123456") as server:
        url = f"{server.url}/team.git"
        kwargs = {"env": env, "reporter": reporter, "git_user": "alice", "git_pass": "pw-123456"}
        with pytest.raises(EnvironmentSetupError):
            checkout(url, tmp_path / "a", git_host="git.example.com", **kwargs)  # not for this host: no credentials
        assert checkout(url, tmp_path / "b", git_host="127.0.0.1", **kwargs)
