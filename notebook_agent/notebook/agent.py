"""`Agent`: the Python API of the notebook face. It runs the engine's worker in a daemon thread of the kernel and
keeps a PanelState from its events; the magics and the widgets are thin layers over it."""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from notebook_agent.api import APIError
from notebook_agent.cli.common import connect
from notebook_agent.config import ApiConfig, Config, ConfigError, load_config
from notebook_agent.engine import task_registry
from notebook_agent.engine.connection_errors import explain_api_error
from notebook_agent.engine.events import EventBus
from notebook_agent.engine.schedule import ScheduleError
from notebook_agent.engine.worker import STATE_DIR, Worker, WorkerOptions, schedule_for
from notebook_agent.environment.interpreter import sdk_binary
from notebook_agent.masking import mask_url
from notebook_agent.monitor.machine import MachineMonitor
from notebook_agent.monitor.nvml import GpuMonitor
from notebook_agent.notebook.state import PanelState, Snapshot, TaskView
from notebook_agent.server import DEFAULT_DATA_DIR, EmbeddedServer

logger = logging.getLogger(__name__)

SAMPLE_SEC = 2.0  # the panel's own machine/GPU sampling period (the server gets a report every 30 s)
SHUTDOWN_REASON = "the notebook shut down while the task ran (agent unloaded or kernel exiting)"
SHUTDOWN_ABORT_SEC = 10.0  # beyond the task's SIGTERM grace: its last log lines, its status, the unregister


# The worker's other modes, as the daemon's flags give them (engine.worker.WorkerOptions): services mode, dynamic
# GPUs, working hours, the free GPU memory gate.
ENGINE_OPTIONS = ("services_mode", "dynamic_gpus", "queue_gpus", "uptime", "downtime", "gpu_min_free_gb")


class AgentError(Exception):
    """A request the agent cannot carry out; the message says why and what to do."""


class Agent:
    """A ClearML worker inside this kernel. Nothing here blocks or prints: `start()` returns at once, and what the
    worker does is read through `status()`, `logs()`, `snapshot()` or the panel.

        agent = Agent(queues=["default"]).start()
        agent.panel()          # the widgets
        agent.stop(drain=True) # finish the running task, then leave
    """

    def __init__(
        self,
        queues: Sequence[str] | str | None = None,
        *,
        gpus: str | None = None,
        cpu_only: bool = False,
        order_fairness: bool = False,
        create_queue: bool = True,
        config: Config | None = None,
        embedded: bool = False,
        env: Mapping[str, str] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.queues = [queues] if isinstance(queues, str) else list(queues or [])
        self.gpus = gpus
        self.cpu_only = cpu_only
        self.order_fairness = order_fairness
        self.create_queue = create_queue
        self.embedded = embedded
        self._env = dict(os.environ if env is None else env)
        self._config = config
        self.state_dir = state_dir  # worker-id leases and task pid files (default ~/.notebook_agent)
        self.server: EmbeddedServer | None = None
        self.bus = EventBus()
        self.state = PanelState(self.bus)
        self.worker: Worker | None = None
        self.messages: list[str] = []  # what connecting said (which server, embedded or not)
        self._sampler: threading.Thread | None = None
        self._stop_sampling = threading.Event()
        self._lock = threading.Lock()

    # configuration ------------------------------------------------------------------------------------------
    @property
    def config(self) -> Config:
        """The effective configuration: clearml.conf and CLEARML_* variables, else the embedded server's."""
        if self._config is None:
            self._config = self._connect()
        return self._config

    def _connect(self) -> Config:
        out = io.StringIO()
        config, self.server = connect(out, force_embedded=self.embedded, env=self._env)
        self.messages.extend(line for line in out.getvalue().splitlines() if line.strip())
        if not self.messages:
            self.messages.append(f"using the ClearML server at {mask_url(config.api.api_server)}")
        return config

    @property
    def connected(self) -> bool:
        """True once a configuration is given or loaded; reading `config` before may start the embedded server."""
        return self._config is not None

    @property
    def env(self) -> dict[str, str]:
        """A copy of the environment the configuration is read from (the panel finds clearml.conf with it)."""
        return dict(self._env)

    def use_config(self, config: Config | None = None) -> None:
        """Use `config` from now on, or (None) read clearml.conf and CLEARML_* again at the next use: after the
        panel saved credentials or chose the embedded server. A running worker keeps its configuration until
        it is stopped and started again."""
        with self._lock:
            self._config = config
            self.messages.clear()

    def config_text(self) -> str:
        """The effective configuration as HOCON-like text, secrets masked."""
        return _format_tree(self.config.masked())

    # control ------------------------------------------------------------------------------------------------
    def start(self, queues: Sequence[str] | str | None = None, **options: Any) -> Agent:
        """Register the worker and start pulling from `queues` (highest priority first) in a daemon thread."""
        with self._lock:
            if self.running:
                raise AgentError(f"the agent is already running as {self.worker_id}: stop it first (%agent stop)")
            if queues is not None:
                self.queues = [queues] if isinstance(queues, str) else list(queues)
            engine_options = {}
            for name, value in options.items():
                if name in ("gpus", "cpu_only", "order_fairness", "create_queue"):
                    setattr(self, name, value)
                elif name in ENGINE_OPTIONS:
                    engine_options[name] = value
                else:
                    known = ", ".join(("gpus", "cpu_only", "order_fairness", "create_queue", *ENGINE_OPTIONS))
                    raise AgentError(f"unknown option {name!r}: use {known}")
            if self.gpus and self.cpu_only:
                raise AgentError("gpus and cpu_only exclude each other: give one of them")
            if not self.queues:
                self.queues = ["default"]
            worker_options = WorkerOptions(
                queues=list(self.queues),
                order_fairness=self.order_fairness,
                create_queue=self.create_queue,
                gpus=self.gpus,
                cpu_only=self.cpu_only,
                **({"state_dir": self.state_dir} if self.state_dir is not None else {}),
                **engine_options,
            )
            try:  # a bad working-hours entry is the caller's error now, not the worker thread's later
                schedule_for(self.config, worker_options)
            except ScheduleError as err:
                raise AgentError(str(err)) from None
            self.state.record_error("")
            self.worker = Worker(self.config, worker_options, bus=self.bus, base_env=self._env)
            self.worker.start()
            self._start_sampler()
            # A graceful kernel exit stops the worker; a killed kernel never runs this, the next load reaps.
            atexit.unregister(self._on_exit)
            atexit.register(self._on_exit)
        self.reap_leftovers()
        return self

    def stop(self, drain: bool = False, timeout: float | None = None) -> None:
        """Leave the queues: after the running task ends (`drain=True`) or now, aborting it. Without `timeout`
        this returns at once when draining (the worker leaves by itself) and waits up to 30 s otherwise."""
        worker = self.worker
        if worker is None:
            return
        if drain and timeout is None:
            threading.Thread(target=worker.stop, kwargs={"drain": True}, daemon=True, name="agent-drain").start()
            return
        worker.stop(drain=drain, timeout=30.0 if timeout is None else timeout)
        self._stop_sampling.set()

    def pause(self) -> None:
        """Stop pulling new tasks; the running one goes on."""
        self._require_worker().pause()

    def resume(self) -> None:
        self._require_worker().resume()

    def abort(self, task_id: str) -> bool:
        """Abort a task running here (a prefix of its id is enough); False when no such task runs."""
        worker = self._require_worker()
        task = self.state.snapshot().task(task_id)
        return bool(task and task.running and worker.abort(task.task_id))

    def submit(
        self,
        source: str,
        *,
        name: str = "notebook task",
        queue: str | None = None,
        project: str = "notebook-agent",
        requirements: str = "",
    ) -> str:
        """Create a task that runs the Python `source` (no repository, as the SDK stores a single script) and
        enqueue it on `queue` (default: this agent's first queue); returns the task id."""
        from notebook_agent import api
        from notebook_agent.engine.queue_lookup import resolve_queues

        script = {
            "binary": sdk_binary(),
            "repository": "",
            "entry_point": "task.py",
            "working_dir": ".",
            "diff": source,
            "requirements": {"pip": requirements} if requirements else {},
        }
        target = queue or (self.queues[0] if self.queues else "")
        session = api.Session.from_config(self.config.api)
        try:
            (queue_ref,) = resolve_queues(session, [target] if target else [])
            project_id = api.projects.get_or_create(session, project)
            task_id = api.tasks.create(session, name, "training", project=project_id, script=script)
            api.tasks.enqueue(session, task_id, queue=queue_ref.id)
        finally:
            session.close()
        return task_id

    def wait(self, *task_ids: str, timeout: float = 600.0) -> list[TaskView]:
        """Block (this cell only; the agent goes on) until the tasks ran here to an end; returns their views.
        Raises AgentError naming the tasks still unfinished after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            views = [snap.task(task_id) for task_id in task_ids]
            if all(view is not None and view.phase.final for view in views):
                return [view for view in views if view is not None]
            if snap.error:
                raise AgentError(f"the worker stopped: {snap.error}")
            left = deadline - time.monotonic()
            if left <= 0:
                pending = [t for t, v in zip(task_ids, views, strict=True) if v is None or not v.phase.final]
                raise AgentError(f"tasks not finished after {timeout:.0f} s: {', '.join(pending)}")
            self.state.changed.clear()
            self.state.changed.wait(min(left, 1.0))

    def close(self) -> None:
        """Stop the worker (aborting its task) and the embedded server this agent started."""
        atexit.unregister(self._on_exit)
        self.stop(drain=False, timeout=30.0)
        self._stop_sampling.set()
        self.state.close()
        if self.server is not None:
            self.server.stop()
            self.server = None

    # kernel lifecycle: shutdown, and what an earlier kernel left behind -----------------------------------------
    def shutdown(self) -> None:
        """Leave because the notebook shuts down (`%unload_ext`, the kernel exiting): abort the running task,
        reported stopped with SHUTDOWN_REASON, or with `agent.notebook.shutdown: drain` let it finish within
        `agent.notebook.drain_timeout_sec` first. Returns within that timeout plus the task's SIGTERM grace and
        SHUTDOWN_ABORT_SEC; the worker thread is a daemon, so nothing else holds up the interpreter's exit."""
        worker = self.worker
        if worker is None or not self.running:
            return
        config = worker.config  # the worker's own: reading self.config again could connect anew
        if str(config.agent("notebook.shutdown", "abort")) == "drain":
            worker.stop(drain=True, timeout=float(config.agent("notebook.drain_timeout_sec", 60)))
        if self.running:
            worker.stop(drain=False, timeout=worker.options.grace_sec + SHUTDOWN_ABORT_SEC, reason=SHUTDOWN_REASON)
        self._stop_sampling.set()

    def reap_leftovers(self) -> threading.Thread:
        """In a daemon thread (loading never waits on the server): end the task processes that a dead kernel
        left running and mark their tasks stopped (engine.task_registry.reap); each one leaves a line in
        `messages`."""
        thread = threading.Thread(target=self._reap, name="notebook-agent-reaper", daemon=True)
        thread.start()
        return thread

    def _reap(self) -> None:
        try:
            sessions = task_registry.session_factory(_known_servers(self._config, self._env))
            reaped = task_registry.reap(self.state_dir or STATE_DIR, sessions)
        except Exception:  # a daemon thread: say it, never raise into the kernel
            logger.exception("reaping the tasks of an earlier kernel failed")
            return
        self.messages.extend(item.message() for item in reaped)

    def _on_exit(self) -> None:
        try:
            self.shutdown()
        except Exception:  # atexit would print a traceback into a dying kernel's output
            logger.exception("notebook-agent shutdown failed")

    # reading ------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        worker = self.worker
        return worker is not None and worker._thread is not None and worker._thread.is_alive()

    @property
    def paused(self) -> bool:
        """True between pause() and resume(); the state shows PAUSED once the running task, if any, has ended."""
        worker = self.worker
        return worker is not None and self.running and not worker._resume.is_set()

    @property
    def worker_id(self) -> str:
        return self.worker.worker_id if self.worker is not None else ""

    def snapshot(self) -> Snapshot:
        snapshot = self.state.snapshot()
        worker = self.worker
        if worker is not None and worker.error is not None and not snapshot.error:
            error = worker.error
            if isinstance(error, APIError):  # a refused key or an unreachable server: say which, and the fix
                self.state.record_error(explain_api_error(error, self._config))
            else:
                self.state.record_error(f"{type(error).__name__}: {error}")
            snapshot = self.state.snapshot()
        return snapshot

    def status(self) -> str:
        """One compact paragraph: worker, state, server, queues, current task, recent tasks."""
        snap = self.snapshot()
        server = mask_url(self.config.api.api_server) if self._config is not None else "(not connected)"
        lines = [
            f"worker {snap.worker_id or '(not started)'}: {snap.state.value}"
            + (f" ({snap.detail})" if snap.detail else "")
            + (f", up {_duration(time.time() - snap.started_at)}" if snap.started_at and self.running else ""),
            f"server {server}; queues {', '.join(self.queues) or '(none)'}",
        ]
        current = snap.current
        if current is not None:
            lines.append(f"running {_task_line(current)}")
        finished = [t for t in snap.tasks if not t.running][:5]
        if finished:
            lines.append("recent: " + "; ".join(_task_line(t) for t in finished))
        if snap.error:
            lines.append(f"error: {snap.error}")
        lines.extend(f"note: {m}" for m in self.messages if " outlived the " in m)
        return "\n".join(lines)

    def logs(self, task_id: str | None = None, lines: int = 50) -> str:
        """The tail of a task's log (the running or latest task by default); the full log is on the server."""
        snap = self.snapshot()
        task = snap.task(task_id) if task_id else (snap.current or (snap.tasks[0] if snap.tasks else None))
        if task is None:
            raise AgentError(f"no task {task_id!r} ran here" if task_id else "no task has run here yet")
        return "\n".join(task.log_tail[-lines:])

    def web_url(self, task_id: str | None = None) -> str:
        """The web app's page of a task (or of the workers)."""
        base = (self.config.api.web_server or "").rstrip("/")
        if not base:
            return ""
        return f"{base}/projects/*/experiments/{task_id}" if task_id else f"{base}/workers-and-queues/workers"

    def panel(self) -> Any:
        """The control panel widget (display it, or let the notebook show it as a cell's value)."""
        from notebook_agent.notebook.panel import Panel

        return Panel(self)

    def _repr_html_(self) -> str:
        from notebook_agent.notebook.html_card import status_card

        server = self.config.api.api_server if self._config is not None else ""
        return status_card(self.snapshot(), server=server, queues=tuple(self.queues))

    # helpers ------------------------------------------------------------------------------------------------
    def _require_worker(self) -> Worker:
        if self.worker is None:
            raise AgentError("the agent is not started: %agent start --queue NAME (or Agent(...).start())")
        return self.worker

    def _start_sampler(self) -> None:
        self._stop_sampling.clear()
        if self._sampler is not None and self._sampler.is_alive():
            return
        self._sampler = threading.Thread(target=self._sample_loop, name="notebook-agent-sampler", daemon=True)
        self._sampler.start()

    def _sample_loop(self) -> None:
        gpu = None if self.cpu_only else GpuMonitor()
        monitor = MachineMonitor(gpu=gpu if gpu is not None and gpu.open() else None)
        try:
            while True:
                try:
                    self.state.add_sample(monitor.sample())
                except Exception:
                    logger.debug("machine sample failed", exc_info=True)
                if self._stop_sampling.wait(SAMPLE_SEC) or not self.running:
                    break
        finally:
            monitor.close()


def _task_line(task: TaskView) -> str:
    name = f" {task.name!r}" if task.name else ""
    step = f" [{task.step}]" if task.running and task.step else ""
    reason = f" ({task.reason})" if task.reason and not task.running else ""
    return f"{task.task_id[:8]}{name} {task.phase.value}{step} {_duration(task.duration())}{reason}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _format_tree(tree: Mapping[str, Any], indent: int = 0) -> str:
    pad = "  " * indent
    out = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.append(f"{pad}{key} {{\n{_format_tree(value, indent + 1)}\n{pad}}}")
        else:
            out.append(f"{pad}{key}: {value!r}" if isinstance(value, str) else f"{pad}{key}: {value}")
    return "\n".join(out)


def _known_servers(config: Config | None, env: Mapping[str, str]) -> list[ApiConfig]:
    """The servers whose credentials we have without connecting (connecting may start an embedded server): the
    agent's configuration, clearml.conf and CLEARML_* of `env`, and the embedded server's own clearml.conf."""
    found = [config.api] if config is not None else []
    for path, source in ((None, env), (DEFAULT_DATA_DIR.expanduser() / "clearml.conf", {})):
        with contextlib.suppress(ConfigError, OSError):
            found.append(load_config(path, env=source).api)
    return found
