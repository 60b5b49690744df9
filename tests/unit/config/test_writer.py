"""write_credentials / ensure_agent_section: new file 0600 and round trip; existing files only appended to."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pyhocon import ConfigFactory

from notebook_agent.config import (
    ConfigError,
    PastedCredentials,
    ensure_agent_section,
    load_config,
    write_credentials,
)

from .conftest import ACCESS, SECRET, write

CREDS = PastedCredentials(
    api_server="https://api.clear.ml",
    web_server="https://app.clear.ml",
    files_server="https://files.clear.ml",
    access_key=ACCESS,
    secret_key=SECRET,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "clearml.conf"
    result = write_credentials(CREDS, path)
    assert (result.path, result.created, result.added_agent_section, result.wrote_credentials) == (
        path,
        True,
        True,
        True,
    )
    assert _mode(path) == 0o600
    tree = ConfigFactory.parse_file(str(path))
    assert tree["api.api_server"] == CREDS.api_server
    assert tree["api.web_server"] == CREDS.web_server
    assert tree["api.files_server"] == CREDS.files_server
    assert tree["api.credentials.access_key"] == ACCESS
    assert tree["api.credentials.secret_key"] == SECRET
    assert "agent" in tree
    config = load_config(path, env={})
    assert config.api.configured and config.api.credentials is not None
    assert config.api.credentials.secret_key == SECRET
    assert config.path == path
    assert [p.name for p in tmp_path.iterdir()] == ["clearml.conf"]  # no temp file left behind
    assert SECRET not in result.message


def test_new_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_credentials(CREDS, tmp_path / "c.conf")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "c.conf") == 0o600


@pytest.mark.parametrize(
    "value",
    [
        'quote " inside',
        "back\\slash and \\n literally",
        "new\nline\rcr\ttab",
        "${substitution} and $dollar",
        "# not a comment // nor this",
        'triple """ quotes',
        "unicode é ☃ 😀 \u2028",
        "ctrl \x00\x01\x1b[0m\x7f",
        " leading and trailing ",
    ],
)
def test_any_value_round_trips(tmp_path: Path, value: str) -> None:
    creds = PastedCredentials("https://api.x", "https://app.x", "", value, value + "2")
    path = tmp_path / "c.conf"
    write_credentials(creds, path)
    tree = ConfigFactory.parse_file(str(path))
    assert tree["api.credentials.access_key"] == value
    assert tree["api.credentials.secret_key"] == value + "2"
    assert "files_server" not in tree["api"]  # empty hosts are left out (clearml derives them)


EXISTING = """# my own config, with odd spacing   \napi {
    api_server: "https://api.clear.ml"
    credentials { access_key: "OLDKEY12345", secret_key: "OLDSECRET" }
}
sdk { development { default_output_uri: "" } }"""  # no trailing newline on purpose


def test_existing_file_without_agent_section_gets_one_appended(tmp_path: Path) -> None:
    path = write(tmp_path / "clearml.conf", EXISTING)
    path.chmod(0o644)
    result = ensure_agent_section(path)
    assert (result.created, result.added_agent_section) == (False, True)
    data = path.read_bytes()
    assert data.startswith(EXISTING.encode())  # every existing byte kept
    assert b"agent {" in data[len(EXISTING) :]
    assert _mode(path) == 0o600  # 0644 narrowed: the file holds credentials
    tree = ConfigFactory.parse_file(str(path))
    assert "agent" in tree and tree["api.credentials.access_key"] == "OLDKEY12345"
    assert load_config(path, env={}).agent("package_manager.type") == "pip"


def test_narrower_mode_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "clearml.conf", EXISTING)
    path.chmod(0o400)
    if os.geteuid() != 0:
        # Only root can append to a 0400 file: anyone else gets an error naming the file, which stays as it was.
        with pytest.raises(ConfigError, match="cannot be written"):
            ensure_agent_section(path)
        assert _mode(path) == 0o400 and path.read_text() == EXISTING
        return
    ensure_agent_section(path)
    assert _mode(path) == 0o400  # at most 0600: a narrower mode stays as it was
    assert b"agent {" in path.read_bytes()


def test_existing_file_with_agent_section_is_unchanged(tmp_path: Path) -> None:
    original = EXISTING + "\nagent { worker_name: me }\n"
    path = write(tmp_path / "clearml.conf", original)
    mtime = path.stat().st_mtime_ns
    result = ensure_agent_section(path)
    assert (result.created, result.added_agent_section) == (False, False)
    assert path.read_text() == original and path.stat().st_mtime_ns == mtime


def test_ensure_agent_section_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "clearml.conf"
    result = ensure_agent_section(path)
    assert result.created and _mode(path) == 0o600
    assert "agent" in ConfigFactory.parse_file(str(path))


def test_different_credentials_are_left_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "clearml.conf", EXISTING + "\nagent {}\n")
    before = path.read_bytes()
    result = write_credentials(CREDS, path)
    assert (result.created, result.added_agent_section, result.wrote_credentials) == (False, False, False)
    assert path.read_bytes() == before
    assert "other ClearML credentials" in result.message
    assert "OLDSECRET" not in result.message and SECRET not in result.message


def test_different_credentials_and_no_agent_section(tmp_path: Path) -> None:
    path = write(tmp_path / "clearml.conf", EXISTING)
    result = write_credentials(CREDS, path)
    assert (result.added_agent_section, result.wrote_credentials) == (True, False)
    assert path.read_bytes().startswith(EXISTING.encode())
    assert load_config(path, env={}).api.credentials.access_key == "OLDKEY12345"  # type: ignore[union-attr]


def test_same_credentials_are_reported_as_present(tmp_path: Path) -> None:
    path = tmp_path / "clearml.conf"
    write_credentials(CREDS, path)
    before = path.read_bytes()
    result = write_credentials(CREDS, path)
    assert (result.created, result.wrote_credentials, result.added_agent_section) == (False, False, False)
    assert "already holds these credentials" in result.message
    assert path.read_bytes() == before


def test_existing_file_without_credentials_gets_the_api_block(tmp_path: Path) -> None:
    original = "agent {\n  worker_name: me\n}\n"
    path = write(tmp_path / "clearml.conf", original)
    path.chmod(0o664)
    result = write_credentials(CREDS, path)
    assert (result.created, result.wrote_credentials, result.added_agent_section) == (False, True, False)
    assert path.read_text().startswith(original)
    assert _mode(path) == 0o600
    config = load_config(path, env={})
    assert config.api.credentials is not None and config.api.credentials.secret_key == SECRET
    assert config.agent("worker_name") == "me"


def test_broken_existing_file_is_not_touched(tmp_path: Path) -> None:
    path = write(tmp_path / "clearml.conf", "api { api_server: \n")
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        write_credentials(CREDS, path)
    assert info.value.path == str(path)
    assert path.read_bytes() == before


def test_unwritable_location_is_a_config_error(tmp_path: Path) -> None:
    blocker = write(tmp_path / "not-a-folder", "")
    with pytest.raises(ConfigError) as info:
        write_credentials(CREDS, blocker / "clearml.conf")
    assert info.value.path == str(blocker / "clearml.conf") and "cannot be" in str(info.value)


def test_api_that_is_not_a_section_is_reported_and_left_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "clearml.conf", 'api: "oops"\n')
    with pytest.raises(ConfigError) as info:
        write_credentials(CREDS, path)
    assert info.value.key == "api"
    assert path.read_text() == 'api: "oops"\n'
