"""Request typing of the embedded server: a small JSON-Schema subset, its validator and the field-type helpers.

Every endpoint's request fields are declared once (request_fields.py) in this vocabulary; the HTTP face checks
each body against it before the handler runs, and openapi.py publishes the same schemas.
"""

from __future__ import annotations

from typing import Any

from notebook_agent.server import errors

Schema = dict[str, Any]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Epoch seconds or milliseconds: far beyond any real clock, within what SQLite and int() handle.
TIMESTAMP_LIMIT = 2**53
# A duration in seconds (timeouts, last_seen): ~30 years, within what datetime.timedelta holds.
MAX_SECONDS = 10**9

# The subcode an empty id of each kind gets (an unknown one gets the same from the handler's lookup).
_ID_ERRORS = {
    "task": errors.invalid_task_id,
    "queue": errors.invalid_queue_id,
    "project": errors.invalid_project_id,
}


# field-type helpers: each returns a JSON Schema (subset) fragment
def string(*, enum: list[str] | None = None) -> Schema:
    return {"type": "string", "enum": enum} if enum else {"type": "string"}


def id_of(kind: str) -> Schema:
    """A document id: a string; an empty one is answered with the kind's invalid-id subcode."""
    return {"type": "string", "x-id-of": kind}


def integer(minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> Schema:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def number(minimum: float = -TIMESTAMP_LIMIT, maximum: float = TIMESTAMP_LIMIT) -> Schema:
    return {"type": "number", "minimum": minimum, "maximum": maximum}


def seconds() -> Schema:
    return {"type": "number", "minimum": 0, "maximum": MAX_SECONDS}


def boolean() -> Schema:
    return {"type": "boolean"}


def array(items: Schema | None = None) -> Schema:
    return {"type": "array", "items": items} if items is not None else {"type": "array"}


def strings() -> Schema:
    return array(string())


def obj(
    properties: dict[str, Schema] | None = None, required: tuple[str, ...] = (), values: Schema | None = None
) -> Schema:
    """An object with typed `properties` (others allowed, any value), or a map whose every value is `values`."""
    schema: Schema = {"type": "object"}
    if properties:
        schema["properties"] = properties
    if required:
        schema["required"] = list(required)
    if values is not None:
        schema["additionalProperties"] = values
    return schema


def any_of(*types: str, items: Schema | None = None) -> Schema:
    """One of several JSON types; `items` types the elements when the value is an array."""
    schema: Schema = {"type": list(types)}
    if items is not None:
        schema["items"] = items
    return schema


def request(properties: dict[str, Schema] | None = None, *required: str) -> Schema:
    """A request body: the named fields typed, `required` ones present; unknown fields are ignored (the SDK
    sends `method`, get_all calls take any document field as a filter)."""
    return obj(properties or {}, tuple(required))


# validation
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "integer": (int, float),
    "number": (int, float),
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", dict: "object", list: "array"}.get(type(value), type(value).__name__)


def _is(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if isinstance(value, bool) and kind != "boolean":
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _PY_TYPES.get(kind, ()))


def _fail(path: str, expected: str, value: Any) -> errors.ServerError:
    return errors.validation_error(
        f"field '{path}' must be {expected}, got {_json_type(value)}", field=path, expected=expected
    )


def check(schema: Schema, value: Any, path: str) -> None:
    """Raise 400/12 naming `path` and the expected type when `value` does not fit `schema`."""
    kinds = schema.get("type")
    id_kind = schema.get("x-id-of")
    if id_kind in _ID_ERRORS and not (isinstance(value, str) and value):
        # An id of the wrong type or empty gets the kind's subcode, as an unknown one does (clients tell a bad id
        # from a bad call by it: the SDK falls back from queues.get_by_id to a name lookup on 701).
        raise _ID_ERRORS[id_kind](f"field '{path}' must be a non-empty string id, got {_json_type(value)}")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            raise _fail(path, " or ".join(kinds), value)
    if "enum" in schema and value not in schema["enum"]:
        raise _fail(path, f"one of {schema['enum']}", value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            raise errors.validation_error(
                f"field '{path}' out of range [{low}, {high}]: {value}", field=path, expected="in range"
            )
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            check(schema["items"], item, f"{path}[{i}]")
    if isinstance(value, dict):
        _check_object(schema, value, path)


def _check_object(schema: Schema, value: dict, path: str) -> None:
    prefix = f"{path}." if path else ""
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    missing = [name for name in required if name not in value]
    if missing:
        names = [prefix + name for name in missing]
        if path:  # inside a field, as the real server's schema check words it
            raise errors.validation_error(f"field '{path}' must contain {names}", field=path, expected="object")
        raise errors.missing_required_fields(", ".join(names), fields=names)
    for name, item in value.items():
        sub = properties.get(name, schema.get("additionalProperties"))
        if not isinstance(sub, dict):
            continue
        if item is None and name not in required and name in properties:
            continue  # null for an optional field means "not given", as the clients send it
        if item is None and name in required:
            raise _fail(prefix + name, _describe(sub), item)
        check(sub, item, prefix + name)


def _describe(schema: Schema) -> str:
    kinds = schema.get("type", "a value")
    return " or ".join(kinds) if isinstance(kinds, list) else kinds


def validate(schema: Schema | None, data: dict[str, Any]) -> None:
    """Check a request body against its endpoint's schema (no schema: anything goes), and drop its optional
    fields that are null, so that every handler sees them as not given."""
    if schema is None:
        return
    _check_object(schema, data, "")
    optional = set(schema.get("properties") or {}) - set(schema.get("required") or [])
    for name in [n for n, v in data.items() if v is None and n in optional]:
        del data[name]
