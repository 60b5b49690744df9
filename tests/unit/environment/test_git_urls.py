"""clearml-agent's repository URL rewrites: translate_ssh and force_git_ssh_protocol."""

import pytest

from notebook_agent.environment.git_urls import https_to_ssh, rewrite, ssh_to_https


@pytest.mark.parametrize(
    ("url", "https"),
    [
        ("git@github.com:team/repo.git", "https://github.com/team/repo.git"),
        ("ssh://git@gitlab.example.com/team/sub/repo.git", "https://gitlab.example.com/team/sub/repo.git"),
        ("ssh://git@gitlab.example.com:2222/team/repo.git", "https://gitlab.example.com/team/repo.git"),
        ("https://github.com/team/repo.git", "https://github.com/team/repo.git"),
        ("/local/path/repo", "/local/path/repo"),
    ],
)
def test_ssh_to_https(url, https):
    assert ssh_to_https(url) == https


def test_https_to_ssh():
    assert https_to_ssh("https://github.com/team/repo.git") == "git@github.com:team/repo.git"
    assert https_to_ssh("https://h.example/t/r.git", user="me", port=2222) == "ssh://me@h.example:2222/t/r.git"
    assert https_to_ssh("file:///x/repo") == "file:///x/repo"


def test_rules():
    ssh, https = "git@h.example:t/r.git", "https://h.example/t/r.git"
    assert rewrite(ssh, has_credentials=True) == https
    assert rewrite(ssh, has_credentials=False) == ssh
    assert rewrite(ssh, has_credentials=True, translate_ssh=False) == ssh
    assert rewrite(https, has_credentials=True, force_ssh=True) == ssh


def test_credentials_for_picks_extra_credentials_by_host() -> None:
    from notebook_agent.environment.git_urls import credentials_for

    extra = [
        {"host": "gitlab.example.com", "user": "bot", "pass": "gl-token"},
        {"host": "git.other.org", "username": "ann", "password": "o-pw"},
        {"host": "incomplete.org", "user": "x"},  # skipped: no password
    ]
    main = {"user": "alice", "password": "main-pw"}
    assert credentials_for("https://gitlab.example.com/a/b.git", extra=extra, **main) == ("bot", "gl-token")
    assert credentials_for("git@git.other.org:team/r.git", extra=extra, **main) == ("ann", "o-pw")
    assert credentials_for("https://github.com/a/b.git", extra=extra, **main) == ("alice", "main-pw")
    assert credentials_for("https://incomplete.org/a.git", extra=extra, **main) == ("alice", "main-pw")
    # agent.git_host scopes the main pair; the extra entries still apply to their own hosts.
    scoped = {**main, "host": "github.com"}
    assert credentials_for("https://gitlab.example.com/a.git", extra=extra, **scoped) == ("bot", "gl-token")
    assert credentials_for("https://bitbucket.org/a.git", extra=extra, **scoped) == ("", "")
    assert credentials_for("/local/repo", user="", password="") == ("", "")
