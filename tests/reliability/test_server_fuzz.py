"""A schema-driven fuzz of the embedded server: for every endpoint its published OpenAPI request schema drives
hypothesis to make valid bodies, bodies with a field of a wrong type, junk JSON and junk bytes; each goes over real
HTTP and must get a well-formed envelope and never a 5xx, and the server's documents stay readable and well typed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openapi_spec_validator
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notebook_agent.server import EmbeddedServer, registry
from notebook_agent.server.request_fields import TASK_FIELDS, TASK_STATUSES
from notebook_agent.server.schema import check
from notebook_agent.server.services.tasks import TASK_TYPES
from tests.conftest import RawClient
from tests.reliability.conftest import FAKE_ACCESS_KEY, FAKE_SECRET_KEY

# Per endpoint: ~1,800 calls in all, well under a minute on 2 cores, the same ones every run (derandomized). Setting
# NOTEBOOK_AGENT_FUZZ_EXAMPLES runs that many per endpoint with fresh random examples, for a deeper search by hand.
DEEP = os.environ.get("NOTEBOOK_AGENT_FUZZ_EXAMPLES")
EXAMPLES = int(DEEP or 24)
ENVELOPE_META = {"id", "trx", "endpoint", "result_code", "result_subcode", "result_msg", "error_data"}

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


class Fuzz:
    """One server for the whole module (the fuzz adds up, as a long-lived server's data does), its documented
    schemas, and ids of real documents for the generated bodies to hit."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server
        self.raw = RawClient(server)
        self.openapi = self.raw.ok("debug.openapi")
        queue = self.raw.default_queue()
        project = self.raw.ok("projects.create", {"name": "fuzz project"})["id"]
        tasks = [self.raw.new_task(f"fuzz task {i}", project=project) for i in range(3)]
        self.raw.ok("tasks.enqueue", {"task": tasks[1], "queue": queue})
        self.raw.ok("tasks.started", {"task": tasks[2]})
        self.raw.ok("workers.register", {"worker": "fuzz:0", "queues": [queue]})
        self.ids = {"task": tasks, "queue": [queue], "project": [project]}
        self.session = requests.Session()

    def schema(self, endpoint: str) -> dict[str, Any]:
        return self.openapi["paths"][f"/{endpoint}"]["post"]["requestBody"]["content"]["application/json"]["schema"]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    path: Path = tmp_path_factory.mktemp("fuzz-server")
    server = EmbeddedServer(path, access_key=FAKE_ACCESS_KEY, secret_key=FAKE_SECRET_KEY).start()
    try:
        yield Fuzz(server)
    finally:
        server.stop()


# strategies from a (published) JSON schema


def valid(schema: dict[str, Any], ids: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    """Values that fit `schema`; ids are mostly real ones, sometimes unknown or empty."""
    kind = schema.get("x-id-of")
    if kind:
        real = st.sampled_from(ids[kind])
        return st.one_of(real, real, real, st.sampled_from(["", "0" * 32]), st.text(max_size=8))
    kinds = schema.get("type", [])
    options = [_one(k, schema, ids) for k in ([kinds] if isinstance(kinds, str) else kinds)]
    return st.one_of(options) if options else JSON


def _one(kind: str, schema: dict[str, Any], ids: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "string":
        return st.text(min_size=3, max_size=12) | st.text(max_size=2)
    if kind == "integer":
        return st.integers(-3, 100) | st.integers(int(low), int(high))
    if kind == "number":
        return st.integers(-3, 100) | st.floats(low, high, allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(valid(schema["items"], ids) if "items" in schema else JSON, max_size=3)
    return _object(schema, ids)


def _object(schema: dict[str, Any], ids: dict[str, list[str]]) -> st.SearchStrategy[dict]:
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    values = schema.get("additionalProperties")
    if isinstance(values, dict):
        return st.dictionaries(st.text(max_size=8), valid(values, ids), max_size=3)
    return st.fixed_dictionaries(
        {name: valid(properties[name], ids) for name in required},
        optional={name: valid(sub, ids) | st.none() for name, sub in properties.items() if name not in required},
    )


def with_a_wrong_field(body: dict, name: str, value: Any) -> dict:
    return {**body, name: value}


def bodies(schema: dict[str, Any], ids: dict[str, list[str]], batch: bool) -> st.SearchStrategy[tuple[str, Any]]:
    """(content kind, body): valid JSON objects, ones with a field replaced by any JSON value, junk JSON, bytes."""
    good = _object(schema, ids)
    names = sorted(schema.get("properties") or {}) or ["x"]
    broken = st.builds(with_a_wrong_field, good, st.sampled_from(names), JSON)
    kinds = [
        st.tuples(st.just("json"), good),
        st.tuples(st.just("json"), good),
        st.tuples(st.just("json"), broken),
        st.tuples(st.just("json"), JSON),
        st.tuples(st.just("bytes"), st.binary(max_size=40)),
    ]
    if batch:
        kinds.append(st.tuples(st.just("lines"), st.lists(good | broken, min_size=1, max_size=4)))
    return st.one_of(kinds)


def send(fuzz: Fuzz, endpoint: str, method: str, kind: str, body: Any) -> requests.Response:
    headers = {"Authorization": "Bearer " + fuzz.raw.token()}
    if kind == "json":
        data = json.dumps(body).encode()
    elif kind == "lines":
        data = "\n".join(json.dumps(line) for line in body).encode()
        headers["Content-Type"] = "application/json-lines"
    else:
        data = body
    return fuzz.session.request(method, f"{fuzz.server.url}/v2.23/{endpoint}", data=data, headers=headers, timeout=30)


def assert_envelope(response: requests.Response) -> dict[str, Any]:
    assert response.status_code < 500, response.text
    payload = response.json()
    meta = payload["meta"]
    assert set(meta) >= ENVELOPE_META, meta
    assert meta["result_code"] == response.status_code
    assert isinstance(payload["data"], dict)
    if response.status_code == 200:
        assert meta["result_subcode"] == 0
    else:
        assert meta["result_msg"] and payload["data"] == {}
    return payload


@pytest.mark.parametrize("endpoint", registry.endpoint_names())
def test_no_generated_body_gets_a_5xx_or_a_broken_envelope(fuzz: Fuzz, endpoint: str) -> None:
    strategy = bodies(fuzz.schema(endpoint), fuzz.ids, batch=endpoint == "events.add_batch")

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not DEEP,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(method=st.sampled_from(["GET", "POST"]), body=strategy)
    def call(method: str, body: tuple[str, Any]) -> None:
        assert_envelope(send(fuzz, endpoint, method, *body))

    call()


def test_after_the_fuzz_every_document_reads_back_well_typed(fuzz: Fuzz) -> None:
    raw = fuzz.raw
    for endpoint in ("queues.get_all", "projects.get_all", "workers.get_all", "server.info"):
        raw.ok(endpoint)
    tasks = raw.ok("tasks.get_all", {"search_hidden": True})["tasks"]
    assert len(tasks) >= 3
    for task in tasks:
        assert task["status"] in TASK_STATUSES, task["status"]
        assert isinstance(task["name"], str) and len(task["name"].strip()) >= 3
        assert task["type"] in TASK_TYPES
        for field, schema in TASK_FIELDS.items():
            if task.get(field) is not None:
                check(schema, task[field], field)  # what was stored is what the schema allows in
    ids = [t["id"] for t in tasks]
    # the readers that walk stored parts (hyperparams, configuration) read every task
    raw.ok("tasks.get_hyper_params", {"tasks": ids})
    raw.ok("tasks.get_configurations", {"tasks": ids})
    known = set(ids)
    for queue in raw.ok("queues.get_all")["queues"]:
        assert {e["task"] for e in queue["entries"]} <= known


# the published description


def test_the_openapi_document_needs_the_key_and_covers_every_endpoint(fuzz: Fuzz) -> None:
    anonymous = requests.post(f"{fuzz.server.url}/debug.openapi", json={}, timeout=10)
    assert (anonymous.status_code, anonymous.json()["meta"]["result_subcode"]) == (401, 20)
    document = fuzz.openapi
    assert document["openapi"].startswith("3.1")
    assert sorted(path.lstrip("/") for path in document["paths"]) == registry.endpoint_names()
    public = sorted(p.lstrip("/") for p, item in document["paths"].items() if item["post"].get("security") == [])
    assert public == sorted(e for e in registry.endpoint_names() if not registry.versions(e)[-1].authorize)
    for item in document["paths"].values():
        jsonschema.Draft202012Validator.check_schema(
            item["post"]["requestBody"]["content"]["application/json"]["schema"]
        )


def test_the_openapi_document_is_valid_openapi(fuzz: Fuzz) -> None:
    openapi_spec_validator.validate(fuzz.openapi)
