"""clearml.conf's agent keys (package manager, caches, git, Python) as the environment build's settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from notebook_agent.config import Config
from notebook_agent.environment import BuildSettings
from notebook_agent.environment.archive_store import use_archive

CACHE_LAYOUT = "notebook-agent-v1"
DEFAULT_LOCAL_CACHE = "~/.notebook_agent/venvs-local"  # where archived cache entries are unpacked


def running_in_colab(env: Mapping[str, str] | None = None) -> bool:
    """True inside a Google Colab runtime (its kernel sets COLAB_* variables; google.colab is importable)."""
    env = os.environ if env is None else env
    return "google.colab" in sys.modules or any(k.startswith("COLAB_") for k in env)


def build_settings(config: Config) -> BuildSettings:
    pip_args: list[str] = []
    for url in strings(config.agent("package_manager.extra_index_url", [])):
        pip_args += ["--extra-index-url", url]
    cache_dir, archive_dir = _venvs_cache_dirs(config)
    return BuildSettings(
        python=str(config.agent("python_binary", "") or BuildSettings().python),
        venvs_cache_dir=cache_dir,
        venvs_cache_archive_dir=archive_dir,
        venvs_cache_max_entries=int(config.agent("venvs_cache.max_entries", 10)),
        venvs_cache_free_space_threshold_gb=float(config.agent("venvs_cache.free_space_threshold_gb", 2.0)),
        # In Colab a task reuses the preinstalled torch & co. instead of downloading gigabytes again.
        system_site_packages=bool(config.agent("package_manager.system_site_packages", False)) or running_in_colab(),
        pip_args=tuple(pip_args),
        uv_replace_pip=bool(config.agent("package_manager.uv_replace_pip", True)),
        ignore_requested_python_version=bool(config.agent("ignore_requested_python_version", False)),
        git_user=str(config.agent("git_user", "") or ""),
        git_pass=str(config.agent("git_pass", "") or ""),
        git_host=str(config.agent("git_host", "") or ""),
        translate_ssh=bool(config.agent("translate_ssh", True)),
        force_git_ssh_protocol=bool(config.agent("force_git_ssh_protocol", False)),
        force_git_ssh_user=str(config.agent("force_git_ssh_user", "") or "git"),
        force_git_ssh_port=int(config.agent("force_git_ssh_port", 0) or 0) or None,
        git_extra_credentials=_credential_entries(config.agent("git.extra_credentials", [])),
        git_fetch_args=strings(config.agent("git_fetch_args", ["--all", "--tags", "--recurse-submodules"])),
        vcs_cache_dir=_enabled_path(config, "vcs_cache"),
        pip_download_cache_dir=_enabled_path(config, "pip_download_cache"),
        agent_wheels_dir=Path("~/.notebook_agent/agent-wheels").expanduser(),
        package_manager=str(config.agent("package_manager.type", "pip") or "pip"),
        conda_channels=strings(config.agent("package_manager.conda_channels", [])),
        conda_pkgs_dir=Path(
            str(config.agent("package_manager.conda_pkgs_dir", "~/.notebook_agent/conda-pkgs"))
        ).expanduser(),
        uv_sync_extra_args=strings(config.agent("package_manager.uv_sync_extra_args", [])),
        uv_files_from_repo_working_dir=bool(config.agent("package_manager.uv_files_from_repo_working_dir", False)),
        poetry_files_from_repo_working_dir=bool(
            config.agent("package_manager.poetry_files_from_repo_working_dir", False)
        ),
    )


def _venvs_cache_dirs(config: Config) -> tuple[Path | None, Path | None]:
    """(the cache folder, the archive folder): agent.venvs_cache.path is the cache itself, or (on a network
    filesystem such as a mounted Google Drive, or with `store: archive`) where archives are kept, unpacked to
    agent.venvs_cache.local_path. Each gets a subfolder, so a path shared with clearml-agent never mixes layouts."""
    cache_path = str(config.agent("venvs_cache.path", "") or "").strip()
    if not cache_path:
        return None, None
    path = Path(cache_path).expanduser()
    if use_archive(path, str(config.agent("venvs_cache.store", "auto") or "auto")):
        local = Path(str(config.agent("venvs_cache.local_path", "") or DEFAULT_LOCAL_CACHE)).expanduser()
        return local / CACHE_LAYOUT, path / CACHE_LAYOUT
    return path / CACHE_LAYOUT, None


def _enabled_path(config: Config, section: str) -> Path | None:
    """`agent.<section>.path` when `agent.<section>.enabled` (vcs_cache, pip_download_cache), else None."""
    path = str(config.agent(f"{section}.path", "") or "").strip()
    if not path or not bool(config.agent(f"{section}.enabled", True)):
        return None
    return Path(path).expanduser()


def _credential_entries(value: object) -> tuple[dict[str, str], ...]:
    # agent.git.extra_credentials: a list of {host, user, pass} objects; anything else is ignored (the validator
    # reports malformed entries when the config is loaded).
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple({str(k): str(v) for k, v in dict(item).items()} for item in value if hasattr(item, "items"))


def strings(value: object) -> tuple[str, ...]:
    # A HOCON list, or one string where a user wrote a single value.
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(item) for item in value)  # type: ignore[union-attr]
