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
