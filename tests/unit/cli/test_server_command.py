"""`notebook-agent server` runs the embedded server in the foreground and prints where it listens."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys

import pyhocon
import requests


def test_server_command_prints_url_writes_conf_and_stops_on_sigterm(tmp_path):
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "notebook_agent", "server", "--data-dir", str(data_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("notebook-agent server listening on http://127.0.0.1:"), first
        url = first.rsplit(" ", 1)[1]
        conf_file = data_dir / "clearml.conf"
        assert stat.S_IMODE(os.stat(conf_file).st_mode) == 0o600
        conf = pyhocon.ConfigFactory.parse_file(str(conf_file))
        assert conf["api.api_server"] == url
        key, secret = conf["api.credentials.access_key"], conf["api.credentials.secret_key"]
        reply = requests.get(url + "/auth.login", auth=(key, secret), timeout=10)
        assert reply.status_code == 200 and reply.json()["data"]["token"]
        assert requests.get(url + "/debug.ping", timeout=10).json()["data"]["msg"] == "ClearML server"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert secret not in out + err


def test_server_command_rejects_half_a_key_pair(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "notebook_agent", "server", "--data-dir", str(tmp_path), "--access-key", "ONLYKEY"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--secret-key" in done.stderr


def test_a_broken_clearml_conf_is_a_clear_error(tmp_path):
    conf = tmp_path / "clearml.conf"
    conf.write_text("api {\n  api_server: http://127.0.0.1:1\n  credentials { access_key: \n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CLEARML_CONFIG_FILE": str(conf)}
    done = subprocess.run(
        [sys.executable, "-m", "notebook_agent", "submit", "--script", str(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert str(conf) in done.stderr and "line" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_named_with_a_free_one_to_pass(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "notebook_agent", "server", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr, done.stderr
    suggested = int(done.stderr.split("pass --port ", 1)[1].split(",", 1)[0])
    assert suggested != port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", suggested))  # it was free when suggested, and still is


def test_help_is_for_users_with_examples():
    main = subprocess.run(
        [sys.executable, "-m", "notebook_agent", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "Entry point of" not in main and "parses arguments" not in main
    assert "ClearML-compatible execution agent" in main and "examples:" in main
    for command in ("daemon", "execute", "build", "submit", "server", "demo"):
        assert f"\n    {command} " in main, command
        text = subprocess.run(
            [sys.executable, "-m", "notebook_agent", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        description = text.split("\n\n", 2)[1]  # after the usage block
        assert not description.startswith("options:") and len(description) > 60, (command, text)
