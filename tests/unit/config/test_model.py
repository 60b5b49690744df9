"""Masking in repr/str and masked(), Config.get, derive_server_urls, ConfigError, and the HOCON helpers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from pyhocon import ConfigFactory

from notebook_agent.config import ApiConfig, ConfigError, Credentials, load_config
from notebook_agent.config.hocon import find_key_line, quote
from notebook_agent.config.model import derive_server_urls

from .conftest import ACCESS, GIT_PASS, SECRET, write


def test_credentials_repr_never_shows_the_secret() -> None:
    creds = Credentials(ACCESS, SECRET)
    for text in (repr(creds), str(creds), f"{creds!r}"):
        assert SECRET not in text and SECRET[:4] not in text
        assert ACCESS not in text and ACCESS[:4] in text


def test_api_config_repr_masks_keys_token_and_url_password() -> None:
    api = ApiConfig(
        api_server="https://user:hunter2pw@api.example.com",
        web_server="",
        files_server="",
        credentials=Credentials(ACCESS, SECRET),
        auth_token="eyJtokenvalue.abcdef.ghijkl",
    )
    for text in (repr(api), str(api)):
        assert SECRET not in text and ACCESS not in text
        assert "hunter2pw" not in text and "eyJtokenvalue.abcdef.ghijkl" not in text
    assert api.configured


@pytest.mark.parametrize(
    ("api", "configured"),
    [
        (ApiConfig("https://a", "", "", Credentials("k", "s")), True),
        (ApiConfig("https://a", "", "", None, auth_token="t"), True),
        (ApiConfig("https://a", "", "", None), False),
        (ApiConfig("", "", "", Credentials("k", "s")), False),
    ],
)
def test_configured(api: ApiConfig, configured: bool) -> None:
    assert api.configured is configured


def _loaded(tmp_path: Path):
    path = write(
        tmp_path / "c.conf",
        f'api {{ api_server: "https://api.clear.ml"\n credentials {{ access_key: "{ACCESS}", '
        f'secret_key: "{SECRET}" }} }}\n'
        f'agent {{ git_user: "me", git_pass: "{GIT_PASS}"\n'
        '  package_manager.extra_index_url: ["https://u:idxpassword@pypi.example/simple"] }\n',
    )
    return load_config(path, env={"CLEARML_AUTH_TOKEN": "tokentokentoken"})


def test_config_repr_and_str_never_contain_secrets(tmp_path: Path) -> None:
    config = _loaded(tmp_path)
    for text in (repr(config), str(config)):
        for secret in (SECRET, ACCESS, GIT_PASS, "tokentokentoken", "idxpassword"):
            assert secret not in text
        assert "ConfigTree" not in text  # the tree stays out of the repr


def test_masked_hides_secret_key_and_git_pass(tmp_path: Path) -> None:
    config = _loaded(tmp_path)
    masked = config.masked()
    dumped = json.dumps(masked)  # plain dicts and lists only
    for secret in (SECRET, GIT_PASS, "tokentokentoken", "idxpassword"):
        assert secret not in dumped
    assert masked["api"]["credentials"]["secret_key"] != SECRET
    assert masked["agent"]["git_pass"] != GIT_PASS
    assert masked["agent"]["git_user"] == "me"
    assert masked["api"]["api_server"] == "https://api.clear.ml"
    assert masked["api"]["web_server"] == "https://app.clear.ml"  # derived values are shown
    assert masked["agent"]["package_manager"]["type"] == "pip"
    assert config.agent("git_pass") == GIT_PASS  # the config itself is not masked


def test_masked_hides_a_numeric_password(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.conf", "agent { git_pass: 12345678901 }"), env={})
    assert "12345678901" not in json.dumps(config.masked())


def test_config_is_hashable_and_frozen(tmp_path: Path) -> None:
    config = _loaded(tmp_path)
    hash(config)
    with pytest.raises(AttributeError):
        config.path = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("api", "web", "files", "expected"),
    [
        ("https://api.clear.ml/", "", "", ("https://app.clear.ml", "https://files.clear.ml")),
        ("http://10.1.2.3:8008", "", "", ("http://10.1.2.3:8080", "http://10.1.2.3:8081")),
        ("https://api.my.org", "https://web.my.org/", "", ("https://web.my.org", "https://web.my.org:8081")),
        ("https://api.my.org", "", "https://f.my.org/", ("https://app.my.org", "https://f.my.org")),
        ("https://clearml.my.org", "", "", ("", "")),
        ("", "", "", ("", "")),
    ],
)
def test_derive_server_urls(api: str, web: str, files: str, expected: tuple[str, str]) -> None:
    assert derive_server_urls(api, web, files) == expected


def test_config_error_message_and_fields() -> None:
    err = ConfigError("expected a number", path="/h/clearml.conf", line=4, key="agent.x", fix="write 1")
    assert str(err) == "/h/clearml.conf, line 4: agent.x: expected a number\n  Fix: write 1"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.line, copy.key, copy.fix, str(copy)) == (
        err.path,
        4,
        "agent.x",
        "write 1",
        str(err),
    )
    assert str(ConfigError("bare")) == "bare"


TEXT = """
api {
    api_server: https://api.clear.ml   # a comment with key: value
    credentials {
        "access_key" = "A"
        secret_key: "B{"
    }
}
agent {
    venvs_cache: { path: "x" }
    vcs_cache { path: "y" }
    default_docker.match_rules: [{ image: "i", arguments: "a" }]
    package_manager.type: pip
}
agent.worker_name: later
// api_server: commented
"""


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("api.api_server", 3),
        ("api.credentials", 4),
        ("api.credentials.access_key", 5),
        ("api.credentials.secret_key", 6),
        ("agent.venvs_cache.path", 10),
        ("agent.vcs_cache.path", 11),
        ("agent.package_manager.type", 13),
        ("agent.worker_name", 15),
        ("agent.default_docker.match_rules", 12),
        ("agent.default_docker.match_rules.image", None),
        ("agent.nothing", None),
    ],
)
def test_find_key_line(key: str, line: int | None) -> None:
    assert find_key_line(TEXT, key) == line


@pytest.mark.parametrize("value", ["", "plain", 'a"b', "a\\b", "l1\nl2", "${x}", "#x //y", "é😀"])
def test_quote_round_trips(value: str) -> None:
    assert ConfigFactory.parse_string(f"k = {quote(value)}\n")["k"] == value
