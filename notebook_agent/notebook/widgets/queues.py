"""The queues and controls section: the server's queues, the ordered queues to pull from (first has priority),
creating a queue, order fairness, GPU choice, and Start / Stop / Drain / Pause-Resume wired to the Agent."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ipywidgets as w

from notebook_agent.api import Codes, Session, queues
from notebook_agent.api.errors import APIError
from notebook_agent.engine.events import WorkerState
from notebook_agent.masking import mask_url
from notebook_agent.monitor.nvml import GpuReading
from notebook_agent.notebook.agent import Agent
from notebook_agent.notebook.state import Snapshot
from notebook_agent.notebook.widgets.card import ServerInfo
from notebook_agent.notebook.widgets.common import Actions, assign, reporter

NOT_CONFIGURED = "No server is configured: connect first (Connect tab), or use the embedded server."


def _session(agent: Agent) -> Session:
    # Short retries: a click wants an answer in seconds, not after the worker's minute of patience.
    return Session.from_config(agent.config.api, retry_total_seconds=10.0, timeout=10.0)


def list_queue_names(agent: Agent) -> list[str]:
    """The names of the server's queues, sorted (hidden ones left out, as in the web app)."""
    with _session(agent) as session:
        found = queues.get_all(session, only_fields=["id", "name"])
    return sorted({str(q["name"]) for q in found if q.get("name")})


def create_queue(agent: Agent, name: str) -> bool:
    """Create queue `name`; False when it exists already (which is as good for the user)."""
    with _session(agent) as session:
        try:
            queues.create(session, name)
        except APIError as exc:
            if exc.is_(Codes.EXPECTED_UNIQUE_DATA):
                return False
            raise
    return True


def _button(description: str, style: str = "", tooltip: str = "", width: str = "") -> w.Button:
    layout = w.Layout(width=width) if width else w.Layout()
    return w.Button(description=description, button_style=style, tooltip=tooltip, layout=layout)


class QueueControls:
    """Queue selection and the worker's buttons; the slow calls run through `actions`."""

    def __init__(
        self,
        agent: Agent,
        actions: Actions,
        *,
        gpus: Sequence[GpuReading],
        server: Callable[[], ServerInfo],
    ) -> None:
        self.agent = agent
        self.actions = actions
        self.server = server
        column = w.Layout(width="240px")
        self.available = w.Select(options=[], rows=6, layout=column)
        self.chosen = w.Select(options=tuple(agent.queues), rows=6, layout=column)
        self.add = _button("Add \u2192", tooltip="pull from this queue too", width="90px")
        self.remove = _button("Remove", tooltip="stop pulling from this queue", width="90px")
        self.up = _button("Up", tooltip="higher priority", width="90px")
        self.down = _button("Down", tooltip="lower priority", width="90px")
        self.refresh = _button("Refresh", tooltip="read the queues from the server")
        self.new_queue = w.Text(placeholder="new queue name", layout=w.Layout(width="240px"))
        self.create = _button("Create", tooltip="create this queue on the server")
        self.order_fairness = w.Checkbox(
            value=agent.order_fairness, description="order fairness (take turns between queues)", indent=False
        )
        self.cpu_only = w.Checkbox(value=agent.cpu_only, description="CPU only", indent=False)
        self.gpus: w.SelectMultiple | w.Text
        if gpus:
            wanted = {int(i) for i in (agent.gpus or "").split(",") if i.strip().isdigit()}
            options = [(f"{g.index}: {g.name}" if g.name else f"GPU {g.index}", g.index) for g in gpus]
            self.gpus = w.SelectMultiple(
                options=options,
                value=tuple(i for _, i in options if i in wanted),
                rows=min(4, len(options)),
                description="GPUs",
            )
        else:
            self.gpus = w.Text(value=agent.gpus or "", description="GPUs", placeholder="all, or e.g. 0,1")
        self.start = _button("Start", "success", "register the worker and pull from the chosen queues")
        self.stop = _button("Stop", "danger", "leave now, aborting the running task")
        self.drain = _button("Drain", "warning", "finish the running task, then leave")
        self.pause = _button("Pause", "", "stop pulling new tasks; the running one goes on")
        self.settings_note = w.HTML()
        self.message = w.HTML()
        self._report = reporter(self.message)
        self.box = w.VBox(
            [
                w.HBox(
                    [
                        w.VBox([w.HTML("<b>On the server</b>"), self.available]),
                        w.VBox([w.HTML("&nbsp;"), self.add, self.remove, self.up, self.down]),
                        w.VBox([w.HTML("<b>Pull from</b> (first has priority)"), self.chosen]),
                    ]
                ),
                w.HBox([self.refresh, self.new_queue, self.create]),
                w.HBox([self.order_fairness, self.cpu_only]),
                w.HBox([self.gpus, w.HTML("<span style='color:#666;font-size:90%'>none chosen: all GPUs</span>")]),
                self.settings_note,
                w.HBox([self.start, self.stop, self.drain, self.pause]),
                self.message,
            ]
        )
        self.add.on_click(lambda _b: self.add_selected())
        self.remove.on_click(lambda _b: self.remove_selected())
        self.up.on_click(lambda _b: self.move(-1))
        self.down.on_click(lambda _b: self.move(+1))
        self.refresh.on_click(lambda _b: self.refresh_queues())
        self.create.on_click(lambda _b: self.create_queue())
        self.start.on_click(lambda _b: self.start_worker())
        self.stop.on_click(lambda _b: self.stop_worker(drain=False))
        self.drain.on_click(lambda _b: self.stop_worker(drain=True))
        self.pause.on_click(lambda _b: self.toggle_pause())
        self.cpu_only.observe(lambda _c: assign(self.gpus, "disabled", self.cpu_only.value), names="value")
        self.gpus.disabled = self.cpu_only.value

    # the ordered list -----------------------------------------------------------------------------------------
    @property
    def selected_queues(self) -> list[str]:
        return list(self.chosen.options)

    def add_selected(self) -> None:
        name = self.available.value
        if name and name not in self.chosen.options:
            self.chosen.options = (*self.chosen.options, name)
        if name:
            self.chosen.value = name

    def remove_selected(self) -> None:
        name = self.chosen.value
        if name is None:
            return
        names = list(self.chosen.options)
        index = names.index(name)
        names.remove(name)
        self.chosen.options = tuple(names)
        self.chosen.value = names[min(index, len(names) - 1)] if names else None

    def move(self, step: int) -> None:
        name = self.chosen.value
        names = list(self.chosen.options)
        if name is None or not 0 <= names.index(name) + step < len(names):
            return
        index = names.index(name)
        names[index], names[index + step] = names[index + step], names[index]
        self.chosen.options = tuple(names)
        self.chosen.value = name

    def _set_available(self, names: Sequence[str]) -> None:
        keep = self.available.value
        assign(self.available, "options", tuple(names))
        self.available.value = keep if keep in names else (names[0] if names else None)

    # server calls ---------------------------------------------------------------------------------------------
    def refresh_queues(self) -> None:
        if not self.server().configured:
            self._report("error", NOT_CONFIGURED)
            return

        def work() -> str:
            names = list_queue_names(self.agent)
            self._set_available(names)
            return f"{len(names)} queue{'s' if len(names) != 1 else ''} on {mask_url(self.agent.config.api.api_server)}"

        self.actions.run("queues", work, self._report, "reading the queues")

    def create_queue(self) -> None:
        name = self.new_queue.value.strip()
        if not name:
            self._report("error", "type the new queue's name first")
            return
        if not self.server().configured:
            self._report("error", NOT_CONFIGURED)
            return

        def work() -> str:
            created = create_queue(self.agent, name)
            self._set_available(list_queue_names(self.agent))
            if name not in self.chosen.options:
                self.chosen.options = (*self.chosen.options, name)
            assign(self.new_queue, "value", "")
            return f"created queue {name}" if created else f"queue {name} exists already: added it"

        self.actions.run("create", work, self._report, f"creating queue {name}")

    # the worker -----------------------------------------------------------------------------------------------
    def gpu_choice(self) -> str | None:
        if self.cpu_only.value:
            return None
        if isinstance(self.gpus, w.SelectMultiple):
            return ",".join(str(i) for i in sorted(self.gpus.value)) or None
        return self.gpus.value.strip() or None

    def start_worker(self) -> None:
        # Read the form now, in the click handler: the thread must start what the user saw when clicking.
        chosen, gpus = self.selected_queues, self.gpu_choice()
        cpu_only, fairness = self.cpu_only.value, self.order_fairness.value

        def work() -> str:
            self.agent.start(chosen, gpus=gpus, cpu_only=cpu_only, order_fairness=fairness)
            said = "".join(f"{m}. " for m in self.agent.messages if "embedded" in m)
            return f"{said}Started {self.agent.worker_id or 'the worker'} on {', '.join(self.agent.queues)}."

        self.actions.run("start", work, self._report, "starting the worker")

    def stop_worker(self, drain: bool) -> None:
        def work() -> str:
            self.agent.stop(drain=drain)
            return "Draining: the worker leaves after the running task." if drain else "Stopped."

        busy = "" if drain else "stopping: aborting the running task"
        self.actions.run("stop", work, self._report, busy)

    def toggle_pause(self) -> None:
        resume = self.is_paused(self.agent.snapshot())

        def work() -> str:
            if resume:
                self.agent.resume()
                return "Resumed: pulling again."
            self.agent.pause()
            return "Paused: no new task is pulled; the running one goes on."

        self.actions.run("pause", work, self._report)

    def is_paused(self, snapshot: Snapshot) -> bool:
        return self.agent.paused or snapshot.state == WorkerState.PAUSED

    def render(self, snapshot: Snapshot) -> None:
        running = self.agent.running
        draining = snapshot.state == WorkerState.DRAINING
        assign(self.start, "disabled", running or self.actions.busy("start"))
        assign(self.stop, "disabled", not running)
        assign(self.drain, "disabled", not running or draining)
        assign(self.pause, "disabled", not running or draining)
        assign(self.pause, "description", "Resume" if self.is_paused(snapshot) else "Pause")
        hint = "Queue, fairness and GPU changes apply at the next Start." if running else ""
        assign(self.settings_note, "value", f"<span style='color:#666;font-size:90%'>{hint}</span>" if hint else "")
