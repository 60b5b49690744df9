"""clearml.conf's agent keys become the environment build's settings."""

from __future__ import annotations

from pathlib import Path

from notebook_agent.config.loader import load_config
from notebook_agent.engine.build_config import build_settings


def _settings(tmp_path: Path, text: str):
    conf = tmp_path / "clearml.conf"
    conf.write_text(text)
    return build_settings(load_config(conf, env={}))


def test_defaults(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "")
    assert settings.package_manager == "pip"
    assert settings.vcs_cache_dir == Path("~/.clearml/vcs-cache").expanduser()
    assert settings.pip_download_cache_dir == Path("~/.clearml/pip-download-cache").expanduser()
    assert settings.git_fetch_args == ("--all", "--tags", "--recurse-submodules")
    assert settings.conda_channels == ("pytorch", "conda-forge", "nvidia", "defaults")
    assert settings.git_extra_credentials == ()


def test_agent_keys(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        """agent {
  git { extra_credentials: [{host: "gitlab.example.com", user: "bot", pass: "tok-1"}] }
  git_fetch_args: ["--tags"]
  vcs_cache { enabled: false }
  pip_download_cache { path: "/tmp/pipcache" }
  package_manager {
    type: conda
    conda_channels: ["file:///channel"]
    extra_index_url: "https://example.org/simple"
    uv_sync_extra_args: ["--all-extras"]
    uv_files_from_repo_working_dir: true
  }
}
""",
    )
    assert settings.package_manager == "conda"
    assert settings.conda_channels == ("file:///channel",)
    assert settings.pip_args == ("--extra-index-url", "https://example.org/simple")
    assert settings.uv_sync_extra_args == ("--all-extras",)
    assert settings.uv_files_from_repo_working_dir is True
    assert settings.vcs_cache_dir is None
    assert settings.pip_download_cache_dir == Path("/tmp/pipcache")
    assert settings.git_fetch_args == ("--tags",)
    assert settings.git_extra_credentials == ({"host": "gitlab.example.com", "user": "bot", "pass": "tok-1"},)
    assert "tok-1" not in repr(settings)


def test_venvs_cache_on_drive_is_archive_backed(tmp_path: Path) -> None:
    folder = _settings(tmp_path, 'agent { venvs_cache { path: "/data/cache", store: folder } }')
    assert folder.venvs_cache_dir == Path("/data/cache/notebook-agent-v1") and folder.venvs_cache_archive_dir is None
    drive = _settings(tmp_path, 'agent { venvs_cache { path: "/content/drive/MyDrive/venvs" } }')
    assert drive.venvs_cache_archive_dir == Path("/content/drive/MyDrive/venvs/notebook-agent-v1")
    assert drive.venvs_cache_dir == Path("~/.notebook_agent/venvs-local/notebook-agent-v1").expanduser()
    forced = _settings(tmp_path, 'agent { venvs_cache { path: "/x", store: archive, local_path: "/fast" } }')
    assert (forced.venvs_cache_dir, forced.venvs_cache_archive_dir) == (
        Path("/fast/notebook-agent-v1"),
        Path("/x/notebook-agent-v1"),
    )
    off = _settings(tmp_path, 'agent { venvs_cache { path: "" } }')
    assert off.venvs_cache_dir is None and off.venvs_cache_archive_dir is None


def test_bad_store_value_names_the_key(tmp_path: Path) -> None:
    import pytest

    from notebook_agent.config import ConfigError

    with pytest.raises(ConfigError, match=r"agent\.venvs_cache\.store.*auto, folder or archive"):
        _settings(tmp_path, "agent { venvs_cache { store: zip } }")
