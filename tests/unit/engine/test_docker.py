"""Docker mode's command building (engine/docker.py) and the files a launch writes (engine/docker_launch.py)."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest

from notebook_agent import __version__
from notebook_agent.config import load_config
from notebook_agent.engine import docker, docker_launch
from notebook_agent.engine.docker import DockerSettings

WHEEL = Path(f"/w/notebook_agent-{__version__}-py3-none-any.whl")
WHEEL_IN = f"/tmp/{WHEEL.name}"
CONF = Path("/w/container.clearml.conf")


def config(tmp_path: Path, agent: str = "", env: dict[str, str] | None = None):
    conf = tmp_path / "clearml.conf"
    conf.write_text(
        'api { api_server: "https://api.example.com", credentials { access_key: "AK", secret_key: "SECRET-SK" } }\n'
        f"agent {{ {agent} }}\n"
    )
    return load_config(conf, env=env or {})


def settings_for(tmp_path: Path, agent: str = "", cli: list[str] | None = None, **env: str) -> DockerSettings:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return docker.docker_settings(config(tmp_path, agent), cli or [], env={"HOME": str(home), **env})


def run_argv(task: dict, settings: DockerSettings, **kwargs) -> list[str]:
    options = dict(
        worker_id="host:gpu0,1",
        gpus="0,1",
        env={},
        inner_command=None,
        conf_file=CONF,
        wheel=WHEEL,
        name="box",
        api_server="https://api.example.com",
    )
    options.update(kwargs)
    return docker.docker_run_command(task, settings, **options)


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


TASK = {
    "id": "t1",
    "container": {"image": "python:3.11", "arguments": "--ipc=host -e FROM_TASK=1", "setup_shell_script": "echo hi"},
}


class TestRunCommand:
    def test_a_task_with_image_gpus_env_and_mounts(self, tmp_path):
        settings = settings_for(tmp_path, 'venvs_cache { path: "/c/venvs" }, vcs_cache { path: "/c/vcs" }')
        home = tmp_path / "home"
        argv = run_argv(TASK, settings, env={"EXTRA": "1"})
        script = argv[-1]
        assert argv[:-1] == [
            "docker", "run", "-t",
            "--gpus", '"device=0,1"',
            "--ipc=host", "-e", "FROM_TASK=1",
            "-l", "clearml-worker-id=host:gpu0,1", "-l", "clearml-parent-worker-id=host:gpu0,1",
            "-e", "CLEARML_WORKER_ID=host:gpu0,1", "-e", "CLEARML_DOCKER_IMAGE=python:3.11", "-e", "CLEARML_TASK_ID=t1",
            "-e", "EXTRA=1",
            "--name", "box",
            "-v", f"{CONF}:/tmp/clearml.conf", "-e", "CLEARML_CONFIG_FILE=/tmp/clearml.conf",
            "-v", f"{home}/.clearml/apt-cache:/var/cache/apt/archives",
            "-v", f"{home}/.clearml/pip-cache:/root/.cache/pip",
            "-v", f"{home}/.clearml/pip-download-cache:/root/.clearml/pip-download-cache",
            "-v", f"{home}/.clearml/cache:/clearml_agent_cache",
            "-v", "/c/vcs:/root/.clearml/vcs-cache",
            "-v", f"/c/venvs/{docker.image_folder('python:3.11')}:/root/.clearml/venvs-cache",
            "-v", f"{WHEEL}:{WHEEL_IN}:ro",
            "--rm",
            "python:3.11", "bash", "-c",
        ]  # fmt: skip
        parts = script.split(" ; ")
        agent = "NVIDIA_VISIBLE_DEVICES=all $LOCAL_PYTHON -u -m notebook_agent execute --disable-monitoring --id t1"
        assert parts[-1] == agent
        assert parts[-2] == "echo hi"  # the task's setup script, just before the agent
        assert any(p.endswith(f"-m pip install -q {WHEEL_IN}") and f'!= "{__version__}"' in p for p in parts)
        assert "cp -Rf" not in script  # no ~/.ssh here (HOME has none), no git credentials

    @pytest.mark.parametrize(
        ("gpus", "env", "expected", "inside"),
        [
            ("0,1", {}, ["--gpus", '"device=0,1"'], "all"),
            ("0.1", {}, ["--gpus", '"device=0:1"'], "all"),  # a MIG slice
            (None, {}, ["--gpus", "all"], "all"),
            ("all", {}, ["--gpus", "all"], "all"),
            ("", {}, [], "none"),  # --cpu-only
            (None, {"NVIDIA_VISIBLE_DEVICES": "none"}, [], "none"),
            (None, {"NVIDIA_VISIBLE_DEVICES": "2"}, ["--gpus", '"device=2"'], "all"),
        ],
    )
    def test_gpus_as_clearml_agent_passes_them(self, tmp_path, gpus, env, expected, inside):
        assert docker.gpu_arguments(gpus, env) == (expected, inside)
        argv = run_argv(TASK, settings_for(tmp_path), gpus=gpus, host_env=env)
        assert argv[3 : 3 + len(expected)] == expected
        assert argv[-1].endswith(f"NVIDIA_VISIBLE_DEVICES={inside} $LOCAL_PYTHON -u -m notebook_agent execute "
                                 "--disable-monitoring --id t1")  # fmt: skip

    def test_secrets_go_as_bare_names_with_the_value_in_the_client_environment(self, tmp_path):
        env = {"CLEARML_AUTH_TOKEN": "tok-123", "PLAIN": "x"}
        argv = run_argv(TASK, settings_for(tmp_path), env=env)
        assert "CLEARML_AUTH_TOKEN" in pairs(argv, "-e") and "PLAIN=x" in pairs(argv, "-e")
        assert not any("tok-123" in a or "SECRET-SK" in a for a in argv)
        client = docker.docker_client_env({"PATH": "/bin"}, env)
        assert client == {"PATH": "/bin", "CLEARML_AUTH_TOKEN": "tok-123"}

    def test_ssh_folder_read_only_or_the_agent_socket(self, tmp_path):
        home = tmp_path / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".git-credentials").write_text("https://u:p@host\n")
        argv = run_argv(TASK, settings_for(tmp_path))
        assert f"{home}/.ssh:/root/.ssh_ro:ro" in pairs(argv, "-v")
        assert f"{home}/.git-credentials:/root/.ssh_ro.git/.git-credentials" in pairs(argv, "-v")
        assert "cp -Rf /root/.ssh_ro -T /root/.ssh" in argv[-1] and "cp -Rf /root/.ssh_ro.git -T ~/" in argv[-1]

        with_sock = run_argv(TASK, settings_for(tmp_path, SSH_AUTH_SOCK="/tmp/agent.sock"))
        assert "/tmp/agent.sock:/tmp/agent.sock" in pairs(with_sock, "-v")
        assert "SSH_AUTH_SOCK=/tmp/agent.sock" in pairs(with_sock, "-e")
        assert not any(v.endswith(":/root/.ssh_ro:ro") for v in pairs(with_sock, "-v"))
        disabled = run_argv(TASK, settings_for(tmp_path, "disable_ssh_mount: true"))
        assert not any(".ssh_ro:ro" in v for v in pairs(disabled, "-v"))

    def test_extra_arguments_first_and_protected_switches_win(self, tmp_path):
        settings = settings_for(tmp_path, 'extra_docker_arguments: ["--network", "bridge", "--shm-size=2g"]')
        task = {"id": "t1", "container": {"image": "img", "arguments": "--network host --ipc=host --entrypoint sh"}}
        argv = run_argv(task, settings)
        assert argv[5:10] == ["--network", "bridge", "--shm-size=2g", "--ipc=host", "-l"]

    def test_a_loopback_server_gets_the_host_network(self, tmp_path):
        argv = run_argv(TASK, settings_for(tmp_path), api_server="http://127.0.0.1:8008")
        assert argv[5:10] == ["--ipc=host", "-e", "FROM_TASK=1", "--network", "host"]
        chosen = {"id": "t1", "container": {"image": "img", "arguments": ["--net=mine"]}}
        assert pairs(run_argv(chosen, settings_for(tmp_path), api_server="http://localhost:8008"), "--network") == []

    def test_worker_tags_and_extra_shell_script(self, tmp_path):
        settings = settings_for(tmp_path, 'worker_tags: ["a b", "c"], extra_docker_shell_script: ["ls /", "id"]')
        argv = run_argv(TASK, settings)
        assert "CLEARML_WORKER_TAGS='a b' c" in pairs(argv, "-e")
        assert argv[-1].split(" ; ")[-4:-1] == ["ls /", "id", "echo hi"]

    def test_build_has_no_rm_and_no_venv_cache_mount(self, tmp_path):
        argv = run_argv(TASK, settings_for(tmp_path), build=True, inner_command=docker.build_command("t1"))
        assert "--rm" not in argv
        assert not any(v.endswith(":/root/.clearml/venvs-cache") for v in pairs(argv, "-v"))
        assert argv[-1].split(" ; ")[-1] == "$LOCAL_PYTHON -u -m notebook_agent build --id t1 --in-image"


class TestContainerChoice:
    def test_task_image_wins_with_its_own_arguments_only(self, tmp_path):
        settings = settings_for(tmp_path, 'default_docker { image: "base:1", arguments: ["--ipc=host"] }')
        assert docker.task_container({"container": {"image": "mine:2"}}, settings) == docker.Container(
            "mine:2", (), "", True
        )
        assert docker.task_container({}, settings) == docker.Container("base:1", ("--ipc=host",), "", False)

    def test_old_tasks_use_execution_docker_cmd(self, tmp_path):
        task = {"execution": {"docker_cmd": "old:1 --privileged -e A=1"}}
        chosen = docker.task_container(task, settings_for(tmp_path))
        assert (chosen.image, chosen.arguments) == ("old:1", ("--privileged", "-e", "A=1"))
        newer = {"execution": {"docker_cmd": "old:1"}, "container": {"image": "new:2"}}
        assert docker.task_container(newer, settings_for(tmp_path)).image == "new:2"

    def test_disable_task_docker_override(self, tmp_path):
        settings = settings_for(tmp_path, "disable_task_docker_override: true", cli=["forced:1"])
        assert docker.task_container(TASK, settings).image == "forced:1"

    def test_command_line_image_over_config_and_environment(self, tmp_path):
        agent = 'default_docker { image: "base:1", arguments: ["--ipc=host"] }'
        assert settings_for(tmp_path, agent, cli=["cli:1"]).image == "cli:1"
        assert settings_for(tmp_path, agent, cli=["cli:1"]).arguments == ("--ipc=host",)  # kept with an image alone
        assert settings_for(tmp_path, agent, cli=["cli:1", "--shm-size=1g"]).arguments == ("--shm-size=1g",)
        assert settings_for(tmp_path, agent, cli=["cli:1 -e A=1"]).arguments == ("-e", "A=1")
        from_env = docker.docker_settings(config(tmp_path, agent, env={"CLEARML_DOCKER_IMAGE": "env:1"}), [], env={})
        assert from_env.image == "env:1"
        assert settings_for(tmp_path).image == docker.DEFAULT_IMAGE


class TestContainerConfig:
    def test_paths_inside_the_container_and_the_credentials_kept(self, tmp_path):
        settings = settings_for(tmp_path, 'python_binary: "/usr/bin/python3.9", vcs_cache { path: "/c/vcs" }')
        tree = docker.container_config(settings)
        agent = tree["agent"]
        assert agent["vcs_cache"]["path"] == "/root/.clearml/vcs-cache"
        assert agent["venvs_cache"]["path"] == "/root/.clearml/venvs-cache"
        assert agent["pip_download_cache"]["path"] == "/root/.clearml/pip-download-cache"
        assert agent["python_binary"] == "" and agent["package_manager"]["system_site_packages"] is True
        assert tree["api"]["credentials"]["secret_key"] == "SECRET-SK"  # only in the 0600 mounted file
        built = docker.container_config(settings, build=True)["agent"]["venvs_cache"]
        assert built["path"] == "~/.notebook_agent/venvs-cache" and built["store"] == "folder"
        assert "SECRET-SK" not in repr(settings)

    def test_disabled_caches_stay_disabled(self, tmp_path):
        settings = settings_for(tmp_path, 'vcs_cache { enabled: false }, venvs_cache { path: "" }')
        agent = docker.container_config(settings)["agent"]
        assert agent["vcs_cache"]["enabled"] is False and agent["venvs_cache"]["path"] == ""
        assert settings.vcs_cache is None and settings.venvs_cache is None


class TestOtherCommands:
    def test_commit_entry_points(self):
        settings = DockerSettings()
        reuse = docker.commit_command(settings, "box", "me/img:1", "t1", "reuse_task")
        assert reuse == ["docker", "commit", '--change=ENTRYPOINT ["notebook-agent", "execute", "--id", "t1"]', "box",
                         "me/img:1"]  # fmt: skip
        clone = docker.commit_command(settings, "box", "img", "t1", "clone_task")
        assert json.loads(clone[2].split("ENTRYPOINT ", 1)[1])[-1] == "--clone"
        assert docker.commit_command(settings, "box", "img", "t1", None)[2] == "--change=ENTRYPOINT []"

    def test_stop_pull_and_names(self):
        settings = DockerSettings()
        assert docker.stop_command(settings, "box", 10.0) == ["docker", "stop", "-t", "10", "box"]
        assert docker.pull_command(settings, "img") == ["docker", "pull", "img"]
        assert docker.container_name("host:gpu0,1", "abc") == "notebook-agent.host-gpu0-1.abc"


class TestLaunch:
    def test_files_written_and_force_pull(self, tmp_path):
        settings = settings_for(tmp_path, "docker_force_pull: true")
        launch = docker_launch.prepare_launch(
            TASK,
            settings,
            work_dir=tmp_path / "work",
            worker_id="w:0",
            gpus=None,
            api_server="https://api.example.com",
            base_env={"PATH": "/bin"},
            env={"CLEARML_AUTH_TOKEN": "tok"},
        )
        conf = tmp_path / "work" / "container.clearml.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert json.loads(conf.read_text())["api"]["credentials"]["secret_key"] == "SECRET-SK"
        assert not any("SECRET-SK" in a or a.split("=")[-1] == "tok" for a in launch.argv)
        assert launch.env == {"PATH": "/bin", "CLEARML_AUTH_TOKEN": "tok"}
        assert launch.pull == ["docker", "pull", "python:3.11"]
        assert launch.stop == ["docker", "stop", "-t", "10", "notebook-agent.w-0.t1"]
        assert (tmp_path / "home" / ".clearml" / "vcs-cache").is_dir()  # host cache folders exist before the mount

    def test_agent_wheel_holds_the_package_and_its_entry_point(self, tmp_path):
        wheel = docker_launch.agent_wheel(tmp_path)
        assert wheel.name == f"notebook_agent-{__version__}-py3-none-any.whl"
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            info = f"notebook_agent-{__version__}.dist-info"
            assert {"notebook_agent/__init__.py", "notebook_agent/engine/docker.py", f"{info}/RECORD"} <= names
            assert "notebook-agent = notebook_agent.cli.main:main" in archive.read(f"{info}/entry_points.txt").decode()
            assert f"Version: {__version__}" in archive.read(f"{info}/METADATA").decode()
            assert not any("__pycache__" in n for n in names)
