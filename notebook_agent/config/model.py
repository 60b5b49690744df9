"""The typed result of loading: Config (the merged tree plus the api section as ApiConfig) and Credentials.

Every repr/str here masks secrets, so a Config can be printed, logged or shown in a notebook as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pyhocon import ConfigTree
from pyhocon.exceptions import ConfigException

from ..masking import mask, mask_tree, mask_url

_MISSING: Any = object()


@dataclass(frozen=True)
class Credentials:
    """An access key / secret key pair (api.credentials)."""

    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        # keep=0: not even a prefix of the secret.
        secret = mask(self.secret_key, keep=0)
        return f"Credentials(access_key={mask(self.access_key)!r}, secret_key={secret!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class ApiConfig:
    """The api section: where the server is and how to log in.

    `verify_certificate` is a bool, or (as in clearml) the path of a CA bundle, which is what requests'
    `verify` takes too.
    """

    api_server: str  # "" when not configured
    web_server: str
    files_server: str
    credentials: Credentials | None
    verify_certificate: bool | str = True
    auth_token: str | None = None

    @property
    def configured(self) -> bool:
        """True when there is a server and a way to log in to it."""
        return bool(self.api_server and (self.credentials or self.auth_token))

    def __repr__(self) -> str:
        return (
            f"ApiConfig(api_server={mask_url(self.api_server)!r}, web_server={mask_url(self.web_server)!r}, "
            f"files_server={mask_url(self.files_server)!r}, credentials={self.credentials!r}, "
            f"verify_certificate={self.verify_certificate!r}, "
            f"auth_token={mask(self.auth_token) if self.auth_token else None!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class Config:
    """The effective configuration: defaults < clearml.conf < environment variables."""

    api: ApiConfig
    # The whole merged tree (with derived web/files hosts filled in). Out of repr (secrets, size) and out of
    # eq/hash (a ConfigTree is mutable and unhashable).
    tree: ConfigTree = field(repr=False, compare=False)
    path: Path | None = None  # the file read, if any

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value at dotted `key` (e.g. "agent.package_manager.type"); KeyError if absent, no default."""
        try:
            return self.tree.get(key)
        except (ConfigException, KeyError, AttributeError):
            # missing, or a path through a non-section value
            if default is _MISSING:
                raise KeyError(key) from None
            return default

    def agent(self, key: str, default: Any = _MISSING) -> Any:
        """Shorthand for get("agent." + key)."""
        return self.get("agent." + key, default)

    def masked(self) -> dict[str, Any]:
        """The effective config as plain dicts and lists, with secrets and URL passwords masked."""
        return mask_tree(self.tree.as_plain_ordered_dict())  # type: ignore[return-value]


def derive_server_urls(api_server: str, web_server: str = "", files_server: str = "") -> tuple[str, str]:
    """(web_server, files_server): each kept when given, else derived from the api server as clearml does.

    clearml (backend_api/session/session.py): web is api with "api."/"demoapi." -> "app."/"demoapp." or port
    8008 -> 8080; files is web with its port -> 8081, "app."/"demoapp." -> "files."/"demofiles.", or else
    ":8081" added. "" where nothing can be derived.
    """
    web = web_server.rstrip("/")
    api = api_server.rstrip("/")
    if not web and api:
        if "://demoapi." in api:
            web = api.replace("://demoapi.", "://demoapp.", 1)
        elif "://api." in api:
            web = api.replace("://api.", "://app.", 1)
        elif _port(api) == 8008:
            web = api.replace(":8008", ":8080", 1)
    files = files_server.rstrip("/")
    if not files and web:
        parts = urlsplit(web)
        port = _port(web)
        if port:
            netloc = parts.netloc.replace(f":{port}", ":8081", 1)
        elif parts.netloc.startswith("demoapp."):
            netloc = parts.netloc.replace("demoapp.", "demofiles.", 1)
        elif parts.netloc.startswith("app."):
            netloc = parts.netloc.replace("app.", "files.", 1)
        else:
            netloc = parts.netloc + ":8081"
        files = urlunsplit(parts._replace(netloc=netloc))
    return web, files


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:  # a port that is not a number
        return None


def _text(tree: ConfigTree, key: str) -> str:
    value = tree.get(key, None)
    return "" if value is None else str(value).strip()


def api_config_from_tree(tree: ConfigTree) -> ApiConfig:
    """Build ApiConfig from a validated tree, and write the derived web/files hosts back into the tree."""
    # api.host is the old name of api.api_server; clearml and clearml-agent still read it.
    api_server = (_text(tree, "api.api_server") or _text(tree, "api.host")).rstrip("/")
    web, files = derive_server_urls(
        api_server,
        _text(tree, "api.web_server"),
        _text(tree, "api.files_server"),
    )
    tree.put("api.api_server", api_server)
    tree.put("api.web_server", web)
    tree.put("api.files_server", files)
    access_key = _text(tree, "api.credentials.access_key")
    secret_key = _text(tree, "api.credentials.secret_key")
    verify = tree.get("api.verify_certificate", True)
    return ApiConfig(
        api_server=api_server,
        web_server=web,
        files_server=files,
        # A half-set pair cannot log in; `configured` then reports False.
        credentials=Credentials(access_key, secret_key) if access_key and secret_key else None,
        verify_certificate=True if verify is None else verify,
        auth_token=_text(tree, "api.auth_token") or None,
    )
