"""Built-in defaults as HOCON text: the `api {}` and `agent {}` keys of clearml-agent 3.0.3 (non-docker).

Key names are exactly clearml-agent's (backend_api/config/default/agent.conf and api.conf) so that an existing
clearml.conf works unchanged; values are its defaults unless a comment says why ours differ.
"""

from __future__ import annotations

import copy
from functools import lru_cache

from pyhocon import ConfigFactory, ConfigTree

DEFAULTS_HOCON = """
api {
    # No default server: like clearml-agent (CLEARML_NO_DEFAULT_SERVER=1), never the demo server.
    api_server: ""
    web_server: ""
    files_server: ""
    credentials {
        access_key: ""
        secret_key: ""
    }
    verify_certificate: true
}

agent {
    worker_id: ""
    worker_name: ""

    # clearml-agent leaves these commented out; "" means the same (no git credentials, any host).
    git_user: ""
    git_pass: ""
    git_host: ""
    force_git_ssh_protocol: false
    git_fetch_args: ["--all", "--tags", "--recurse-submodules"]
    translate_ssh: true

    python_binary: ""
    ignore_requested_python_version: false

    package_manager {
        # pip, conda, poetry or uv
        type: pip
        pip_version: [
            "<20.2 ; python_version < '3.10'",
            "<22.3 ; python_version >= '3.10' and python_version <= '3.11'",
            ">=23,<26 ; python_version >= '3.12'",
        ]
        system_site_packages: false
        extra_index_url: []
        force_repo_requirements_txt: false
        force_original_requirements: false
        conda_channels: ["pytorch", "conda-forge", "nvidia", "defaults"]
        # Ours: where conda mode keeps downloaded and extracted packages (environments link to them).
        conda_pkgs_dir: "~/.notebook_agent/conda-pkgs"
        torch_nightly: false
        # "" installs the latest version (clearml-agent leaves both commented out).
        poetry_version: ""
        uv_version: ""
        # clearml-agent defaults to false; we let uv stand in for pip when there is no lock file, which is
        # what its bootstrap mode does too (it sets uv_replace_pip when it selects uv).
        uv_replace_pip: true
        uv_sync_extra_args: []
        uv_files_from_repo_working_dir: false
        poetry_files_from_repo_working_dir: false
    }

    venvs_dir: "~/.clearml/venvs-builds"
    venvs_cache {
        max_entries: 10
        # Free disk space needed to add a cache entry; 0 or negative disables the check.
        free_space_threshold_gb: 2.0
        # "" disables the venv cache. Not clearml-agent's ~/.clearml/venvs-cache: the layouts differ, and each
        # agent's eviction would delete the other's entries.
        path: "~/.notebook_agent/venvs-cache"
        # Ours: "archive" keeps one archive per entry in `path` (a mounted Google Drive: many small files there are
        # slow and get corrupted) and unpacks it to `local_path` on use; "auto" does so on network filesystems
        # and under /content/drive; "folder" never.
        store: auto
        local_path: "~/.notebook_agent/venvs-local"
    }
    vcs_cache {
        enabled: true
        path: "~/.clearml/vcs-cache"
    }
    pip_download_cache {
        enabled: true
        path: "~/.clearml/pip-download-cache"
    }

    reload_config: false
    enable_task_env: false
    apply_environment: true
    # Use only one of uptime/downtime, e.g. uptime: ["17-20 SUN,TUE"].
    uptime: []
    downtime: []
    abort_callback_max_timeout: 1800
    task_ping_interval_sec: 60
    custom_build_script: ""
    # "" means detect from the driver (CUDA_VERSION / CUDNN_VERSION override).
    cuda_version: ""
    cudnn_version: ""
    suppress_carriage_return: true
    crash_on_exception: false

    # Docker mode (--docker, engine/docker.py): the image of a task without container.image, and what every
    # container gets.
    default_docker {
        image: "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu20.04"
        arguments: []
    }
    extra_docker_arguments: []
    docker_force_pull: false
    # Commands run in the container before the agent, e.g. ["apt-get install -y libgl1"].
    extra_docker_shell_script: []
    docker_pip_cache: "~/.clearml/pip-cache"
    docker_apt_cache: "~/.clearml/apt-cache"
    # true: ~/.ssh is not mounted into containers (SSH_AUTH_SOCK, when set, is mounted instead of it anyway).
    disable_ssh_mount: false
    # true: the default image even for tasks that name their own container.image.
    disable_task_docker_override: false

    resource_monitoring {
        default_gpu_utilization: 100
        # "" means the home folder.
        disk_use_path: ""
        cluster_report_interval_sec: 60
    }

    # Our names for settings that clearml-agent reads only from the environment (see env.py); having them
    # here lets clearml.conf set them too and gives every consumer a default.
    # CLEARML_AGENT_QUEUE_POLL_FREQ_SEC: we poll faster than clearml-agent's 5 s (a kernel waits on it).
    queue_poll_freq_sec: 0.25
    # CLEARML_AGENT_STATUS_REPORT_FREQ_SEC: same as clearml-agent.
    status_report_freq_sec: 30
    # Ours: the `timeout` the worker registers with: the server drops a worker silent for this long, and ours
    # then gives a task that worker popped but never started back to its queue. 600 is the server's default.
    worker_registration_timeout_sec: 600
    # Ours: how long the CLI's calls to the server retry (connection errors, timeouts, 5xx) before it gives up and
    # says why: short, so an interactive start names an unreachable server in seconds (clearml-agent retries 240
    # times); a running worker goes on retrying after each give-up, so longer outages do not end it.
    api_retry_total_sec: 12
    worker_tags: []
    cpu_only: false
    # Ours (clearml-agent#71): pull a task only while each of the agent's GPUs (--gpus; every GPU when none is
    # given) has at least this much free memory, in GiB; 0 is off. On Colab the notebook shares the task's GPU.
    # --gpu-min-free-gb overrides it.
    gpu_min_free_memory_gb: 0
    # "" (off), true, or the python binary to use instead of building a venv.
    skip_pip_venv_install: ""
    skip_python_env_install: false
    extra_python_path: ""
    exec_user: ""
    abort_callback_cmd: ""
    propagate_exitcode: false
    temp_stdout_file_dir: ""
    force_task_init: false

    # Ours: what the notebook agent does with a running task when the notebook shuts down (`%unload_ext`, the
    # kernel exiting): "abort" it (reported stopped), or "drain" (wait up to drain_timeout_sec, then abort).
    notebook {
        shutdown: abort
        drain_timeout_sec: 60
    }

    # Ours: log lines that cannot reach the server (an outage) wait in <state_dir>/spool/<task_id>.jsonl and are
    # sent, in order and each once, when it is back. At most max_bytes per task on disk; beyond it the task's
    # writes block until the spool drains (no line is ever dropped).
    log_spool {
        max_bytes: 268435456
    }
}
"""


@lru_cache(maxsize=1)
def _parsed() -> ConfigTree:
    return ConfigFactory.parse_string(DEFAULTS_HOCON)


def default_tree() -> ConfigTree:
    """A fresh copy of the defaults, safe to merge into and modify."""
    # Deep: ConfigTree.copy() is shallow and the nested sections would be shared with the cached parse.
    return copy.deepcopy(_parsed())
