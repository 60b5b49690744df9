"""Typed helpers for the `projects.*` endpoints."""

from __future__ import annotations

import re
from typing import Any

from notebook_agent.api._common import Sender, call
from notebook_agent.api.errors import APIError, Codes


def get_all(
    session: Sender,
    name: str | None = None,
    ids: list[str] | None = None,
    only_fields: list[str] | None = None,
    search_hidden: bool | None = None,
    shallow_search: bool | None = None,
) -> list[dict[str, Any]]:
    """Projects matching the filters; `name` is a regular expression on the server."""
    data = call(
        session,
        "projects.get_all",
        name=name,
        id=ids,
        only_fields=only_fields,
        search_hidden=search_hidden,
        shallow_search=shallow_search,
    )
    return list(data.get("projects") or [])


def create(
    session: Sender,
    name: str,
    description: str = "",
    tags: list[str] | None = None,
    system_tags: list[str] | None = None,
    default_output_destination: str | None = None,
) -> str:
    """Create a project (`a/b` makes nested ones) and return its ID; a duplicate name gives 400/801."""
    data = call(
        session,
        "projects.create",
        name=name,
        description=description,
        tags=tags,
        system_tags=system_tags,
        default_output_destination=default_output_destination,
    )
    return str(data["id"])


def find_by_name(session: Sender, name: str) -> dict[str, Any] | None:
    """The project named exactly `name` (hidden ones included, like the SDK's lookup), or None."""
    found = get_all(session, name="^" + re.escape(name) + "$", only_fields=["id", "name"], search_hidden=True)
    for project in found:
        if project.get("name") == name:
            return project
    return None


def get_or_create(session: Sender, name: str, description: str = "") -> str:
    """The ID of the project named `name`, creating it if needed."""
    existing = find_by_name(session, name)
    if existing:
        return str(existing["id"])
    try:
        return create(session, name, description=description)
    except APIError as err:
        # Someone else created it between our lookup and create: use theirs.
        if err.is_(Codes.EXPECTED_UNIQUE_DATA):
            existing = find_by_name(session, name)
            if existing:
                return str(existing["id"])
        raise
