"""The task process environment: what clearml-agent sets, a 0600 config, nothing of the kernel's."""

import os
import stat
import subprocess
import sys

import pyhocon

from notebook_agent.config import ApiConfig, Credentials, load_config
from notebook_agent.engine.task_env import task_config_sections, task_environment, write_task_config

API = ApiConfig(
    "http://127.0.0.1:8008", "http://127.0.0.1:8080", "http://127.0.0.1:8081", Credentials("AK", "SK-secret")
)


def test_variables_the_sdk_needs_to_attach(tmp_path):
    conf = write_task_config(tmp_path / "clearml.conf", API)
    base = {"PATH": "/bin", "JPY_PARENT_PID": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    base["CLEARML_PROC_MASTER_ID"] = "4242:" + "k" * 32  # the kernel ran Task.init
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
    # The task's SDK names itself the main process, as under clearml-agent (which execs the task in its own place).
    assert "CLEARML_PROC_MASTER_ID" not in env and "TRAINS_PROC_MASTER_ID" not in env
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


def test_task_config_carries_the_sdk_section_but_not_the_agents(tmp_path):
    """As clearml-agent's temp config: the task's SDK sees the user's sdk settings (storage keys, output_uri) and api
    options; the server and keys are the agent's effective ones; the agent section (git password) stays out."""
    conf = tmp_path / "clearml.conf"
    conf.write_text(
        'api { api_server: "http://old:8008", verify_certificate: false, credentials { access_key: "OLD" } }\n'
        'sdk { aws { s3 { key: "S3KEY", secret: "S3SECRET" } }, development { default_output_uri: "s3://b/x" } }\n'
        'agent { git_user: "me", git_pass: "GITPASS" }\n'
        '"dotted.key": 1\n'
    )
    sections = task_config_sections(load_config(conf, env={}).tree)
    written = write_task_config(tmp_path / "task.conf", API, sections)
    tree = pyhocon.ConfigFactory.parse_file(str(written))
    assert tree["sdk.aws.s3.secret"] == "S3SECRET"
    assert tree["sdk.development.default_output_uri"] == "s3://b/x"
    assert tree["api.verify_certificate"] is False
    assert tree["api.api_server"] == "http://127.0.0.1:8008"
    assert tree["api.credentials.access_key"] == "AK"
    assert "agent" not in tree and "GITPASS" not in written.read_text()
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o600
    # The real SDK reads it so too.
    code = (
        "from clearml.config import config_obj\n"
        "print(config_obj.get('sdk.aws.s3.key'), config_obj.get('api.verify_certificate'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "CLEARML_CONFIG_FILE": str(written), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["S3KEY", "False"], done.stderr
