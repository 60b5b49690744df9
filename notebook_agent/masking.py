"""Masking of secrets (keys, passwords, tokens) before they reach a repr, a log line, a widget or a URL."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SECRET_NAME = re.compile(r"secret|pass|token|key|auth|credential", re.IGNORECASE)


def mask(value: str | None, *, keep: int = 4) -> str:
    """Show only the first `keep` characters of a secret: 'ABCD****'. Short secrets are fully hidden."""
    if not value:
        return ""
    if len(value) <= keep * 2:
        return "****"
    return value[:keep] + "****"


def mask_url(url: str) -> str:
    """Hide the password (and a token-like user) inside a URL's userinfo: https://user:****@host/path."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    userinfo = f"{user}:****" if password else mask(user)
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def is_secret_name(name: str) -> bool:
    """True for configuration keys and variable names that hold a secret."""
    return bool(_SECRET_NAME.search(name))


def mask_tree(obj: object, secret: bool = False) -> object:
    """A plain copy of nested dicts/lists with every value under a secret-looking key masked.

    Numbers under secret names are masked too (`git_pass: 1234` is still a password), and passwords inside
    URLs are hidden everywhere.
    """
    if isinstance(obj, dict):
        return {str(k): mask_tree(v, is_secret_name(str(k))) for k, v in obj.items()}
    if isinstance(obj, list):
        return [mask_tree(v, secret) for v in obj]
    if secret and obj is not None and not isinstance(obj, bool):
        return mask(str(obj))
    if isinstance(obj, str):
        return mask_url(obj)
    return obj
