"""Decoding of request bodies: strict JSON and JSON lines, each problem a 400 that names it."""

from __future__ import annotations

import json
from typing import Any

from notebook_agent.server import errors

# Real payloads nest a few levels (hyperparams are 3); deeper ones only exhaust the recursion of the encoder.
MAX_DEPTH = 64


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; accepted, they would reach int() and SQLite as values no client means.
    raise errors.bad_request(f"invalid JSON value {name} (not part of JSON)")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.bad_request(f"request body is not valid UTF-8 (byte {exc.start})") from None


def _check_tree(value: Any, where: str, strings: bool) -> None:
    """Reject nesting deeper than MAX_DEPTH and (when `strings`) strings holding lone surrogates (\\ud800
    escapes), which no UTF-8 store or encoder accepts later."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise errors.bad_request(f"{where} nests deeper than {MAX_DEPTH} levels")
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            for text in (key, child) if strings else ():
                if isinstance(text, str) and not _encodable(text):
                    raise errors.bad_request(f"{where} holds a string with a lone surrogate (invalid Unicode)")
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _loads(text: str, where: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise errors.bad_request(f"{where} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise errors.bad_request(f"Failed to decode JSON object: {exc} in {where}") from None
    escapes = "\\u" in text  # a lone surrogate can only come from an escape: decoded UTF-8 holds none
    if escapes and isinstance(value, str) and not _encodable(value):
        raise errors.bad_request(f"{where} holds a string with a lone surrogate (invalid Unicode)")
    if isinstance(value, dict | list):
        _check_tree(value, where, escapes)
    return value


def decode_json(raw: bytes) -> Any:
    """The JSON value of a body."""
    return _loads(_text(raw), "request body")


def decode_json_lines(raw: bytes) -> list[dict[str, Any]]:
    """A json-lines batch: one object per non-blank line; any bad line fails the whole batch (nothing is half
    stored, and the client learns which line)."""
    batch = []
    for number, line in enumerate(_text(raw).splitlines(), start=1):
        if not line.strip():
            continue
        item = _loads(line, f"line {number}")
        if not isinstance(item, dict):
            raise errors.bad_request(f"line {number} must be a JSON object, found {type(item).__name__}")
        batch.append(item)
    return batch
