"""load_config and config_path: defaults, file, environment, derived hosts, and the errors they raise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from notebook_agent.config import ConfigError, config_path, load_config

from .conftest import ACCESS, SECRET, write

FILE = f"""
api {{
    api_server: "https://api.example.com/"
    credentials {{ "access_key" = "{ACCESS}", "secret_key" = "{SECRET}" }}
}}
agent {{
    worker_name: "box"
    venvs_cache {{ max_entries: 3 }}
    package_manager.type: UV
}}
"""


def test_defaults_without_a_file(home: Path) -> None:
    config = load_config(env={"HOME": str(home)})
    assert config.path is None
    assert config.api.api_server == "" and config.api.credentials is None
    assert not config.api.configured
    assert config.api.verify_certificate is True
    assert config.agent("package_manager.type") == "pip"
    assert config.agent("queue_poll_freq_sec") == 0.25
    assert config.agent("status_report_freq_sec") == 30
    assert config.agent("venvs_cache.max_entries") == 10
    assert config.agent("venvs_cache.free_space_threshold_gb") == 2.0
    assert config.agent("package_manager.uv_replace_pip") is True
    assert config.agent("uptime") == [] and config.agent("downtime") == []
    assert config.agent("suppress_carriage_return") is True
    assert config.agent("crash_on_exception") is False
    assert config.agent("task_ping_interval_sec") == 60


def test_get_missing_key_and_default(home: Path) -> None:
    config = load_config(env={"HOME": str(home)})
    with pytest.raises(KeyError):
        config.get("agent.no_such_key")
    assert config.get("agent.no_such_key", None) is None
    assert config.get("api.api_server.deeper", "d") == "d"  # through a non-section value


def test_file_values(tmp_path: Path) -> None:
    path = write(tmp_path / "clearml.conf", FILE)
    config = load_config(path, env={})
    assert config.path == path
    assert config.api.api_server == "https://api.example.com"  # trailing slash stripped
    assert config.api.credentials is not None
    assert config.api.credentials.access_key == ACCESS and config.api.credentials.secret_key == SECRET
    assert config.api.configured
    assert config.agent("worker_name") == "box"
    assert config.agent("venvs_cache.max_entries") == 3
    assert config.agent("venvs_cache.path") == "~/.notebook_agent/venvs-cache"  # untouched default beside it
    assert config.agent("package_manager.type") == "uv"  # normalized
    assert config.agent("package_manager.system_site_packages") is False


def test_default_path_is_home_clearml_conf(home: Path) -> None:
    write(home / "clearml.conf", FILE)
    config = load_config(env={"HOME": str(home)})
    assert config.path == home / "clearml.conf"
    assert config.agent("worker_name") == "box"


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.conf", FILE)
    env = {
        "CLEARML_API_HOST": "http://10.0.0.1:8008",
        "CLEARML_API_ACCESS_KEY": "ENVKEY",
        "CLEARML_API_SECRET_KEY": "ENVSECRET",
        "CLEARML_WORKER_NAME": "from-env",
        "CLEARML_WORKER_ID": "box:gpu0",
        "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": "2",
        "CLEARML_AGENT_STATUS_REPORT_FREQ_SEC": "5.5",
        "CLEARML_AGENT_VENV_CACHE_PATH": "/cache/venvs",
        "CLEARML_AGENT_GIT_USER": "me",
        "CLEARML_AGENT_GIT_PASS": "pw",
        "CLEARML_API_HOST_VERIFY_CERT": "0",
        "CLEARML_AUTH_TOKEN": "tok",
        "CLEARML_API_DEFAULT_REQ_METHOD": "POST",
        "CLEARML_WORKER_TAGS": "a 'b c'",
        "CLEARML_CPU_ONLY": "yes",
        "CUDA_VERSION": "12.1",
        "CLEARML_AGENT_EXTRA_DOCKER_ARGS": "--ipc=host -e A=1",
    }
    config = load_config(path, env=env)
    assert config.api.api_server == "http://10.0.0.1:8008"
    assert config.api.credentials is not None and config.api.credentials.access_key == "ENVKEY"
    assert config.api.credentials.secret_key == "ENVSECRET"
    assert config.api.verify_certificate is False
    assert config.api.auth_token == "tok"
    assert config.get("api.http.default_method") == "post"
    assert config.agent("worker_name") == "from-env"
    assert config.agent("worker_id") == "box:gpu0"
    assert config.agent("queue_poll_freq_sec") == 2.0
    assert config.agent("status_report_freq_sec") == 5.5
    assert config.agent("venvs_cache.path") == "/cache/venvs"
    assert config.agent("venvs_cache.max_entries") == 3  # the file's value beside it survives
    assert (config.agent("git_user"), config.agent("git_pass")) == ("me", "pw")
    assert config.agent("worker_tags") == ["a", "b c"]
    assert config.agent("cpu_only") is True
    assert config.agent("cuda_version") == "12.1"
    assert config.agent("extra_docker_arguments") == ["--ipc=host", "-e", "A=1"]


def test_env_is_not_mutated(tmp_path: Path) -> None:
    env = {"CLEARML_API_HOST": "https://api.example.com"}
    before_os = dict(os.environ)
    load_config(tmp_path / "missing.conf", env=env)
    assert env == {"CLEARML_API_HOST": "https://api.example.com"}
    assert dict(os.environ) == before_os


def test_trains_names_and_priority(home: Path) -> None:
    env = {
        "HOME": str(home),
        "TRAINS_API_HOST": "https://api.trains.example",
        "TRAINS_API_ACCESS_KEY": "TK",
        "TRAINS_API_SECRET_KEY": "TS",
        "TRAINS_WORKER_NAME": "old",
        "CLEARML_WORKER_NAME": "new",  # CLEARML_* wins over TRAINS_*
        "TRAINS_AGENT_GIT_USER": "olduser",
    }
    config = load_config(env=env)
    assert config.api.api_server == "https://api.trains.example"
    assert config.api.credentials is not None and config.api.credentials.access_key == "TK"
    assert config.agent("worker_name") == "new"
    assert config.agent("git_user") == "olduser"


def test_blank_env_value_counts_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path / "c.conf", FILE)
    config = load_config(path, env={"CLEARML_WORKER_NAME": "  ", "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": ""})
    assert config.agent("worker_name") == "box"
    assert config.agent("queue_poll_freq_sec") == 0.25


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CLEARML_AGENT_FORCE_UV": "1"}, "uv"),
        ({"CLEARML_AGENT_FORCE_POETRY": "true"}, "poetry"),
        ({"CLEARML_AGENT_FORCE_UV": "0"}, "pip"),
        ({"CLEARML_AGENT_FORCE_UV": "1", "CLEARML_AGENT_FORCE_POETRY": "1"}, "uv"),
    ],
)
def test_force_package_manager_flags(home: Path, env: dict[str, str], expected: str) -> None:
    config = load_config(env={"HOME": str(home), **env})
    assert config.agent("package_manager.type") == expected


@pytest.mark.parametrize(
    ("api", "web", "files"),
    [
        ("https://api.clear.ml", "https://app.clear.ml", "https://files.clear.ml"),
        ("http://localhost:8008", "http://localhost:8080", "http://localhost:8081"),
        ("https://demoapi.demo.clear.ml", "https://demoapp.demo.clear.ml", "https://demofiles.demo.clear.ml"),
        ("https://clearml.example.com", "", ""),  # nothing to derive from
    ],
)
def test_derived_web_and_files_hosts(home: Path, api: str, web: str, files: str) -> None:
    config = load_config(env={"HOME": str(home), "CLEARML_API_HOST": api})
    assert (config.api.web_server, config.api.files_server) == (web, files)
    assert config.get("api.web_server") == web  # the tree agrees


def test_explicit_hosts_are_kept(home: Path) -> None:
    env = {
        "HOME": str(home),
        "CLEARML_API_HOST": "https://api.clear.ml",
        "CLEARML_WEB_HOST": "https://web.example/",
        "CLEARML_FILES_HOST": "https://files.example",
    }
    config = load_config(env=env)
    assert (config.api.web_server, config.api.files_server) == (
        "https://web.example",
        "https://files.example",
    )


def test_old_api_host_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.conf", 'api { host: "http://h:8008" }')
    assert load_config(path, env={}).api.api_server == "http://h:8008"


def test_verify_certificate_may_be_a_ca_bundle(tmp_path: Path) -> None:
    path = write(tmp_path / "c.conf", 'api { verify_certificate: "/etc/ssl/ca.pem" }')
    assert load_config(path, env={}).api.verify_certificate == "/etc/ssl/ca.pem"
    path = write(tmp_path / "d.conf", "api { verify_certificate: False }")
    assert load_config(path, env={}).api.verify_certificate is False


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CLEARML_AGENT_QUEUE_POLL_FREQ_SEC", "abc", "number"),
        ("CLEARML_AGENT_STATUS_REPORT_FREQ_SEC", "inf", "number"),
        ("CLEARML_API_HOST_VERIFY_CERT", "maybe", "true or false"),
        ("CLEARML_CPU_ONLY", "sure", "true or false"),
        ("CLEARML_API_DEFAULT_REQ_METHOD", "delete", "get, post, put"),
        ("CLEARML_AGENT_EXTRA_DOCKER_ARGS", "'unclosed", "shell-quoted"),
    ],
)
def test_bad_env_value(home: Path, name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"HOME": str(home), name: value})
    assert info.value.key == name
    assert name in str(info.value) and expected in str(info.value)
    assert info.value.path is None


def test_env_host_without_scheme_is_rejected(home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"HOME": str(home), "CLEARML_API_HOST": "api.example.com"})
    assert info.value.key == "CLEARML_API_HOST"
    assert "api.api_server" in str(info.value)


def test_hocon_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = 'api {\n    api_server: "https://a"\n    credentials { access_key: "A"\n}\n'
    text += "agent {\n    x: [1, 2\n}\n"
    path = write(tmp_path / "bad.conf", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert err.path == str(path) and err.line is not None
    message = str(err)
    assert str(path) in message and f"line {err.line}" in message
    assert "syntax" in message and err.fix


def test_syntax_error_on_a_secret_line_hides_the_secret(tmp_path: Path) -> None:
    text = f'api {{\n  credentials {{\n    secret_key: "{SECRET}" ]\n  }}\n}}\n'
    path = write(tmp_path / "bad.conf", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.line == 3
    assert SECRET not in str(info.value) and SECRET[:10] not in str(info.value)


def test_unclosed_brace_points_inside_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.conf", "api {\n  api_server: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.line in (1, 2)


def test_unresolved_substitution(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.conf", "agent {\n  worker_name: ${nope}\n}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.line == 2 and "${nope}" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "line", "expected"),
    [
        (
            'agent {\n  venvs_cache {\n    max_entries: "ten"\n  }\n}\n',
            "agent.venvs_cache.max_entries",
            3,
            "whole",
        ),
        ("api {\n  web_server: x\n\n  api_server: 5\n}\n", "api.api_server", 4, "URL"),
        ('api { credentials: "x" }\n', "api.credentials", 1, "section"),
        ("agent.package_manager.type: npm\n", "agent.package_manager.type", 1, "pip, conda, poetry or uv"),
        ('agent {\n  uptime: "17-20 SUN"\n}\n', "agent.uptime", 2, "list"),
        ("agent {\n  queue_poll_freq_sec: 0\n}\n", "agent.queue_poll_freq_sec", 2, "above 0"),
        ("agent {\n  worker_name: [1]\n}\n", "agent.worker_name", 2, "string"),
        ('agent: "x"\n', "agent", 1, "section"),
    ],
)
def test_wrong_typed_key(tmp_path: Path, text: str, key: str, line: int, expected: str) -> None:
    path = write(tmp_path / "clearml.conf", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert (err.path, err.key, err.line) == (str(path), key, line)
    assert str(path) in str(err) and key in str(err) and f"line {line}" in str(err)
    assert expected in str(err)


def test_wrong_typed_secret_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path / "c.conf", "api { credentials { secret_key: 987654321987 } }\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == "api.credentials.secret_key"
    assert "987654321987" not in str(info.value)


def test_numeric_strings_are_normalized(tmp_path: Path) -> None:
    path = write(tmp_path / "c.conf", 'agent { venvs_cache.max_entries: "7", queue_poll_freq_sec: "1.5" }')
    config = load_config(path, env={})
    assert config.agent("venvs_cache.max_entries") == 7
    assert config.agent("queue_poll_freq_sec") == 1.5


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder"):
        load_config(tmp_path, env={})


def test_config_path_order(home: Path, tmp_path: Path) -> None:
    env = {"HOME": str(home)}
    assert config_path(env) == home / "clearml.conf"
    write(home / "trains.conf", "")
    assert config_path(env) == home / "trains.conf"  # only while clearml.conf is missing
    write(home / "clearml.conf", "")
    assert config_path(env) == home / "clearml.conf"
    assert config_path({**env, "TRAINS_CONFIG_FILE": "/x/t.conf"}) == Path("/x/t.conf")
    both = {**env, "TRAINS_CONFIG_FILE": "/x/t.conf", "CLEARML_CONFIG_FILE": "~/c.conf"}
    assert config_path(both) == home / "c.conf"


def test_config_file_variable_is_used_by_load_config(home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.conf", FILE)
    config = load_config(env={"HOME": str(home), "CLEARML_CONFIG_FILE": str(path)})
    assert config.path == path and config.agent("worker_name") == "box"


def test_tilde_in_path_uses_home_from_env(home: Path) -> None:
    write(home / "my.conf", FILE)
    config = load_config("~/my.conf", env={"HOME": str(home)})
    assert config.path == home / "my.conf" and config.agent("worker_name") == "box"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "c.conf"
    path.write_bytes(b"agent {\n  worker_name: \xff\xfe\n}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.line == 2 and "UTF-8" in str(info.value)


def test_required_include_that_is_missing(tmp_path: Path) -> None:
    path = write(tmp_path / "c.conf", 'include required("nope.conf")\n')
    with pytest.raises(ConfigError, match="included file"):
        load_config(path, env={})


def test_include_is_relative_to_the_file(tmp_path: Path) -> None:
    write(tmp_path / "part.conf", "agent { worker_name: included }\n")
    path = write(tmp_path / "c.conf", 'include "part.conf"\n')
    assert load_config(path, env={}).agent("worker_name") == "included"


def test_clearml_agents_own_defaults_load_unchanged(tmp_path: Path) -> None:
    # The real agent.conf/api.conf, wrapped the way a clearml.conf holds them, pass our checks as they are.
    agent_pkg = pytest.importorskip("clearml_agent")
    base = Path(agent_pkg.__file__).parent / "backend_api" / "config" / "default"
    text = f"agent {(base / 'agent.conf').read_text()}\napi {(base / 'api.conf').read_text()}\n"
    config = load_config(write(tmp_path / "clearml.conf", text), env={})
    assert config.agent("package_manager.type") == "pip"
    assert config.agent("venvs_cache.max_entries") == 10
    assert config.get("api.http.retries.total") == 240
