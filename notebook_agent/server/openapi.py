"""The OpenAPI 3.1 description of the embedded server, generated from its registry and request_fields.py."""

from __future__ import annotations

import functools
from typing import Any

from notebook_agent import __version__
from notebook_agent.server import registry
from notebook_agent.server.registry import MAX_VERSION
from notebook_agent.server.request_fields import request_schema
from notebook_agent.server.schema import request

_META: dict[str, Any] = {
    "type": "object",
    "required": ["id", "trx", "endpoint", "result_code", "result_subcode", "result_msg"],
    "properties": {
        "id": {"type": "string"},
        "trx": {"type": "string"},
        "endpoint": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "requested_version": {"type": "string"},
                "actual_version": {"type": ["string", "null"]},
            },
        },
        "result_code": {"type": "integer"},
        "result_subcode": {"type": "integer"},
        "result_msg": {"type": "string"},
        "error_stack": {"type": ["string", "null"]},
        "error_data": {"type": "object"},
    },
}
_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["meta", "data"],
    "properties": {"meta": {"$ref": "#/components/schemas/Meta"}, "data": {"type": "object"}},
}
_ANSWER = {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}


def _operation(name: str) -> dict[str, Any]:
    definitions = registry.versions(name)
    latest = definitions[-1]
    schema = request_schema(name) or request()
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if name == "events.add_batch":
        content["application/json-lines"] = {"schema": {"type": "string", "description": "one event per line"}}
    summary = (latest.handler.__doc__ or "").strip().splitlines()
    operation: dict[str, Any] = {
        "operationId": name,
        "summary": summary[0] if summary else name,
        "x-min-version": definitions[0].min_version,
        "requestBody": {"required": False, "content": content},
        "responses": {
            "200": {"description": "OK", "content": _ANSWER},
            "default": {"description": "an API error: the HTTP status equals meta.result_code", "content": _ANSWER},
        },
    }
    if not latest.authorize:
        operation["security"] = []
    return operation


@functools.lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """Every endpoint as `POST /{service.action}` (any HTTP method works, and `/vX.Y/` may prefix the path)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "notebook-agent embedded ClearML-compatible API server",
            "version": __version__,
            "description": (
                f"ClearML REST API {MAX_VERSION} subset. Every answer is the envelope {{meta, data}} with HTTP "
                "status = meta.result_code. A null optional field means 'not given'; unknown fields are ignored."
            ),
        },
        "paths": {f"/{name}": {"post": _operation(name)} for name in registry.endpoint_names()},
        "components": {
            "schemas": {"Meta": _META, "Envelope": _ENVELOPE},
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic", "description": "access_key:secret_key"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (from auth.login)"},
            },
        },
        "security": [{"basic": []}, {"bearer": []}],
    }
