"""The request fields of every endpoint the embedded server implements, typed in one table (schema.py vocabulary).

Types follow the real server's schemas (apiserver/schema/services/*.conf) where the clients rely on them; fields
a handler does not read are left out (unknown fields are ignored, as the real server does).
"""

from __future__ import annotations

from notebook_agent.server.schema import (
    MAX_SECONDS,
    Schema,
    any_of,
    array,
    boolean,
    id_of,
    integer,
    number,
    obj,
    request,
    seconds,
    string,
    strings,
)

TASK_STATUSES = [
    "created",
    "queued",
    "in_progress",
    "stopped",
    "published",
    "publishing",
    "closed",
    "failed",
    "completed",
    "unknown",
]

TASK_TYPES = [
    "training",
    "testing",
    "inference",
    "data_processing",
    "application",
    "monitor",
    "controller",
    "optimizer",
    "service",
    "qc",
    "custom",
]

TASK, QUEUE, PROJECT = id_of("task"), id_of("queue"), id_of("project")

# Shapes stored inside a task document: typed deeply enough that every later reader finds what it expects.
PARAMS_ITEM = obj(
    {k: string() for k in ("section", "name", "value", "type", "description")},
)
CONFIG_ITEM = obj({k: string() for k in ("name", "value", "type", "description")})
ARTIFACT = obj(
    {
        "key": string(),
        "type": string(),
        "mode": string(enum=["input", "output"]),
        "uri": string(),
        "hash": string(),
        "content_size": integer(),
        "timestamp": integer(),
        "type_data": obj(),
        "display_data": array(),
    },
    required=("key", "type"),
)
MODEL_REF = obj({"name": string(), "model": string(), "updated": string()})
HYPERPARAMS = obj(values=obj(values=PARAMS_ITEM))
CONFIGURATION = obj(values=CONFIG_ITEM)
MODELS = obj({"input": array(MODEL_REF), "output": array(MODEL_REF)})
EXECUTION = obj({"queue": string(), "artifacts": array(ARTIFACT), "parameters": obj(), "model_labels": obj()})
SCRIPT = obj({"requirements": obj()})
CONTAINER = obj(values=any_of("string", "null"))

TASK_FIELDS: dict[str, Schema] = {
    "name": string(),
    "type": string(enum=TASK_TYPES),
    "comment": string(),
    "parent": string(),
    "project": string(),
    "tags": strings(),
    "system_tags": strings(),
    "execution": EXECUTION,
    "script": SCRIPT,
    "hyperparams": HYPERPARAMS,
    "configuration": CONFIGURATION,
    "models": MODELS,
    "container": CONTAINER,
    "runtime": obj(),
    "output": obj({"destination": string(), "error": string()}),
    "output_dest": string(),
}

STATUS_CHANGE = {"task": TASK, "force": boolean(), "status_reason": string(), "status_message": string()}

# get_all calls: the control fields are typed; any other field is a filter on the document and may be anything.
GET_ALL = {
    "id": any_of("string", "array", items=string()),
    "name": string(),
    "only_fields": strings(),
    "order_by": any_of("string", "array", items=string()),
    "page": integer(),
    "page_size": integer(),
    "size": integer(),
    "search_text": string(),
    "search_hidden": boolean(),
}

QUEUE_FIELDS = {
    "name": string(),
    "tags": strings(),
    "system_tags": strings(),
    "display_name": string(),
    "metadata": obj(),
}
PROJECT_FIELDS = {
    "name": string(),
    "description": string(),
    "tags": strings(),
    "system_tags": strings(),
    "default_output_destination": string(),
}
EVENT = {
    "task": string(),
    "type": string(),
    "timestamp": number(),
    "iter": integer(),
    "metric": string(),
    "variant": string(),
    "msg": string(),
    "level": string(),
    "worker": string(),
}
QUEUE_MOVE = request({"queue": QUEUE, "task": string(), "count": integer()}, "queue", "task")

REQUESTS: dict[str, Schema] = {
    # auth, server, debug, users
    "auth.login": request({"expiration_sec": integer()}),
    "auth.logout": request(),
    "login.supported_modes": request(),
    "server.info": request(),
    "debug.ping": request(),
    "debug.openapi": request(),
    "users.get_current_user": request(),
    # projects
    "projects.create": request(PROJECT_FIELDS, "name"),
    "projects.get_by_id": request({"project": PROJECT}, "project"),
    "projects.get_all": request({**GET_ALL, "basename": string(), "description": string()}),
    "projects.get_all_ex": request({**GET_ALL, "basename": string(), "description": string()}),
    "projects.update": request({"project": PROJECT, **PROJECT_FIELDS}, "project"),
    "projects.delete": request({"project": PROJECT, "force": boolean()}, "project"),
    # queues
    "queues.create": request(QUEUE_FIELDS, "name"),
    "queues.get_by_id": request({"queue": QUEUE, "max_task_entries": integer()}, "queue"),
    "queues.get_all": request({**GET_ALL, "max_task_entries": integer()}),
    "queues.get_all_ex": request({**GET_ALL, "max_task_entries": integer()}),
    "queues.get_default": request(),
    "queues.update": request({"queue": QUEUE, **QUEUE_FIELDS}, "queue"),
    "queues.delete": request({"queue": QUEUE, "force": boolean()}, "queue"),
    "queues.add_task": request({"queue": QUEUE, "task": TASK, "update_execution_queue": boolean()}, "queue", "task"),
    "queues.remove_task": request({"queue": QUEUE, "task": string(), "update_task_status": boolean()}, "queue", "task"),
    "queues.get_next_task": request({"queue": QUEUE, "task": string(), "get_task_info": boolean()}, "queue"),
    "queues.peek_task": request({"queue": QUEUE}, "queue"),
    "queues.get_num_entries": request({"queue": QUEUE}, "queue"),
    "queues.clear_queue": request({"queue": QUEUE}, "queue"),
    "queues.move_task_forward": QUEUE_MOVE,
    "queues.move_task_backward": QUEUE_MOVE,
    "queues.move_task_to_front": QUEUE_MOVE,
    "queues.move_task_to_back": QUEUE_MOVE,
    "queues.get_queue_metrics": request(
        {
            "queue_ids": strings(),
            "from_date": number(),
            "to_date": number(),
            "interval": integer(),
            "refresh": boolean(),
        }
    ),
    # tasks: the document
    "tasks.create": request(TASK_FIELDS, "name", "type"),
    "tasks.get_by_id": request({"task": TASK}, "task"),
    "tasks.get_all": request(GET_ALL),
    "tasks.get_all_ex": request(GET_ALL),
    "tasks.edit": request({"task": TASK, "force": boolean(), **TASK_FIELDS}, "task"),
    "tasks.update": request(
        {
            "task": TASK,
            "name": string(),
            "tags": strings(),
            "system_tags": strings(),
            "comment": string(),
            "project": string(),
            "output__error": string(),
        },
        "task",
    ),
    "tasks.set_requirements": request({"task": TASK, "requirements": obj()}, "task", "requirements"),
    "tasks.ping": request({"task": TASK}, "task"),
    "tasks.clone": request(
        {
            "task": TASK,
            "new_task_name": string(),
            "new_task_comment": string(),
            "new_task_tags": strings(),
            "new_task_system_tags": strings(),
            "new_task_parent": string(),
            "new_task_project": string(),
            "new_project_name": string(),
            "new_task_hyperparams": HYPERPARAMS,
            "new_task_configuration": CONFIGURATION,
            "new_task_container": CONTAINER,
            "new_task_input_models": array(MODEL_REF),
            "execution_overrides": EXECUTION,
            "validate_references": boolean(),
        },
        "task",
    ),
    # tasks: status changes
    "tasks.started": request(STATUS_CHANGE, "task"),
    "tasks.stopped": request(STATUS_CHANGE, "task"),
    "tasks.failed": request(STATUS_CHANGE, "task"),
    "tasks.completed": request({**STATUS_CHANGE, "publish": boolean()}, "task"),
    "tasks.close": request(STATUS_CHANGE, "task"),
    "tasks.publish": request({**STATUS_CHANGE, "publish_model": boolean()}, "task"),
    "tasks.stop": request(STATUS_CHANGE, "task"),
    "tasks.enqueue": request(
        {
            **STATUS_CHANGE,
            "queue": string(),
            "queue_name": string(),
            "verify_watched_queue": boolean(),
            "update_execution_queue": boolean(),
        },
        "task",
    ),
    "tasks.dequeue": request(
        {**STATUS_CHANGE, "new_status": string(enum=TASK_STATUSES[:-1]), "remove_from_all_queues": boolean()},
        "task",
    ),
    "tasks.reset": request(
        {
            **STATUS_CHANGE,
            "clear_all": boolean(),
            "return_file_urls": boolean(),
            "delete_output_models": boolean(),
            "delete_external_artifacts": boolean(),
        },
        "task",
    ),
    # tasks: parts
    "tasks.get_hyper_params": request({"tasks": array(TASK)}, "tasks"),
    "tasks.edit_hyper_params": request(
        {
            "task": TASK,
            "hyperparams": array(obj(PARAMS_ITEM["properties"], required=("name",))),
            "replace_hyperparams": string(enum=["none", "section", "all"]),
            "force": boolean(),
        },
        "task",
        "hyperparams",
    ),
    "tasks.delete_hyper_params": request(
        {"task": TASK, "hyperparams": array(obj({"section": string(), "name": string()})), "force": boolean()},
        "task",
        "hyperparams",
    ),
    "tasks.get_configurations": request({"tasks": array(TASK), "names": strings()}, "tasks"),
    "tasks.get_configuration_names": request({"tasks": array(TASK)}, "tasks"),
    "tasks.edit_configuration": request(
        {
            "task": TASK,
            "configuration": array(obj(CONFIG_ITEM["properties"], required=("name",))),
            "replace_configuration": boolean(),
            "force": boolean(),
        },
        "task",
        "configuration",
    ),
    "tasks.delete_configuration": request(
        {"task": TASK, "configuration": strings(), "force": boolean()}, "task", "configuration"
    ),
    "tasks.add_or_update_artifacts": request(
        {"task": TASK, "artifacts": array(ARTIFACT), "force": boolean()}, "task", "artifacts"
    ),
    "tasks.delete_artifacts": request(
        {
            "task": TASK,
            "artifacts": array(obj({"key": string(), "mode": string(enum=["input", "output"])}, required=("key",))),
            "force": boolean(),
        },
        "task",
        "artifacts",
    ),
    "tasks.add_or_update_model": request(
        {
            "task": TASK,
            "name": string(),
            "model": string(),
            "type": string(enum=["input", "output"]),
            "iteration": integer(),
        },
        "task",
        "name",
        "model",
        "type",
    ),
    "tasks.edit_runtime": request(
        {"task": TASK, "add_or_update": obj(), "remove": strings(), "force": boolean()}, "task"
    ),
    # events (the handler counts a bad event in a batch as an error instead of failing the batch)
    "events.add": request(EVENT),
    "events.add_batch": request(EVENT),
    "events.get_task_log": request(
        {
            "task": TASK,
            "batch_size": integer(),
            "navigate_earlier": boolean(),
            "from_timestamp": number(),
            "order": string(enum=["asc", "desc"]),
        },
        "task",
    ),
    "events.get_task_events": request(
        {
            "task": TASK,
            "event_type": string(),
            "order": string(enum=["asc", "desc"]),
            "scroll_id": string(),
            "batch_size": integer(),
        },
        "task",
    ),
    "events.scalar_metrics_iter_histogram": request({"task": TASK}, "task"),
    "events.get_scalar_metrics_and_variants": request({"task": TASK}, "task"),
    "events.delete_for_task": request({"task": TASK}, "task"),
    # workers
    "workers.register": request(
        {
            "worker": string(),
            "timeout": integer(0, MAX_SECONDS),
            "queues": array(QUEUE),
            "tags": strings(),
            "system_tags": strings(),
        },
        "worker",
    ),
    "workers.unregister": request({"worker": string()}, "worker"),
    "workers.status_report": request(
        {
            "worker": string(),
            "timestamp": integer(),
            "task": string(),
            "queue": string(),
            "queues": array(QUEUE),
            "machine_stats": obj(),
            "tags": strings(),
            "system_tags": strings(),
        },
        "worker",
    ),
    "workers.get_all": request({"last_seen": seconds(), "tags": strings()}),
    "workers.get_runtime_properties": request({"worker": string()}, "worker"),
    "workers.set_runtime_properties": request(
        {"worker": string(), "runtime_properties": array(obj({"key": string()}, required=("key",)))},
        "worker",
        "runtime_properties",
    ),
}


def request_schema(endpoint: str) -> Schema | None:
    return REQUESTS.get(endpoint)
