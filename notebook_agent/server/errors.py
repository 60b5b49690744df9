"""Errors of the embedded server, with the real ClearML server's codes and subcodes (apierrors/errors.conf)."""

from __future__ import annotations

from typing import Any


class ServerError(Exception):
    """An API error answered in the envelope: HTTP status = code, plus subcode and message."""

    def __init__(self, code: int, subcode: int, msg: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}/{subcode}: {msg}")
        self.code = code
        self.subcode = subcode
        self.msg = msg
        self.data = data or {}


def _factory(code: int, subcode: int, default: str):
    def make(detail: str = "", **data: Any) -> ServerError:
        msg = f"{default} ({detail})" if detail else default
        return ServerError(code, subcode, msg, data)

    make.__name__ = default.lower().replace(" ", "_")
    return make


# 400 bad_request
bad_request = _factory(400, 0, "Bad request")
missing_required_fields = _factory(400, 11, "Missing required fields")
validation_error = _factory(400, 12, "Validation error")
batch_contains_no_items = _factory(400, 17, "Batch request contains no items")
invalid_task_id = _factory(400, 101, "Invalid task id")
invalid_task_status = _factory(400, 110, "Invalid task status")
failed_changing_task_status = _factory(400, 121, "Failed changing task status. probably someone changed it")
invalid_project_id = _factory(400, 401, "Invalid project id")
invalid_queue_id = _factory(400, 701, "Invalid queue id")
queue_not_empty = _factory(400, 702, "Queue is not empty")
invalid_queue_or_task_not_queued = _factory(400, 703, "Invalid queue id or task not in queue")
task_already_queued = _factory(400, 706, "Task already in queue")
no_default_queue = _factory(400, 707, "No queue is tagged as the default queue for this company")
multiple_default_queues = _factory(400, 708, "More than one queue is tagged as the default queue")
expected_unique_data = _factory(400, 801, "Value combination already exists (unique field already contains this value)")
invalid_worker_id = _factory(400, 1001, "Invalid worker id")
worker_not_registered = _factory(400, 1004, "Worker is not registered")

# 401 unauthorized
bad_auth_type = _factory(401, 10, "Bad authentication type")
no_credentials = _factory(401, 20, "Unauthorized (missing credentials)")
bad_credentials = _factory(401, 21, "Unauthorized (malformed credentials)")
invalid_credentials = _factory(401, 22, "Unauthorized (invalid credentials)")
invalid_token = _factory(401, 30, "Invalid token")

# 404, 500
endpoint_not_found = _factory(404, 0, "Unable to find endpoint")
general_error = _factory(500, 0, "General data error")
