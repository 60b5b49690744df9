"""Runs one task end to end: mark it started, build its environment, run it, ship its log, report its end.

This module shows a task run's order; the steps themselves live in `environment`, `process`, `log_shipper`
and `abort_watch`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notebook_agent import api
from notebook_agent.api import APIError, TransportError
from notebook_agent.config import ApiConfig
from notebook_agent.engine import docker_launch, final_status, task_registry
from notebook_agent.engine.abort_watch import AbortWatch
from notebook_agent.engine.docker import DockerSettings
from notebook_agent.engine.events import EnvBuildStep, EventBus, TaskLogLines, TaskPhase, TaskPhaseChanged
from notebook_agent.engine.exit_status import ExitStatus
from notebook_agent.engine.log_delivery import EventDelivery
from notebook_agent.engine.log_shipper import LogShipper
from notebook_agent.engine.log_spool import DEFAULT_MAX_BYTES, LogSpool, spool_path
from notebook_agent.engine.process import TaskProcess
from notebook_agent.engine.task_env import task_environment, write_task_config
from notebook_agent.environment import BuildSettings, EnvironmentSetupError, PreparedEnvironment, prepare
from notebook_agent.environment.commands import run as run_command
from notebook_agent.environment.requirements import with_frozen

logger = logging.getLogger(__name__)

OUTPUT_DRAIN_SEC = 5.0
LOG_CLOSE_SLICE_SEC = 5.0  # while the server is down, how often the end of a task looks whether it must leave
STATUS_RETRY_SEC = 5.0  # between tries of a final status that did not reach the server


@dataclass(frozen=True)
class RunnerSettings:
    work_root: Path
    build: BuildSettings = field(default_factory=BuildSettings)
    grace_sec: float = 10.0  # SIGTERM to SIGKILL
    abort_poll_sec: float = 0.5  # the spec asks for at most 2 s; an abort then fits well inside grace + 2 s
    ping_sec: float = 30.0
    visible_devices: str | None = None
    keep_work_dirs: bool = False
    log_flush_sec: float = 1.0
    # container.setup_shell_script (or this default) runs before the build only when enabled: clearml-agent
    # runs it in docker mode, where it cannot touch the host.
    setup_script_enabled: bool = False
    default_setup_script: str = ""
    # Where the running task's pid file goes (`<state_dir>/running/<task_id>.json`, see task_registry); None: none.
    state_dir: Path | None = None
    # Docker mode (`--docker`): the task process is `docker run ...` and the agent inside the container builds the
    # environment (see engine/docker.py); None runs tasks in a venv on this host.
    docker: DockerSettings | None = None
    # agent.log_spool.max_bytes: a task's log lines waiting on disk (under state_dir) while the server is away.
    log_spool_max_bytes: int = DEFAULT_MAX_BYTES
    # The clearml.conf sections the task's SDK sees besides the api keys (task_env.task_config_sections).
    task_config: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class TaskOutcome:
    task_id: str
    phase: TaskPhase
    reason: str
    exit_code: int | None = None


class _Reporter:
    """The environment build's reporter: lines to the task log, steps to the event bus."""

    def __init__(self, runner: TaskRunner, task_id: str, shipper: LogShipper) -> None:
        self._runner, self._task_id, self._shipper = runner, task_id, shipper

    def log(self, line: str) -> None:
        self._runner._agent_lines(self._task_id, self._shipper, [line])

    def step(self, name: str, fraction: float | None = None, *, detail: str = "", seconds: float | None = None) -> None:
        self._runner.bus.publish(EnvBuildStep(self._task_id, name, fraction, detail, seconds))


class TaskRunner:
    """Runs tasks for a worker; `abort(task_id)` stops a running one from another thread.

    `run` may be called from several threads at once (task slots: services mode, dynamic GPUs): everything that
    belongs to one run is keyed by its task id (abort event and reason, abort watch, GPUs, work dir, log shipper);
    what is shared (session, settings, bus) is read-only or thread-safe.
    """

    def __init__(
        self,
        session: api.Session,
        api_config: ApiConfig,
        worker_id: str,
        settings: RunnerSettings,
        *,
        bus: EventBus | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.session = session
        self.api_config = api_config
        self.worker_id = worker_id
        self.settings = settings
        self.bus = bus or EventBus()
        self.base_env = dict(os.environ if base_env is None else base_env)
        self._lock = threading.Lock()
        self._aborts: dict[str, threading.Event] = {}
        self._abort_reasons: dict[str, str] = {}  # the status_reason an abort asked for (the first one wins)
        self._watches: dict[str, AbortWatch] = {}
        self._visible: dict[str, str | None] = {}  # per run: CUDA_VISIBLE_DEVICES (dynamic GPUs: the task's grant)
        self._leaving = threading.Event()  # the worker stops: an ended task's log and status need not wait here

    # public API -------------------------------------------------------------------------------------------
    def abort(self, task_id: str, reason: str = "user abort") -> bool:
        """Ask the running task `task_id` to stop, `reason` becoming its status_reason; False if it is not
        running here."""
        with self._lock:
            event = self._aborts.get(task_id)
            if event is not None:
                self._abort_reasons.setdefault(task_id, reason)
            watch = self._watches.get(task_id)
        if event is None:
            return False
        if watch is not None:
            watch.trigger(reason)  # before the event: the watch's own poll would call it a plain "user abort"
        event.set()
        return True

    def leave(self) -> None:
        """The worker is going away: tasks that ended while the server is unreachable stop waiting for it; their
        unsent log stays in the spool and their final status on disk, for the next load to deliver."""
        self._leaving.set()

    @property
    def running(self) -> list[str]:
        with self._lock:
            return list(self._aborts)

    def run(
        self,
        task_id: str,
        queue_id: str | None = None,
        *,
        pulled_message: str = "pulled by agent",
        visible_devices: str | None = None,
    ) -> TaskOutcome:
        """Run `task_id` to its end. `visible_devices`: the GPUs of this run (dynamic mode gives each task its
        grant); None keeps `settings.visible_devices` (the worker's --gpus / --cpu-only)."""
        local_abort = threading.Event()
        with self._lock:
            if task_id in self._aborts:
                raise ValueError(f"task {task_id} is already running here")
            self._aborts[task_id] = local_abort
            self._visible[task_id] = self.settings.visible_devices if visible_devices is None else visible_devices
        work_dir = self.settings.work_root / task_id
        shipper = self._shipper(task_id)
        shipper.start()
        try:
            return self._run(task_id, queue_id, pulled_message, work_dir, shipper, local_abort)
        except Exception as exc:
            # Whatever broke, the task must not stay in_progress forever, and the worker goes on.
            logger.exception("running task %s failed", task_id)
            reason = f"agent error: {type(exc).__name__}: {exc}"
            with contextlib.suppress(RuntimeError):  # the shipper may already be closed
                self._agent_lines(task_id, shipper, [reason])
            return self._finish(task_id, shipper, TaskPhase.FAILED, reason[:500])
        finally:
            if not shipper.close():  # already closed on the usual paths; this covers an error on the way
                shipper.abandon()  # what could not be sent waits in the spool for the next load
            task_registry.remove(self.settings.state_dir, task_id)  # the process has ended on every path here
            with self._lock:
                self._aborts.pop(task_id, None)
                self._abort_reasons.pop(task_id, None)
                self._watches.pop(task_id, None)
                self._visible.pop(task_id, None)
            if not self.settings.keep_work_dirs:
                shutil.rmtree(work_dir, ignore_errors=True)

    # steps ------------------------------------------------------------------------------------------------
    def _run(
        self,
        task_id: str,
        queue_id: str | None,
        pulled_message: str,
        work_dir: Path,
        shipper: LogShipper,
        local_abort: threading.Event,
    ) -> TaskOutcome:
        api.tasks.started(self.session, task_id, force=True, status_message=pulled_message)
        self._phase(task_id, TaskPhase.PULLED)
        origin = f" from {queue_id}" if queue_id else ""
        self._agent_lines(task_id, shipper, [f"task {task_id} pulled{origin} by worker {self.worker_id}"])
        task = api.tasks.get_by_id(self.session, task_id)

        self._phase(task_id, TaskPhase.BUILDING, task_name=str(task.get("name") or ""))
        work_dir.mkdir(parents=True, exist_ok=True)
        work_dir.chmod(0o700)  # a private repository's checkout and the task's credentials: this user's only
        if self.settings.docker is not None:
            return self._run_in_docker(task, self.settings.docker, work_dir, shipper, local_abort)
        config_file = write_task_config(work_dir / "clearml.conf", self.api_config, self.settings.task_config)
        env = task_environment(
            self.base_env,
            task_id=task_id,
            worker_id=self.worker_id,
            api=self.api_config,
            config_file=config_file,
            visible_devices=self._visible_devices(task_id),
        )
        try:
            reporter = _Reporter(self, task_id, shipper)
            self._setup_script(task, work_dir, env, reporter)
            prepared = prepare(task, work_dir, settings=self.settings.build, env=env, reporter=reporter)
        except EnvironmentSetupError as err:
            failed = f"Environment setup failed: {err.reason}"
            self._agent_lines(task_id, shipper, [*err.log_detail.splitlines(), failed])
            return self._finish(task_id, shipper, TaskPhase.FAILED, err.reason)
        try:
            return self._execute(task, prepared, env, shipper, local_abort)
        finally:
            if prepared.lease is not None:
                prepared.lease.close()  # the cached environment may be evicted once no task uses it

    def _run_in_docker(
        self, task: dict, settings: DockerSettings, work_dir: Path, shipper: LogShipper, local_abort: threading.Event
    ) -> TaskOutcome:
        """Docker mode: the task process is the `docker run` command, supervised like any task (log, abort,
        status); the agent in the container builds the environment and runs the task. An abort `docker stop`s the
        container first: with `docker run -t` a signal to the docker client does not reach it."""
        task_id = task["id"]
        launch = docker_launch.prepare_launch(
            task,
            settings,
            work_dir=work_dir,
            worker_id=self.worker_id,
            gpus=self._visible_devices(task_id),
            api_server=self.api_config.api_server,
            base_env=self.base_env,
            grace_sec=self.settings.grace_sec,
        )
        container = launch.container
        where = f"{'' if container.from_task else 'default '}docker: {container.image}"
        line = f"Running task {task_id} inside {where} arguments: {list(container.arguments)}"
        self._agent_lines(task_id, shipper, [line])
        if launch.pull is not None:
            pulled = run_command(launch.pull, cwd=work_dir, env=launch.env, reporter=_Reporter(self, task_id, shipper))
            if pulled.returncode != 0:
                reason = f"docker pull {container.image} failed with exit code {pulled.returncode}"
                self._agent_lines(task_id, shipper, [f"Environment setup failed: {reason}"])
                return self._finish(task_id, shipper, TaskPhase.FAILED, reason)
        prepared = PreparedEnvironment(
            python=Path(settings.docker), cwd=work_dir, argv=launch.argv, commit=None, frozen=[], requirements=""
        )
        stop_timeout = self.settings.grace_sec + docker_launch.STOP_EXTRA_SEC
        try:
            return self._execute(
                task, prepared, launch.env, shipper, local_abort, stop_first=lambda: launch.stop_container(stop_timeout)
            )
        except BaseException:
            launch.stop_container(stop_timeout)  # the container would outlive its docker client
            raise

    def _execute(
        self,
        task: dict,
        prepared: PreparedEnvironment,
        env: dict[str, str],
        shipper: LogShipper,
        local_abort: threading.Event,
        stop_first: Callable[[], None] | None = None,
    ) -> TaskOutcome:
        task_id = task["id"]
        if local_abort.is_set():
            return self._finish(task_id, shipper, TaskPhase.STOPPED, self._abort_reason(task_id))
        self._set_requirements(task, prepared.frozen)

        api.tasks.started(self.session, task_id, force=True, status_reason="worker starting task execution")
        self._phase(task_id, TaskPhase.RUNNING)
        self._agent_lines(task_id, shipper, [f"Starting task execution: {' '.join(prepared.argv)}"])

        def on_output(stream: str, lines: list[str]) -> None:
            shipper.add(stream, lines)
            self.bus.publish(TaskLogLines(task_id, stream, tuple(lines)))

        process = TaskProcess(prepared.argv, cwd=prepared.cwd, env={**env, **prepared.env}, on_output=on_output)
        process.start()
        # A pid file, so that the next kernel can reap the task if this one dies while it runs.
        api_server = self.api_config.api_server
        task_registry.register(self.settings.state_dir, task_id, self.worker_id, api_server, process.pid)
        watch = AbortWatch(
            self.session, task_id, local_abort, poll_sec=self.settings.abort_poll_sec, ping_sec=self.settings.ping_sec
        )
        with self._lock:
            self._watches[task_id] = watch
        watch.start()
        try:
            exit_code = self._wait(process, watch, task_id, local_abort, stop_first)
        finally:
            watch.close()
        return self._report_exit(task_id, shipper, exit_code, watch, process)

    def _wait(
        self,
        process: TaskProcess,
        watch: AbortWatch,
        task_id: str,
        local_abort: threading.Event,
        stop_first: Callable[[], None] | None = None,
    ) -> int | None:
        exited_at: float | None = None
        while True:
            code = process.wait(timeout=0.2)
            if code is not None:
                return code
            if process.poll() is not None:
                # The task exited but something it started still holds its pipes: give the output a few
                # seconds to drain, then report the task's own exit code.
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > OUTPUT_DRAIN_SEC:
                    return process.poll()
                continue
            if local_abort.is_set():
                watch.trigger(self._abort_reason(task_id))
            if watch.triggered.is_set():
                self._phase(task_id, TaskPhase.ABORTING, watch.reason)
                if stop_first is not None:
                    stop_first()  # docker mode: stop the container, then end its docker client
                return process.terminate_tree(self.settings.grace_sec)

    def _report_exit(
        self,
        task_id: str,
        shipper: LogShipper,
        exit_code: int | None,
        watch: AbortWatch,
        process: TaskProcess | None = None,
    ) -> TaskOutcome:
        if watch.triggered.is_set():
            self._agent_lines(task_id, shipper, ["Process aborted by user"])
            if watch.server_changed_status:
                # Someone else moved the task on (reset, enqueued, closed): leave its status alone.
                self._phase(task_id, TaskPhase.STOPPED, watch.reason, exit_code)
                return TaskOutcome(task_id, TaskPhase.STOPPED, watch.reason, exit_code)
            return self._finish(task_id, shipper, TaskPhase.STOPPED, watch.reason, exit_code)
        if exit_code == 0:
            self._agent_lines(task_id, shipper, ["Process completed successfully"])
            return self._finish(task_id, shipper, TaskPhase.COMPLETED, "worker execution done", exit_code)
        # A signal (SIGSEGV, SIGKILL, the OOM killer) is named: "exit code -9" alone tells a user nothing.
        status = process.exit_status(exit_code) if process is not None else ExitStatus(exit_code)
        how = status.describe()
        self._agent_lines(task_id, shipper, [f"Process failed, {how}"])
        return self._finish(task_id, shipper, TaskPhase.FAILED, f"worker execution {how}", exit_code)

    def _finish(
        self, task_id: str, shipper: LogShipper, phase: TaskPhase, reason: str, exit_code: int | None = None
    ) -> TaskOutcome:
        """Deliver the whole log, then the final status, each retried while the server is unreachable; both are
        kept on disk meanwhile, so that a worker stopped (or a process dying) first leaves them to the next load."""
        message = f"Changed by notebook-agent {self.worker_id}"
        pending = final_status.PendingStatus(
            task_id, self.worker_id, self.api_config.api_server, phase.value, reason, message
        )
        state_dir = self.settings.state_dir
        final_status.save(state_dir, pending)
        delivered = False
        try:
            # The whole log is on the server before the final status, so whoever sees the status sees every line.
            if self._deliver_log(task_id, shipper):
                delivered = self._deliver_status(pending)
        finally:
            final_status.release(state_dir, task_id, delivered=delivered)
        self._phase(task_id, phase, reason, exit_code)
        return TaskOutcome(task_id, phase, reason, exit_code)

    def _deliver_log(self, task_id: str, shipper: LogShipper) -> bool:
        """Send the rest of the log, for as long as the server is unreachable; False when the worker leaves first
        (the rest stays in the spool, the status must wait for it)."""
        while not shipper.close(timeout=LOG_CLOSE_SLICE_SEC):
            error = shipper.last_error
            outage = (
                error is None
                or isinstance(error, TransportError)
                or (isinstance(error, APIError) and error.code >= 500)
            )
            if not outage:
                # The server answered that it will not take these events (e.g. the task is gone), or sending them
                # broke here: retrying now would not help. They wait in the spool for the next load's replay.
                what = "were refused by the server" if isinstance(error, APIError) else "could not be sent"
                logger.warning("some log lines of task %s %s: %r", task_id, what, error)
                shipper.abandon()
                return True
            if self._leaving.is_set() and error is not None:
                kept = shipper.abandon()
                logger.warning(
                    "task %s: the server is unreachable (%s); its unsent log lines %s",
                    task_id,
                    error,
                    "wait in the spool for the next load" if kept else "are lost (no state dir for a spool)",
                )
                return False
            logger.info("task %s: the server is unreachable (%s); still sending its log", task_id, error)
        return True

    def _deliver_status(self, pending: final_status.PendingStatus) -> bool:
        """Report the final status until it lands; False when the worker leaves first (kept for the next load)."""
        while True:
            try:
                pending.send(self.session)
                return True
            except TransportError as err:
                logger.warning("task %s: final status %s not delivered yet: %s", pending.task_id, pending.status, err)
                if self._leaving.wait(STATUS_RETRY_SEC):
                    return False
            except APIError as err:
                # The task's own SDK may already have closed it; a forced write would hide what it said.
                logger.info("could not mark task %s %s: %s", pending.task_id, pending.status, err)
                return True

    def _shipper(self, task_id: str) -> LogShipper:
        """The task's log shipper: each event delivered once, waiting in a spool under state_dir while the server
        is away (none without a state dir)."""
        state_dir = self.settings.state_dir
        spool = None
        if state_dir is not None:
            meta = {"task_id": task_id, "worker_id": self.worker_id, "api_server": self.api_config.api_server}
            spool = LogSpool(spool_path(state_dir, task_id), max_bytes=self.settings.log_spool_max_bytes, meta=meta)
        return LogShipper(
            EventDelivery(self.session, task_id),
            task_id,
            self.worker_id,
            flush_interval=self.settings.log_flush_sec,
            spool=spool,
        )

    def _setup_script(self, task: dict, work_dir: Path, env: dict[str, str], reporter: _Reporter) -> None:
        script = (
            str((task.get("container") or {}).get("setup_shell_script") or "") or self.settings.default_setup_script
        )
        if not script.strip():
            return
        if not self.settings.setup_script_enabled:
            reporter.log("setup shell script skipped: set agent.enable_setup_shell_script to run it on this host")
            return
        reporter.step("setup script", 0.0)
        path = work_dir / "setup_shell_script.sh"
        path.write_text(script)
        done = run_command(["bash", str(path)], cwd=work_dir, env=env, reporter=reporter)
        if done.returncode != 0:
            raise EnvironmentSetupError(f"setup shell script failed with exit code {done.returncode}")

    def _set_requirements(self, task: dict, frozen: list[str]) -> None:
        requirements = with_frozen((task.get("script") or {}).get("requirements"), frozen)
        if requirements is None:
            return
        try:
            api.tasks.set_requirements(self.session, task["id"], requirements)
        except APIError as err:
            logger.info("could not store the frozen requirements of %s: %s", task["id"], err)

    # helpers ----------------------------------------------------------------------------------------------
    def _visible_devices(self, task_id: str) -> str | None:
        with self._lock:
            return self._visible.get(task_id, self.settings.visible_devices)

    def _abort_reason(self, task_id: str) -> str:
        with self._lock:
            return self._abort_reasons.get(task_id, "user abort")

    def _agent_lines(self, task_id: str, shipper: LogShipper, lines: list[str]) -> None:
        shipper.add("agent", lines)
        self.bus.publish(TaskLogLines(task_id, "agent", tuple(lines)))

    def _phase(
        self, task_id: str, phase: TaskPhase, reason: str = "", exit_code: int | None = None, task_name: str = ""
    ) -> None:
        self.bus.publish(TaskPhaseChanged(task_id, phase, reason, exit_code, task_name))
