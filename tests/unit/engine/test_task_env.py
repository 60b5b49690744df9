"""The task process environment: what clearml-agent sets, a 0600 config, nothing of the kernel's."""

import os
import stat

import pyhocon

from notebook_agent.config import ApiConfig, Credentials
from notebook_agent.engine.task_env import task_environment, write_task_config

API = ApiConfig(
    "http://127.0.0.1:8008", "http://127.0.0.1:8080", "http://127.0.0.1:8081", Credentials("AK", "SK-secret")
)


def test_variables_the_sdk_needs_to_attach(tmp_path):
    conf = write_task_config(tmp_path / "clearml.conf", API)
    base = {"PATH": "/bin", "JPY_PARENT_PID": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    env = task_environment(base, task_id="t" * 32, worker_id="box:cpu:0", api=API, config_file=conf, visible_devices="")
    assert env["CLEARML_TASK_ID"] == env["TRAINS_TASK_ID"] == "t" * 32
    assert env["CLEARML_WORKER_ID"] == "box:cpu:0"
    assert env["CLEARML_LOG_TASK_TO_BACKEND"] == "0"
    assert env["CLEARML_API_HOST"] == "http://127.0.0.1:8008"
    assert env["CLEARML_API_SECRET_KEY"] == "SK-secret"
    assert env["CLEARML_CONFIG_FILE"] == str(conf)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["NVIDIA_VISIBLE_DEVICES"] == "none"
    assert env["PYTHONUNBUFFERED"] == "1" and env["PATH"] == "/bin"
    assert "JPY_PARENT_PID" not in env and "MPLBACKEND" not in env
    assert "CLEARML_TASK_ID" not in os.environ  # the agent's own environment is untouched
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    tree = pyhocon.ConfigFactory.parse_file(str(conf))
    assert tree["api.credentials.secret_key"] == "SK-secret"


def test_gpu_selection_and_no_selection(tmp_path):
    conf = write_task_config(tmp_path / "c.conf", API)
    env = task_environment({"CUDA_VISIBLE_DEVICES": "3"}, task_id="t", worker_id="w", api=API, config_file=conf)
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    env = task_environment({}, task_id="t", worker_id="w", api=API, config_file=conf, visible_devices="0,1")
    assert env["CUDA_VISIBLE_DEVICES"] == env["NVIDIA_VISIBLE_DEVICES"] == "0,1"
