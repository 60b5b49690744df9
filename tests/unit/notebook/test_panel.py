"""The panel's widgets driven through the widget API (clicks, values) with events fed into the agent's state:
worker card, task tabs and logs, controls, machine stats, the refresh thread and comm traffic."""

from __future__ import annotations

import html
import threading

import pytest
from IPython.core.events import EventManager, available_events

from notebook_agent.engine.events import (
    EnvBuildStep,
    TaskLogLines,
    TaskPhase,
    TaskPhaseChanged,
    TaskPulled,
    WorkerState,
    WorkerStateChanged,
)
from notebook_agent.monitor.nvml import GpuMonitor
from notebook_agent.notebook import panel as panel_module
from notebook_agent.notebook.agent import Agent, AgentError
from notebook_agent.notebook.panel import BUSY_HINT, CONNECT, HINT, QUEUES, Panel
from notebook_agent.notebook.widgets.common import close_all
from notebook_agent.notebook.widgets.tasks import LOG_LINES, MAX_TABS
from tests.fakes.fake_nvml import FakeGpu, FakeNvml
from tests.unit.notebook.test_panel_support import (
    RecordingAgent,
    configured_agent,
    install_recording_comm,
    updates_sent,
    wait_for,
)


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch):
    install_recording_comm(monkeypatch)


@pytest.fixture
def agent(tmp_path):
    return configured_agent(tmp_path)


@pytest.fixture
def make_panel():
    panels: list[Panel] = []

    def make(agent: Agent, **kwargs) -> Panel:
        kwargs.setdefault("secrets", None)
        kwargs.setdefault("shell", None)
        kwargs.setdefault("gpu_monitor", GpuMonitor(nvml=FakeNvml([])))
        panel = Panel(agent, **kwargs)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.close()


def pull(agent: Agent, task_id: str, name: str = "train", at: float = 1000.0, queue: str = "default") -> None:
    agent.state.apply(TaskPulled(task_id, "qid", queue, name, time=at))


# -- worker card and sections -------------------------------------------------------------------------------------


def test_an_agent_not_started_shows_offline_with_start_enabled(agent, make_panel):
    panel = make_panel(agent)
    assert "offline" in panel.card.value and "not started" in panel.card.value
    assert "127.0.0.1:9" in panel.card.value
    controls = panel.controls
    assert not controls.start.disabled
    assert controls.stop.disabled and controls.drain.disabled and controls.pause.disabled
    assert panel.sections.selected_index == QUEUES
    assert panel.hint.value.count(html.escape(HINT)) == 1


def test_without_a_server_the_connect_section_opens_with_a_hint(tmp_path, make_panel):
    home = tmp_path / "empty-home"
    home.mkdir()
    agent = RecordingAgent(env={"HOME": str(home)})
    panel = make_panel(agent)
    assert panel.sections.selected_index == CONNECT
    assert "No ClearML server is configured" in panel.connect.status.value
    assert "no ClearML server configured" in panel.card.value
    assert not agent.connected  # nothing was started to find that out
    panel.controls.refresh.click()
    assert "connect first" in panel.controls.message.value


def test_worker_card_shows_worker_state_and_current_task_link(agent, make_panel):
    panel = make_panel(agent)
    agent.state.apply(WorkerStateChanged("nb-host:0", WorkerState.IDLE, time=100.0))
    pull(agent, "a" * 32, name="resnet")
    agent.state.apply(TaskPhaseChanged("a" * 32, TaskPhase.RUNNING))
    agent.state.apply(WorkerStateChanged("nb-host:0", WorkerState.RUNNING))
    panel.refresh()
    card = panel.card.value
    assert "class='notebook-agent-card'" in card  # the class the browser test and saved notebooks look for
    assert "nb-host:0" in card and ">running<" in card and "up " in card
    assert agent.web_url("a" * 32) in card and "resnet" in card
    assert agent.web_url() in card  # the workers page of the web app
    assert panel.sections.get_title(2) == "Tasks (1 running)"


def test_the_card_lists_every_running_slot_with_its_gpus(agent, make_panel):
    # Dynamic GPUs: several tasks at once, each on the GPUs it was given; the worker id says dgpu.
    panel = make_panel(agent)
    agent.state.apply(WorkerStateChanged("nb-host:dgpu0-7", WorkerState.RUNNING, time=100.0))
    agent.state.apply(TaskPulled("q" * 32, "q1", "quad", task_name="big", gpus="0,1,2,3"))
    agent.state.apply(TaskPulled("d" * 32, "q2", "dual", task_name="small", gpus="4,5"))
    panel.refresh()
    card = panel.card.value
    assert "nb-host:dgpu0-7" in card
    assert "GPUs 0,1,2,3" in card and "GPUs 4,5" in card and "big" in card and "small" in card


def test_the_card_shows_the_worker_error(agent, make_panel):
    panel = make_panel(agent)
    agent.state.record_error("ConnectionError: <server down>")
    panel.refresh()
    assert "ConnectionError: &lt;server down&gt;" in panel.card.value


def test_a_refused_key_shows_which_server_refused_which_key_and_the_fix(agent, make_panel):
    from types import SimpleNamespace

    from notebook_agent.api.errors import UnauthorizedError

    panel = make_panel(agent)
    refused = UnauthorizedError(401, 22, "invalid credentials", "auth.login")
    agent.worker = SimpleNamespace(error=refused, _thread=None, worker_id="")
    panel.refresh()
    error = agent.snapshot().error
    assert "refused the access key" in error and "Fix:" in error
    creds = agent.config.api.credentials
    assert creds.secret_key not in error and creds.access_key not in error


# -- tasks --------------------------------------------------------------------------------------------------------


def test_a_task_tab_shows_build_progress_and_an_escaped_log(agent, make_panel):
    panel = make_panel(agent)
    pull(agent, "t1", name="my task")
    agent.state.apply(EnvBuildStep("t1", "installing requirements", fraction=0.4, detail="12 packages installed"))
    agent.state.apply(TaskLogLines("t1", "stdout", ("hello", "<script>alert(1)</script>")))
    panel.refresh()
    page = panel.tasks.page("t1")
    assert page is not None
    assert panel.tasks.tabs.children == (page.box,)
    assert panel.tasks.tabs.get_title(0) == "\u25b6 my task"
    assert page.progress.value == pytest.approx(0.4)
    assert page.step.value == "installing requirements: 12 packages installed"
    assert "hello" in page.log.value
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.log.value and "<script>" not in page.log.value
    assert "my task" in panel.tasks.summary.value


def test_the_log_shows_only_the_last_lines(agent, make_panel):
    panel = make_panel(agent)
    pull(agent, "t1")
    agent.state.apply(TaskLogLines("t1", "stdout", tuple(f"line {i:04d}" for i in range(450))))
    panel.refresh()
    log = panel.tasks.page("t1").log.value
    assert f"line {450 - LOG_LINES:04d}" in log and "line 0449" in log
    assert f"line {450 - LOG_LINES - 1:04d}" not in log


def test_abort_calls_the_agent_and_finished_tasks_have_no_abort(agent, make_panel):
    panel = make_panel(agent)
    pull(agent, "run1", at=1.0)
    pull(agent, "done1", at=0.5)
    agent.state.apply(TaskPhaseChanged("done1", TaskPhase.COMPLETED, exit_code=0))
    panel.refresh()
    running, finished = panel.tasks.page("run1"), panel.tasks.page("done1")
    assert finished.abort.layout.display == "none" and running.abort.layout.display != "none"
    running.abort.click()
    assert panel.actions.join(10)
    assert agent.calls == [("abort", "run1")]
    assert "aborting run1" in running.note.value


def test_tabs_are_bounded_and_their_pages_reused(agent, make_panel):
    panel = make_panel(agent)
    for i in range(MAX_TABS + 4):
        pull(agent, f"t{i:02d}", at=float(i))
        agent.state.apply(TaskPhaseChanged(f"t{i:02d}", TaskPhase.COMPLETED, exit_code=0))
    panel.refresh()
    tabs = panel.tasks.tabs
    assert len(tabs.children) == MAX_TABS
    assert tabs.get_title(MAX_TABS - 1) == "train"
    boxes = set(map(id, tabs.children))
    for i in range(MAX_TABS + 4, MAX_TABS + 7):
        pull(agent, f"t{i:02d}", at=float(i))
    panel.refresh()
    assert len(tabs.children) == MAX_TABS
    assert set(map(id, tabs.children)) == boxes  # the dropped tasks' pages now show the new tasks
    assert tabs.selected_index == MAX_TABS - 1  # a newly pulled task is followed
    assert panel.tasks.page("t02") is None and panel.tasks.page(f"t{MAX_TABS + 6:02d}") is not None


def test_a_quiet_refresh_sends_nothing(agent, make_panel):
    panel = make_panel(agent)
    pull(agent, "t1")
    agent.state.apply(TaskLogLines("t1", "stdout", ("x",)))
    agent.state.apply(TaskPhaseChanged("t1", TaskPhase.FAILED, exit_code=1, time=1010.0))
    panel.refresh()
    before = updates_sent()
    panel.refresh()
    assert updates_sent() == before
    agent.state.apply(TaskLogLines("t1", "stdout", ("y",)))
    panel.refresh()
    assert updates_sent() > before


# -- controls -----------------------------------------------------------------------------------------------------


def test_start_passes_the_ordered_queues_and_options(agent, make_panel):
    panel = make_panel(agent)
    controls = panel.controls
    controls._set_available(["cpu", "default", "gpu"])
    for name in ("gpu", "default", "cpu"):
        controls.available.value = name
        controls.add.click()
    controls.chosen.value = "cpu"
    controls.up.click()
    controls.chosen.value = "gpu"
    controls.remove.click()
    assert list(controls.chosen.options) == ["cpu", "default"]
    controls.gpus.value = "0,1"
    controls.order_fairness.value = True
    controls.start.click()
    assert panel.actions.join(10)
    assert agent.calls == [("start", ["cpu", "default"], {"gpus": "0,1", "cpu_only": False, "order_fairness": True})]
    assert "Started" in controls.message.value
    controls.cpu_only.value = True
    assert controls.gpus.disabled
    controls.start.click()
    assert panel.actions.join(10)
    assert agent.calls[-1][2] == {"gpus": None, "cpu_only": True, "order_fairness": True}


def test_detected_gpus_are_offered_as_a_multiple_choice(tmp_path, make_panel):
    agent = configured_agent(tmp_path, gpus="1")
    nvml = FakeNvml([FakeGpu(name="A100"), FakeGpu(name="T4"), FakeGpu(name="L4")])
    panel = make_panel(agent, gpu_monitor=GpuMonitor(nvml=nvml))
    gpus = panel.controls.gpus
    assert [label for label, _ in gpus.options] == ["0: A100", "1: T4", "2: L4"]
    assert gpus.value == (1,)
    gpus.value = (2, 0)
    panel.controls.start.click()
    assert panel.actions.join(10)
    assert agent.calls[-1][2]["gpus"] == "0,2"
    assert nvml.shutdown_calls == nvml.init_calls  # detection does not keep NVML open


def test_stop_drain_and_pause_resume_reach_the_agent(agent, make_panel):
    panel = make_panel(agent)
    controls = panel.controls
    controls.drain.click()
    assert panel.actions.join(10)
    controls.stop.click()
    assert panel.actions.join(10)
    controls.pause.click()
    assert panel.actions.join(10)
    assert "Paused" in controls.message.value
    agent.state.apply(WorkerStateChanged("w:0", WorkerState.PAUSED))
    panel.refresh()
    assert controls.pause.description == "Resume"
    assert "paused" in panel.card.value
    controls.pause.click()
    assert panel.actions.join(10)
    assert agent.calls == [("stop", True), ("stop", False), ("pause",), ("resume",)]


def test_a_failing_action_is_a_message_not_a_traceback(agent, make_panel):
    panel = make_panel(agent)
    agent.fail_start = AgentError("gpus and cpu_only exclude each other: give one of them")
    panel.controls.start.click()
    assert panel.actions.join(10)
    assert "exclude each other" in panel.controls.message.value


def test_stop_runs_off_the_click_handler(agent, make_panel):
    release = threading.Event()

    class SlowStop(RecordingAgent):
        def stop(self, drain=False, timeout=None):
            release.wait(10)
            super().stop(drain, timeout)

    slow = SlowStop(config=agent.config, env=agent.env)
    panel = make_panel(slow)
    panel.controls.stop.click()  # returns while the agent still waits for its task to end
    assert "stopping" in panel.controls.message.value and slow.calls == []
    panel.controls.stop.click()  # a second click while the first still works is not queued behind it
    assert "still working on the previous click" in panel.controls.message.value
    release.set()
    assert panel.actions.join(10)
    assert slow.calls == [("stop", False)]


# -- machine ------------------------------------------------------------------------------------------------------


def test_the_machine_section_draws_a_sparkline_per_gpu(agent, make_panel):
    panel = make_panel(agent)
    for used in (1000.0, 2000.0):
        agent.state.add_sample(
            {
                "cpu_usage": [10.0, 30.0],
                "memory_used": 4096.0,
                "memory_free": 4096.0,
                "gpu_usage": [50.0, 5.0],
                "gpu_memory_used": [used, 10.0],
                "gpu_memory_free": [40960.0 - used, 16000.0],
                "gpu_temperature": [61.0, 40.0],
            }
        )
    panel.refresh()
    text = panel.machine.html.value
    assert "GPU 0" in text and "GPU 1" in text and "61 &deg;C" in text
    assert text.count('<svg class="notebook-agent-sparkline"') == 2 * 2 + 2  # util and memory per GPU, CPU, RAM
    assert "2.0 / 40.0 GiB" in text and "4.0 / 8.0 GiB" in text and "20%" in text


def test_the_machine_section_without_gpus_shows_cpu_and_ram(agent, make_panel):
    panel = make_panel(agent)
    assert "No samples yet" in panel.machine.html.value
    agent.state.add_sample({"cpu_usage": [50.0], "memory_used": 1024.0, "memory_free": 3072.0})
    panel.refresh()
    text = panel.machine.html.value
    assert "GPU" not in text and text.count("<svg") == 2 and "CPU" in text and "1.0 / 4.0 GiB" in text


# -- the refresh thread and busy tracking -------------------------------------------------------------------------


def test_the_refresh_thread_follows_events_and_stops_on_close(agent, make_panel):
    panel = make_panel(agent).start()
    assert panel.refreshing
    pull(agent, "live")
    agent.state.apply(TaskLogLines("live", "stdout", ("from the thread",)))
    wait_for(lambda: (p := panel.tasks.page("live")) and "from the thread" in p.log.value, what="the log line")
    thread = panel._thread
    panel.close()
    assert not thread.is_alive() and not panel.refreshing


def test_the_refresh_thread_ends_when_its_widgets_are_closed_elsewhere(agent, make_panel):
    panel = make_panel(agent).start()
    thread = panel._thread
    close_all(panel.widget)  # e.g. Widget.close_all() in the notebook
    panel.poke()
    wait_for(lambda: not thread.is_alive(), what="the refresh thread to end")


def test_older_panels_of_an_agent_are_closed(agent, make_panel, monkeypatch):
    monkeypatch.setattr(panel_module, "MAX_LIVE_PANELS", 2)
    first, second, third = (make_panel(agent).start() for _ in range(3))
    assert first.closed and not second.closed and not third.closed


def test_the_hint_says_when_a_cell_is_running(agent, make_panel):
    class Shell:
        events = EventManager(None, available_events)

    shell = Shell()
    panel = make_panel(agent, shell=shell).start()
    shell.events.trigger("pre_run_cell", None)
    assert html.escape(BUSY_HINT) in panel.hint.value
    shell.events.trigger("post_run_cell", None)
    assert html.escape(HINT) in panel.hint.value
    panel.close()
    assert shell.events.callbacks["pre_run_cell"] == [] and shell.events.callbacks["post_run_cell"] == []


def test_agent_panel_returns_a_panel(agent):
    panel = agent.panel()
    try:
        assert isinstance(panel, Panel) and panel.agent is agent
    finally:
        panel.close()


def test_displaying_the_panel_shows_its_root_widget_and_starts_refreshing(tmp_path, make_panel, monkeypatch):
    import IPython.display

    shown: list = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    home = tmp_path / "empty-home"
    home.mkdir()
    panel = make_panel(RecordingAgent(env={"HOME": str(home)}))
    assert not panel.refreshing  # nothing runs until the panel is shown
    panel._ipython_display_()
    assert shown == [panel.widget] and panel.refreshing
    assert not panel.actions.busy("queues")  # no server configured: no queue list to read
