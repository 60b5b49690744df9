"""Find and load clearml.conf: defaults < the file < environment variables, checked, as a typed Config.

The environment is a parameter (defaulting to os.environ) and is only read, never changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pyhocon import ConfigTree

from .defaults import default_tree
from .env import CONFIG_FILE_VARS, apply_env
from .errors import ConfigError
from .hocon import parse_text
from .model import Config, api_config_from_tree
from .validate import validate_tree


def _home(env: Mapping[str, str]) -> Path:
    # HOME from the given mapping, so a test or a caller can point ~ elsewhere without touching os.environ.
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def _expand(value: str, env: Mapping[str, str]) -> Path:
    if value == "~" or value.startswith(("~/", "~" + os.sep)):
        return _home(env) / value[2:]
    return Path(value).expanduser()


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    """The config file to use: CLEARML_CONFIG_FILE, then TRAINS_CONFIG_FILE, else ~/clearml.conf.

    Like clearml, an existing ~/trains.conf is used when ~/clearml.conf does not exist. The path is returned
    whether or not the file exists.
    """
    for name in CONFIG_FILE_VARS:
        value = (env.get(name) or "").strip()
        if value:
            return _expand(value, env)
    home = _home(env)
    clearml_conf, trains_conf = home / "clearml.conf", home / "trains.conf"
    if not clearml_conf.exists() and trains_conf.exists():
        return trains_conf
    return clearml_conf


def read_text(path: Path) -> str | None:
    """The file's text, None when it does not exist; ConfigError when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError("is a folder, not a config file", path=path, fix="point at a file") from None
    except PermissionError:
        raise ConfigError("cannot be read (permission denied)", path=path, fix=f"chmod 600 {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot be read ({exc.strerror or type(exc).__name__})", path=path) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError("is not UTF-8 text", path=path, line=line, fix="save the file as UTF-8") from None


def load_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the effective configuration.

    `path` defaults to config_path(env); a missing file is fine (defaults + environment). Raises ConfigError
    for a file with a syntax error (file + line), a key of the wrong type (file + key + line) or a bad
    environment variable value (variable + expected type).
    """
    env = os.environ if env is None else env
    file = _expand(str(path), env) if path is not None else config_path(env)
    tree = default_tree()
    text = read_text(file)
    if text is not None:
        # As clearml-agent does: parse (and resolve) the file on its own, then merge it over the defaults.
        tree = ConfigTree.merge_configs(tree, parse_text(text, file))
    validate_tree(tree, text=text or "", path=file if text is not None else None)
    sources = apply_env(tree, env)
    # Again, for what the environment set: a typed variable is already converted, a text one (a host) is not.
    validate_tree(tree, sources=sources)
    api = api_config_from_tree(tree)
    return Config(api=api, tree=tree, path=file if text is not None else None)
