"""Transport of the embedded server: paths and versions, bodies, query strings, headers and the envelope."""

from __future__ import annotations

import json

import jwt

ENVELOPE_META = {
    "id",
    "trx",
    "endpoint",
    "result_code",
    "result_subcode",
    "result_msg",
    "error_stack",
    "error_data",
}


def post(raw, path: str, body: bytes = b"{}", **headers: str):
    """A request outside RawClient, for headers and bodies it does not send."""
    headers.setdefault("Authorization", "Bearer " + raw.token())
    return raw.http.post(raw.server.url + path, data=body, headers=headers, timeout=30)


class TestEnvelope:
    def test_success_envelope_has_full_meta_and_data(self, raw):
        reply = raw.call("queues.get_all", {})
        assert reply.status == 200
        assert set(reply.meta) >= ENVELOPE_META
        assert len(reply.meta["id"]) == 32
        assert reply.meta["trx"] == reply.meta["id"]
        assert reply.meta["endpoint"] == {
            "name": "queues.get_all",
            "requested_version": "2.23",
            "actual_version": "2.4",
        }
        assert reply.meta["result_code"] == 200
        assert reply.meta["result_subcode"] == 0
        assert reply.meta["result_msg"] == "OK"
        assert reply.meta["error_stack"] is None
        assert reply.meta["error_data"] == {}
        assert isinstance(reply.data["queues"], list)

    def test_error_envelope_status_equals_result_code(self, raw):
        reply = raw.call("tasks.get_by_id", {"task": "0" * 32})
        assert reply.status == 400
        assert reply.meta["result_code"] == 400
        assert reply.subcode == 101
        assert reply.meta["result_msg"]
        assert set(reply.meta) >= ENVELOPE_META
        assert reply.data == {}

    def test_data_is_never_null(self, raw):
        queue = raw.ok("queues.create", {"name": "empty-queue"})["id"]
        reply = raw.call("queues.get_next_task", {"queue": queue})
        assert reply.status == 200
        assert reply.data == {}

    def test_trx_header_is_echoed(self, raw):
        response = post(raw, "/v2.23/queues.get_default", **{"X-ClearML-Trx": "my-transaction"})
        assert response.status_code == 200
        assert response.json()["meta"]["trx"] == "my-transaction"

    def test_trains_trx_header_is_echoed(self, raw):
        response = post(raw, "/v2.23/queues.get_default", **{"X-Trains-Trx": "old-style"})
        assert response.json()["meta"]["trx"] == "old-style"


class TestPathsAndVersions:
    def test_versioned_path(self, raw):
        reply = raw.call("queues.get_all", {}, version="2.23")
        assert reply.status == 200
        assert reply.meta["endpoint"]["requested_version"] == "2.23"

    def test_unversioned_path_uses_max_version(self, raw):
        reply = raw.call("queues.get_all", {}, version=None)
        assert reply.status == 200
        assert reply.meta["endpoint"]["requested_version"] == "2.34"

    def test_old_version_still_served(self, raw):
        reply = raw.call("queues.get_all", {}, version="2.5")
        assert reply.status == 200
        assert reply.meta["endpoint"]["actual_version"] == "2.4"

    def test_version_above_max_is_accepted(self, raw):
        assert raw.call("queues.get_all", {}, version="2.99").status == 200

    def test_version_below_minimum_is_404(self, raw):
        reply = raw.call("queues.get_all", {}, version="1.0")
        assert reply.status == 404
        assert reply.meta["result_code"] == 404

    def test_unknown_endpoint_is_404(self, raw):
        reply = raw.call("nothing.here", {})
        assert reply.status == 404

    def test_malformed_path_is_400(self, raw):
        response = post(raw, "/v2.23/not a path!")
        assert response.status_code == 400
        assert response.json()["meta"]["result_code"] == 400

    def test_trailing_slash_is_accepted(self, raw):
        response = post(raw, "/v2.23/queues.get_default/")
        assert response.status_code == 200


class TestMethods:
    def test_get_with_json_body(self, raw):
        queue = raw.ok("queues.create", {"name": "via-get"})["id"]
        data = raw.ok("queues.get_by_id", {"queue": queue}, method="GET")
        assert data["queue"]["name"] == "via-get"

    def test_put_works_like_post(self, raw):
        assert raw.ok("queues.get_default", method="PUT")["name"] == "default"

    def test_connection_close_is_announced(self, raw):
        response = raw.http.post(raw.server.url + "/debug.ping", json={}, headers={"Connection": "close"}, timeout=30)
        assert response.status_code == 200
        assert response.headers["Connection"] == "close"
        assert raw.ok("debug.ping", authorization=None)["msg"] == "ClearML server"

    def test_options_is_200(self, raw):
        response = raw.http.options(raw.server.url + "/v2.23/tasks.get_all", timeout=30)
        assert response.status_code == 200

    def test_extra_method_field_is_ignored_and_never_stored(self, raw):
        task = raw.ok("tasks.create", {"name": "with method", "type": "training", "method": "get"})["id"]
        raw.ok("tasks.edit", {"task": task, "comment": "edited", "method": "get"})
        doc = raw.ok("tasks.get_by_id", {"task": task, "method": "get"})["task"]
        assert doc["comment"] == "edited"
        assert "method" not in doc
        found = raw.ok("tasks.get_all", {"id": [task], "method": "get"})["tasks"]
        assert [t["id"] for t in found] == [task]


class TestBodies:
    def test_query_parameters_are_merged_and_converted(self, raw):
        response = post(raw, "/v2.23/debug.ping?num=100&ratio=0.5&flag=true&off=false&text=abc&a.b=nested")
        assert response.status_code == 200
        data = response.json()["data"]
        assert data["num"] == 100
        assert data["ratio"] == 0.5
        assert data["flag"] is True
        assert data["off"] is False
        assert data["text"] == "abc"
        assert data["a"] == {"b": "nested"}

    def test_query_and_body_merge(self, raw):
        response = post(raw, "/v2.23/debug.ping?from_query=1", body=json.dumps({"from_body": 2}).encode())
        data = response.json()["data"]
        assert data["from_query"] == 1
        assert data["from_body"] == 2

    def test_login_expiration_from_query(self, raw):
        response = post(raw, "/auth.login?expiration_sec=100", body=b"", Authorization=raw.basic)
        assert response.status_code == 200
        claims = jwt.decode(response.json()["data"]["token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 100

    def test_content_type_is_ignored(self, raw):
        response = post(raw, "/v2.23/queues.get_default", body=b"{}", **{"Content-Type": "text/plain"})
        assert response.status_code == 200

    def test_empty_body_is_an_empty_request(self, raw):
        response = post(raw, "/v2.23/queues.get_default", body=b"")
        assert response.status_code == 200

    def test_content_encoding_is_415(self, raw):
        response = post(raw, "/v2.23/queues.get_default", **{"Content-Encoding": "gzip"})
        assert response.status_code == 415
        # the server keeps serving
        assert raw.call("queues.get_default").status == 200

    def test_malformed_json_is_400_and_server_keeps_serving(self, raw):
        reply = raw.call("queues.get_default", body=b"{not json")
        assert reply.status == 400
        assert reply.meta["result_code"] == 400
        assert raw.ok("queues.get_default")["name"] == "default"

    def test_non_object_json_is_400(self, raw):
        reply = raw.call("queues.get_default", body=b"[1, 2]")
        assert reply.status == 400

    def test_json_lines_batch(self, raw):
        task = raw.new_task("lines task")
        lines = [{"task": task, "type": "log", "msg": f"line {i}", "timestamp": 1000 + i} for i in range(3)]
        data = raw.ok("events.add_batch", lines=lines)
        assert data["added"] == 3
        assert data["errors"] == 0

    def test_json_lines_skips_blank_lines(self, raw):
        task = raw.new_task("blank lines")
        body = "\n".join(["", json.dumps({"task": task, "type": "log", "msg": "x"}), "", ""]).encode()
        response = post(raw, "/v2.23/events.add_batch", body=body, **{"Content-Type": "application/json-lines"})
        assert response.status_code == 200
        assert response.json()["data"]["added"] == 1

    def test_json_lines_bad_line_is_400(self, raw):
        body = b'{"type": "log"}\n{broken'
        response = post(raw, "/v2.23/events.add_batch", body=body, **{"Content-Type": "application/json-lines"})
        assert response.status_code == 400

    def test_plain_object_is_a_batch_of_one(self, raw):
        task = raw.new_task("single event")
        data = raw.ok("events.add_batch", {"task": task, "type": "log", "msg": "one"})
        assert data["added"] == 1

    def test_json_array_is_a_batch(self, raw):
        task = raw.new_task("array batch")
        body = json.dumps([{"task": task, "type": "log", "msg": "a"}, {"task": task, "type": "log", "msg": "b"}])
        data = raw.ok("events.add_batch", body=body.encode())
        assert data["added"] == 2
