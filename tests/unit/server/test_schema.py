"""The request-typing vocabulary and its validator: which code, subcode and message each misfit gets."""

from __future__ import annotations

from typing import Any

import pytest

from notebook_agent.server import errors
from notebook_agent.server.schema import (
    any_of,
    array,
    boolean,
    id_of,
    integer,
    obj,
    request,
    seconds,
    string,
    strings,
    validate,
)

SCHEMA = request(
    {
        "task": id_of("task"),
        "queue": id_of("queue"),
        "name": string(),
        "count": integer(0, 10),
        "wait": seconds(),
        "force": boolean(),
        "tags": strings(),
        "ids": any_of("string", "array", items=string()),
        "items": array(obj({"name": string(), "value": string()}, required=("name",))),
        "params": obj(values=obj(values=string())),
        "mode": string(enum=["a", "b"]),
    },
    "task",
)


def failure(data: dict[str, Any]) -> errors.ServerError:
    with pytest.raises(errors.ServerError) as caught:
        validate(SCHEMA, data)
    return caught.value


@pytest.mark.parametrize(
    ("data", "subcode", "words"),
    [
        ({}, 11, "Missing required fields (task)"),
        ({"task": None}, 12, "field 'task' must be string, got null"),
        ({"task": ""}, 101, "field 'task' must be a non-empty string id, got string"),
        ({"task": 5}, 101, "got integer"),
        ({"task": "t", "queue": ["q"]}, 701, "field 'queue' must be a non-empty string id, got array"),
        ({"task": "t", "name": 5}, 12, "field 'name' must be string, got integer"),
        ({"task": "t", "count": True}, 12, "field 'count' must be integer, got boolean"),
        ({"task": "t", "count": 1.5}, 12, "field 'count' must be integer, got number"),
        ({"task": "t", "count": 11}, 12, "field 'count' out of range [0, 10]: 11"),
        ({"task": "t", "wait": -1}, 12, "field 'wait' out of range"),
        ({"task": "t", "tags": ["a", 2]}, 12, "field 'tags[1]' must be string, got integer"),
        ({"task": "t", "ids": 3}, 12, "field 'ids' must be string or array, got integer"),
        ({"task": "t", "ids": ["a", {}]}, 12, "field 'ids[1]' must be string, got object"),
        ({"task": "t", "items": [{"value": "v"}]}, 12, "field 'items[0]' must contain ['items[0].name']"),
        ({"task": "t", "items": [{"name": "n", "value": 1}]}, 12, "field 'items[0].value' must be string"),
        ({"task": "t", "params": {"s": {"k": 1}}}, 12, "field 'params.s.k' must be string, got integer"),
        ({"task": "t", "params": {"s": "flat"}}, 12, "field 'params.s' must be object, got string"),
        ({"task": "t", "mode": "c"}, 12, "field 'mode' must be one of ['a', 'b'], got string"),
    ],
)
def test_each_misfit_gets_its_subcode_and_a_message_naming_field_and_type(
    data: dict[str, Any], subcode: int, words: str
) -> None:
    error = failure(data)
    assert (error.code, error.subcode) == (400, subcode)
    assert words in error.msg


def test_a_fitting_body_passes_with_its_null_optional_fields_dropped_and_unknown_ones_kept() -> None:
    data = {"task": "t", "count": 3.0, "name": None, "method": "GET", "ids": "x", "params": {"s": {"k": "v"}}}
    validate(SCHEMA, data)
    assert data == {"task": "t", "count": 3.0, "method": "GET", "ids": "x", "params": {"s": {"k": "v"}}}


def test_no_schema_means_anything_goes() -> None:
    validate(None, {"anything": object()})
