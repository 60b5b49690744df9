"""Query helpers over JSON documents: dotted paths, `only_fields`, filters, `order_by` and paging."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from notebook_agent.server import errors

MAX_PAGE_SIZE = 500
_RANGE = re.compile(r"^(>=|<=|>|<)(.*)$")

# Request fields of get_all calls that are not filters on the document.
CONTROL_FIELDS = {
    "only_fields",
    "order_by",
    "page",
    "page_size",
    "size",
    "scroll_id",
    "refresh_scroll",
    "search_hidden",
    "search_text",
    "_all_",
    "_any_",
    "include_subprojects",
    "shallow_search",
    "allow_public",
    "id",
    "max_task_entries",
    "check_own_contents",
    "include_stats",
    "stats_for_state",
    "active_users",
    "non_public",
    "stats_with_children",
    "children_type",
    "basename",
}

_MISSING = object()


def get_path(doc: Any, path: str, default: Any = None) -> Any:
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_path(doc: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def project(doc: dict, only_fields: Iterable[str] | None) -> dict:
    """Keep only the requested dotted paths (and `id`, which the real server always returns)."""
    if not only_fields:
        return doc
    out: dict = {}
    for path in ["id", *only_fields]:
        value = get_path(doc, path, _MISSING)
        if value is not _MISSING:
            set_path(out, path, value)
    return out


def _compare(value: Any, op: str, bound: str) -> bool:
    if value is None:
        return False
    try:
        left, right = (float(value), float(bound)) if isinstance(value, int | float) else (str(value), bound)
    except ValueError:
        return False
    return {">=": left >= right, "<=": left <= right, ">": left > right, "<": left < right}[op]


def _match_list(value: Any, wanted: list) -> bool:
    """List filters: any of the values; `-x` excludes; `>=`/`<` strings are ranges; None matches empty."""
    includes, excludes, ranges = [], [], []
    for item in wanted:
        if isinstance(item, str) and len(item) > 1 and item.startswith("-") and not _RANGE.match(item):
            excludes.append(item[1:])
        elif isinstance(item, str) and _RANGE.match(item):
            ranges.append(_RANGE.match(item).groups())  # type: ignore[union-attr]
        elif item == "__$not" or item == "__$all" or item == "__$any":
            continue
        else:
            includes.append(item)
    values = value if isinstance(value, list) else [value]
    if excludes and any(v in excludes for v in values):
        return False
    if ranges and not all(_compare(value, op, bound) for op, bound in ranges):
        return False
    if includes:
        return any(v in includes or (v in ("", []) and None in includes) for v in values) or (
            not values and None in includes
        )
    return True


def matches(doc: dict, filters: dict[str, Any], regex_fields: Iterable[str] = ("name",)) -> bool:
    for key, wanted in filters.items():
        if key in CONTROL_FIELDS or wanted is None:
            continue
        value = get_path(doc, key)
        if key in regex_fields and isinstance(wanted, str):
            try:
                if not re.search(wanted, str(value or "")):
                    return False
            except re.error as exc:
                raise errors.validation_error(f"invalid regular expression for {key}: {exc}") from None
        elif isinstance(wanted, list):
            if not _match_list(value, wanted):
                return False
        elif isinstance(wanted, dict):
            continue  # nested operator objects the embedded server does not interpret
        elif value != wanted:
            return False
    return True


def search_text(doc: dict, text: str | None, fields: Iterable[str]) -> bool:
    if not text:
        return True
    needle = text.lower()
    return any(needle in str(get_path(doc, f) or "").lower() for f in fields)


def select(store: Any, kind: str, data: dict[str, Any], search_fields: Iterable[str], regex_fields=("name",)) -> list:
    """The documents of `kind` that a get_all request asks for: by id, filters, search text and hidden-ness."""
    ids = data.get("id")
    docs = store.get_many(kind, ids if isinstance(ids, list) else [ids]) if ids else store.all(kind)
    show_hidden = bool(data.get("search_hidden") or ids)
    return [
        d
        for d in docs
        if (show_hidden or not is_hidden(d))
        and matches(d, data, regex_fields=regex_fields)
        and search_text(d, data.get("search_text"), search_fields)
    ]


def ensure_unique_name(store: Any, kind: str, name: str, own_id: str | None = None) -> None:
    """400/801 when another document of `kind` already has `name`."""
    if any(d["id"] != own_id for d in store.by_name(kind, name)):
        raise errors.expected_unique_data(f"name={name}")


def is_hidden(doc: dict) -> bool:
    return "hidden" in (doc.get("system_tags") or [])


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (2, 0, "")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def order_and_page(docs: list[dict], data: dict[str, Any]) -> list[dict]:
    order_by = data.get("order_by") or []
    for key in reversed([order_by] if isinstance(order_by, str) else order_by):
        if not isinstance(key, str) or not key:
            continue
        reverse = key.startswith("-")
        path = key.lstrip("-+")
        docs.sort(key=lambda d, p=path: _sort_key(get_path(d, p)), reverse=reverse)
    page, page_size = data.get("page"), data.get("page_size") or data.get("size")
    if page_size is not None:
        try:
            page_size = min(int(page_size), MAX_PAGE_SIZE)
            start = int(page or 0) * page_size
        except (TypeError, ValueError):
            raise errors.validation_error(f"page and page_size must be integers, got {page!r}, {page_size!r}") from None
        return docs[start : start + page_size]
    return docs


def public(doc: dict, hidden_fields: Iterable[str] = ()) -> dict:
    return {k: v for k, v in doc.items() if k not in hidden_fields}
