"""The panel's Connect and Queues sections: pasting and saving credentials (0600, merge-safe), Test against the
embedded server, the server's queue list and queue creation, the embedded-server choice; secrets stay hidden."""

from __future__ import annotations

import stat

import pytest

from notebook_agent.monitor.nvml import GpuMonitor
from notebook_agent.notebook.agent import Agent
from notebook_agent.notebook.panel import Panel
from notebook_agent.notebook.widgets.connect import FIELD_VARS
from tests.fakes.fake_nvml import FakeNvml
from tests.unit.notebook.test_panel_support import (
    ACCESS,
    API_BLOCK,
    SECRET,
    RecordingAgent,
    install_recording_comm,
    widget_texts,
    write_conf,
)


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch):
    install_recording_comm(monkeypatch)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME: no clearml.conf, and the embedded server's data under tmp."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    for name in FIELD_VARS.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CLEARML_CONFIG_FILE", raising=False)
    return path


@pytest.fixture
def make_panel():
    panels: list[Panel] = []

    def make(agent: Agent, **kwargs) -> Panel:
        kwargs.setdefault("secrets", None)
        panel = Panel(agent, shell=None, gpu_monitor=GpuMonitor(nvml=FakeNvml([])), **kwargs)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.close()
        assert panel.actions.join(30)


def assert_secret_hidden(panel: Panel, secret: str = SECRET) -> None:
    holders = [type(item).__name__ for item, text in widget_texts(panel.widget) if secret in text]
    assert holders in ([], ["Password"]), holders


# -- paste and fields ---------------------------------------------------------------------------------------------


def test_pasting_the_api_block_fills_the_fields_and_empties_the_box(home, make_panel):
    panel = make_panel(RecordingAgent(env={"HOME": str(home)}))
    form = panel.connect
    form.paste.value = API_BLOCK
    assert form.paste.value == ""
    assert form.api_server.value == "http://127.0.0.1:9"
    assert form.web_server.value == "http://127.0.0.1:9/web"
    assert form.access_key.value == ACCESS and form.secret_key.value == SECRET
    assert "AKEY****" in form.message.value and "Test them, then Save" in form.message.value
    assert_secret_hidden(panel)


def test_pasting_env_lines_fills_the_fields(home, make_panel):
    panel = make_panel(RecordingAgent(env={"HOME": str(home)}))
    form = panel.connect
    form.paste.value = (
        "%env CLEARML_API_HOST=https://api.example.com\n"
        f"%env CLEARML_API_ACCESS_KEY={ACCESS}\n"
        f"%env CLEARML_API_SECRET_KEY={SECRET}\n"
    )
    assert form.api_server.value == "https://api.example.com"
    assert form.web_server.value == "https://app.example.com"  # derived, as clearml does
    assert_secret_hidden(panel)


def test_an_incomplete_paste_says_what_is_missing(home, make_panel):
    panel = make_panel(RecordingAgent(env={"HOME": str(home)}))
    panel.connect.paste.value = "api { api_server: http://x:8008 }"
    assert "access_key" in panel.connect.message.value
    assert panel.connect.api_server.value == ""


def test_test_without_keys_is_an_error_in_the_form(home, make_panel):
    panel = make_panel(RecordingAgent(env={"HOME": str(home)}))
    panel.connect.api_server.value = "http://127.0.0.1:9"
    panel.connect.test.click()
    assert "fill in access key, secret key" in panel.connect.message.value


def test_environment_variables_prefill_the_fields(home, make_panel):
    env = {"HOME": str(home), "CLEARML_API_HOST": "http://10.0.0.1:8008", "CLEARML_API_SECRET_KEY": SECRET}
    asked: list[str] = []
    panel = make_panel(RecordingAgent(env=env), secrets=lambda name: asked.append(name) or "from-colab")
    assert panel.connect.api_server.value == "http://10.0.0.1:8008"
    assert panel.connect.secret_key.value == SECRET
    assert panel.connect.access_key.value == "from-colab"  # nothing configured yet: Colab secrets fill the gaps
    assert "CLEARML_API_SECRET_KEY" not in asked
    assert_secret_hidden(panel)


def test_colab_secrets_are_not_read_when_a_server_is_configured(home, make_panel):
    write_conf(home)
    asked: list[str] = []
    make_panel(RecordingAgent(env={"HOME": str(home)}), secrets=lambda name: asked.append(name))
    assert asked == []


# -- save -------------------------------------------------------------------------------------------------------


def server_block(server, access: str | None = None, secret: str | None = None) -> str:
    """The web app's api block for the embedded server (its own keys unless others are given)."""
    access = access or server.credentials.access_key
    secret = secret or server.credentials.secret_key
    return API_BLOCK.replace("http://127.0.0.1:9", server.url).replace(ACCESS, access).replace(SECRET, secret)


def test_save_writes_a_private_clearml_conf_that_the_agent_then_uses(server, home, make_panel):
    agent = RecordingAgent(env={"HOME": str(home)})
    panel = make_panel(agent)
    secret = server.credentials.secret_key
    panel.connect.paste.value = server_block(server)
    panel.connect.save.click()
    conf = home / "clearml.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    text = conf.read_text()
    assert server.credentials.access_key in text and secret in text and "agent {" in text
    assert agent.connected and agent.config.api.api_server == server.url
    assert agent.config.api.credentials.secret_key == secret
    assert "Wrote" in panel.connect.message.value
    assert panel.actions.join(30)  # Save also reads the new server's queues
    assert "default" in panel.controls.available.options, panel.controls.message.value
    panel.refresh()
    assert server.url in panel.connect.status.value and server.url in panel.card.value
    assert_secret_hidden(panel, secret)


def test_save_keeps_the_credentials_already_in_clearml_conf(server, home, make_panel):
    write_conf(home, server_block(server, "OLDKEY000000000000", "old-secret-000000000000"))
    agent = RecordingAgent(env={"HOME": str(home)})
    panel = make_panel(agent)
    panel.connect.paste.value = server_block(server)
    panel.connect.save.click()
    assert "already holds other ClearML credentials" in panel.connect.message.value
    assert server.credentials.secret_key not in (home / "clearml.conf").read_text()
    assert agent.config.api.credentials.access_key == "OLDKEY000000000000"


# -- against the embedded server ------------------------------------------------------------------------------------


def server_agent(server, home) -> RecordingAgent:
    creds = server.credentials
    write_conf(
        home,
        f'api {{ api_server: "{server.url}", web_server: "{server.url}", files_server: "{server.url}"\n'
        f'  credentials {{ "access_key" = "{creds.access_key}", "secret_key" = "{creds.secret_key}" }} }}\n',
    )
    return RecordingAgent(env={"HOME": str(home)})


def test_test_logs_in_with_the_right_keys_and_reports_wrong_ones(server, home, make_panel):
    panel = make_panel(RecordingAgent(env={"HOME": str(home)}))
    form = panel.connect
    form.api_server.value = server.url
    form.access_key.value = server.credentials.access_key
    form.secret_key.value = server.credentials.secret_key
    form.test.click()
    assert panel.actions.join(30)
    assert "OK: logged in" in form.message.value and "Nothing is saved" in form.message.value
    assert not (home / "clearml.conf").exists()
    form.secret_key.value = "wrong-secret-0000000000"
    form.test.click()
    assert panel.actions.join(30)
    assert "refused these credentials" in form.message.value
    assert_secret_hidden(panel, server.credentials.secret_key)


def test_the_queue_list_comes_from_the_server_and_create_adds_one(server, raw, home, make_panel):
    raw.ok("queues.create", {"name": "gpu-a100"})
    panel = make_panel(server_agent(server, home))
    controls = panel.controls
    controls.refresh.click()
    assert panel.actions.join(30)
    assert {"default", "gpu-a100"} <= set(controls.available.options), controls.message.value
    controls.new_queue.value = "my-new-queue"
    controls.create.click()
    assert panel.actions.join(30)
    assert "created queue my-new-queue" in controls.message.value
    assert "my-new-queue" in controls.available.options and "my-new-queue" in controls.chosen.options
    names = [q["name"] for q in raw.ok("queues.get_all", {})["queues"]]
    assert "my-new-queue" in names
    controls.new_queue.value = "my-new-queue"
    controls.create.click()
    assert panel.actions.join(30)
    assert "exists already" in controls.message.value


def test_use_embedded_server_connects_the_agent_to_it(home, make_panel):
    agent = RecordingAgent(env={"HOME": str(home)})
    panel = make_panel(agent)
    try:
        panel.connect.embedded.click()
        assert panel.actions.join(60)
        assert agent.embedded and agent.connected, panel.connect.message.value
        assert "embedded server" in panel.connect.message.value
        panel.refresh()
        assert "embedded server" in panel.connect.status.value and "(embedded)" in panel.card.value
        assert agent.config.api.api_server.startswith("http://127.0.0.1:")
    finally:
        agent.close()
