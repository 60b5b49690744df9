"""`Panel`: the agent's control panel in a notebook, made of core widgets only (ipywidgets 7.7 on Colab, 8.x
elsewhere). It renders the Agent's snapshots from one throttled daemon thread and calls the Agent's public
methods from its buttons; it keeps no state of its own beyond what is on screen."""

from __future__ import annotations

import html
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from notebook_agent.monitor.nvml import GpuMonitor, GpuReading
from notebook_agent.notebook.agent import Agent, AgentError
from notebook_agent.notebook.widgets.card import ServerInfo, worker_card
from notebook_agent.notebook.widgets.common import Actions, Report, assign, close_all
from notebook_agent.notebook.widgets.connect import ConnectForm, Secrets, colab_secret, server_info
from notebook_agent.notebook.widgets.machine import MachineView
from notebook_agent.notebook.widgets.queues import QueueControls
from notebook_agent.notebook.widgets.tasks import TasksView

logger = logging.getLogger(__name__)

MIN_INTERVAL = 0.25  # seconds between renders: at most 4 updates/s, however fast log lines arrive
MAX_INTERVAL = 2.0  # a render at least this often, for durations and uptime
MAX_LIVE_PANELS = 3  # per agent: re-running `%agent` leaves older panels in old outputs; those beyond are closed
CONNECT, QUEUES, TASKS, MACHINE = range(4)
SECTION_TITLES = ("Connect", "Queues", "Tasks", "Machine")
HINT = "Buttons act when no cell is running; Abort from the ClearML web app always works."
BUSY_HINT = "A cell is running: clicks will act when it finishes. Abort from the ClearML web app always works."

_DEFAULT_SHELL: Any = object()
_LIVE: weakref.WeakKeyDictionary[Agent, list[weakref.ref[Panel]]] = weakref.WeakKeyDictionary()
_LIVE_LOCK = threading.Lock()


def detect_gpus(monitor: GpuMonitor | None = None) -> list[GpuReading]:
    """The GPUs NVML sees, for the GPU choice; [] without a driver (the choice is then typed)."""
    monitor = monitor if monitor is not None else GpuMonitor()
    try:
        return monitor.devices() if monitor.open() else []
    except Exception:
        logger.debug("GPU detection failed", exc_info=True)
        return []
    finally:
        monitor.close()


class Panel:
    """The control panel of one Agent: Connect, Queues, Tasks and Machine sections under a worker card.

    Display it (or return it from a cell): the first display starts its refresh thread and reads the server's
    queues. `refresh()` renders the current snapshot synchronously; `close()` stops the thread and closes the
    widgets. `gpu_monitor`, `secrets` (Colab secrets) and `shell` (busy tracking) are seams for tests.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        gpu_monitor: GpuMonitor | None = None,
        secrets: Secrets | None = colab_secret,
        shell: Any = _DEFAULT_SHELL,
    ) -> None:
        self.agent = agent
        self.closed = False
        self._shell = shell
        self._hooks: list[tuple[str, Callable[..., None]]] = []
        self._events: Any = None
        self._busy = False
        self._dirty = False
        self._server: ServerInfo | None = None  # cached while not connected (it reads clearml.conf)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._render_lock = threading.Lock()
        self._displayed = False

        self.actions = Actions(on_done=self.poke)
        self.connect = ConnectForm(agent, self.actions, secrets=secrets, on_changed=self._server_changed)
        self.controls = QueueControls(agent, self.actions, gpus=detect_gpus(gpu_monitor), server=self.server_info)
        self.tasks = TasksView(on_abort=self._abort)
        self.machine = MachineView()
        self.card = w.HTML()
        self.hint = w.HTML()
        self.sections = w.Tab(children=[self.connect.box, self.controls.box, self.tasks.box, self.machine.box])
        for index, title in enumerate(SECTION_TITLES):
            self.sections.set_title(index, title)
        self.widget = w.VBox([self.card, self.hint, self.sections])
        info = self.server_info()
        self.sections.selected_index = QUEUES if info.configured and not info.error else CONNECT
        self.refresh()

    # display and lifecycle ----------------------------------------------------------------------------------
    def _ipython_display_(self) -> None:
        from IPython.display import display

        self.start()
        if not self._displayed:
            self._displayed = True
            if self.server_info().configured and not self.controls.available.options:
                self.controls.refresh_queues()
        display(self.widget)

    def start(self) -> Panel:
        """Start the refresh thread (display does it) and the busy tracking; a closed panel stays closed."""
        if self.closed or (self._thread is not None and self._thread.is_alive()):
            return self
        self._close_older_panels()
        self._watch_cells()
        self._thread = threading.Thread(
            target=_refresh_loop,
            args=(weakref.ref(self), self.agent.state.changed, self._stop),
            name="notebook-agent-panel",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def refreshing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop refreshing and close every widget of the panel; the agent goes on."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self.agent.state.changed.set()  # wake the loop now instead of at its next timeout
        self._unwatch_cells()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        self.tasks.close()
        close_all(self.widget)

    def _close_older_panels(self) -> None:
        with _LIVE_LOCK:
            live = [ref for ref in _LIVE.get(self.agent, []) if (p := ref()) is not None and not p.closed]
            live.append(weakref.ref(self))
            older, _LIVE[self.agent] = live[:-MAX_LIVE_PANELS], live[-MAX_LIVE_PANELS:]
        for ref in older:
            panel = ref()
            if panel is not None:
                panel.close()

    # rendering ----------------------------------------------------------------------------------------------
    def poke(self) -> None:
        """Ask the refresh thread for a render soon (after an action), even if the state did not change."""
        self._dirty = True
        self.agent.state.changed.set()

    def server_info(self) -> ServerInfo:
        if self.agent.connected or self._server is None:
            info = server_info(self.agent)  # connected: read from the agent's config, no file access
            self._server = None if self.agent.connected else info
            return info
        return self._server

    def refresh(self) -> None:
        """Render the agent's current snapshot into the widgets, setting only values that changed."""
        with self._render_lock:
            self._dirty = False
            snapshot = self.agent.snapshot()
            now = time.time()
            info = self.server_info()
            web_url = self.agent.web_url if self.agent.connected and info.api_server else None
            queues = self.agent.queues if self.agent.running else self.controls.selected_queues
            card = worker_card(
                snapshot,
                info,
                queues=tuple(queues),
                paused=self.controls.is_paused(snapshot),
                web_url=web_url,
                now=now,
            )
            assign(self.card, "value", card)
            self.connect.render_status(info)
            self.controls.render(snapshot)
            self.tasks.render(snapshot, web_url, now)
            self.machine.render(snapshot)
            running = sum(1 for t in snapshot.tasks if t.running)
            title = f"Tasks ({running} running)" if running else "Tasks"
            if self.sections.get_title(TASKS) != title:
                self.sections.set_title(TASKS, title)
            self._render_hint()

    def _render_hint(self) -> None:
        text = f"<b style='color:#ef6c00'>{html.escape(BUSY_HINT)}</b>" if self._busy else html.escape(HINT)
        assign(self.hint, "value", f"<div style='color:#666;font-size:90%'>{text}</div>")

    def _server_changed(self) -> None:
        self._server = None
        self.poke()
        if self.server_info().configured:
            self.controls.refresh_queues()

    def _abort(self, task_id: str, report: Report) -> None:
        def work() -> str:
            if not self.agent.abort(task_id):
                raise AgentError("this task is not running here any more (the ClearML web app can abort any task)")
            return f"aborting {task_id[:8]}: it is stopped, then marked aborted on the server"

        self.actions.run(f"abort-{task_id}", work, report, "aborting")

    # busy tracking: comm messages (clicks) wait while a cell runs, so say so --------------------------------
    def _watch_cells(self) -> None:
        shell = self._shell
        if shell is _DEFAULT_SHELL:
            try:
                from IPython import get_ipython

                shell = get_ipython()
            except ImportError:
                shell = None
        events = getattr(shell, "events", None)
        if events is None:
            return
        for name, busy in (("pre_run_cell", True), ("post_run_cell", False)):
            hook = _CellHook(self, busy)
            try:
                events.register(name, hook)
            except Exception:
                logger.debug("cannot watch %s", name, exc_info=True)
                continue
            self._hooks.append((name, hook))
        self._events = events

    def _unwatch_cells(self) -> None:
        for name, hook in self._hooks:
            try:
                self._events.unregister(name, hook)
            except Exception:
                logger.debug("cannot unwatch %s", name, exc_info=True)
        self._hooks.clear()

    def set_busy(self, busy: bool) -> None:
        """A cell started (True) or ended (False): IPython's event hooks call this in the kernel's thread."""
        self._busy = busy
        self._render_hint()


class _CellHook:
    """An IPython event callback holding its panel weakly: IPython keeps callbacks until unregistered."""

    def __init__(self, panel: Panel, busy: bool) -> None:
        self._panel = weakref.ref(panel)
        self._busy = busy

    def __call__(self, *_args: Any) -> None:
        panel = self._panel()
        if panel is not None and not panel.closed:
            try:
                panel.set_busy(self._busy)
            except Exception:  # never disturb the user's cell
                logger.debug("busy hint failed", exc_info=True)


def _refresh_loop(ref: weakref.ref[Panel], changed: threading.Event, stop: threading.Event) -> None:
    """Render on state changes, throttled: wake on `changed` (or every MAX_INTERVAL), wait out MIN_INTERVAL
    since the last render so bursts of log lines fold into one update, render when the state's version moved
    (or an action asked, or MAX_INTERVAL passed). Never raises or prints; ends on close or when the panel is
    garbage. `changed` is shared (other panels, Agent.wait clear it too); the timeout covers a missed wake."""
    last_render = 0.0
    last_version = -1
    while True:
        changed.wait(MAX_INTERVAL)
        if stop.wait(max(0.0, last_render + MIN_INTERVAL - time.monotonic())):
            return
        changed.clear()
        panel = ref()
        if panel is None or panel.closed or panel.widget.comm is None:
            return
        try:
            version = panel.agent.state.version
            if panel._dirty or version != last_version or time.monotonic() - last_render >= MAX_INTERVAL:
                last_version, last_render = version, time.monotonic()
                panel.refresh()
        except Exception:
            logger.debug("panel refresh failed", exc_info=True)
        finally:
            del panel  # hold the panel only while rendering, so it can become garbage
