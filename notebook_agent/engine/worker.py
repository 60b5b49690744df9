"""The worker loop: lease an id, register, pull tasks from queues in order, run them, report, unregister."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from notebook_agent import api
from notebook_agent.api import APIError, TransportError
from notebook_agent.config import Config
from notebook_agent.engine.build_config import build_settings, strings
from notebook_agent.engine.docker import docker_settings
from notebook_agent.engine.events import EventBus, TaskPulled, WorkerListening, WorkerState, WorkerStateChanged
from notebook_agent.engine.gpu_allocator import GpuAllocator
from notebook_agent.engine.gpus import ALL, QueueNeed, gib_to_mib, gpus_have_free_memory, nvml_gpu_ids, parse_gpus
from notebook_agent.engine.log_spool import DEFAULT_MAX_BYTES
from notebook_agent.engine.pull_gate import PROPERTIES_EVERY_SEC, QUEUE_TAGS_EVERY_SEC, PullGate
from notebook_agent.engine.queue_lookup import resolve_queues
from notebook_agent.engine.queue_order import QueueOrder, QueueRef
from notebook_agent.engine.registration import Registration
from notebook_agent.engine.runner import RunnerSettings, TaskOutcome, TaskRunner
from notebook_agent.engine.schedule import Schedule
from notebook_agent.engine.slots import RunningSlot, SlotsSnapshot, TaskSlots
from notebook_agent.engine.stats_reporter import StatsReporter
from notebook_agent.engine.task_env import task_config_sections
from notebook_agent.engine.worker_id import lease_worker_id
from notebook_agent.environment.cache import VenvCache
from notebook_agent.masking import mask_url
from notebook_agent.monitor.nvml import GpuMonitor

logger = logging.getLogger(__name__)

STATE_DIR = Path("~/.notebook_agent").expanduser()
ARCHIVE_WAIT_SEC = 120.0  # on leaving, how long cache archives still being written may take
LONG_POLL_SEC = 20.0  # how long our embedded server may hold an empty get_next_task (woken on pause/stop/switches)
HOLD_WAIT_SEC = 1.0  # outside working hours (or forced off), how often the worker looks again


@dataclass
class WorkerOptions:
    """What `notebook-agent daemon` (and `%agent start`) is asked to do."""

    queues: list[str] = field(default_factory=list)
    order_fairness: bool = False
    create_queue: bool = False
    gpus: str | None = None
    cpu_only: bool = False
    # --dynamic-gpus: tasks side by side, each on the GPUs its queue asks for (queue name -> (min, max) GPUs,
    # keyed as `queues` names them), shared out of `gpus` by engine/gpu_allocator.py.
    dynamic_gpus: bool = False
    queue_gpus: dict[str, tuple[int, int]] = field(default_factory=dict)
    # --services-mode [N]: launch a task and go on pulling, at most N at once; 0: no limit (clearml-agent's
    # default); None: one task at a time (the default path).
    services_mode: int | None = None
    gpu_min_free_gb: float | None = None  # pull only while the GPUs have this free; None: agent.gpu_min_free_memory_gb
    poll_sec: float | None = None  # None: agent.queue_poll_freq_sec
    stop_when_idle: bool = False  # leave once every queue is empty (the demo)
    grace_sec: float = 10.0  # after SIGTERM, how long an aborted task may take before SIGKILL
    state_dir: Path = STATE_DIR
    # Working hours: one of the two, in "<hours> <days>" entries; given, they replace agent.uptime/downtime.
    uptime: list[str] | None = None
    downtime: list[str] | None = None
    force_check_sec: float = PROPERTIES_EVERY_SEC  # how often the runtime property `force` is read
    queue_tags_check_sec: float = QUEUE_TAGS_EVERY_SEC  # how often the queues' force_workers tags are read
    # --docker [IMAGE [ARGS...]]: run each task in a container (engine/docker.py); None: in a venv on this host.
    docker: list[str] | None = None
    force_current_version: bool = False  # --force-current-version: accepted; the container always gets ours


def schedule_for(config: Config, options: WorkerOptions) -> Schedule:
    """--uptime/--downtime when given (the command line overrides the file), else agent.uptime/agent.downtime.

    Raises ScheduleError for a malformed entry or for both uptime and downtime (clearml-agent ignores both).
    """
    if options.uptime or options.downtime:
        return Schedule.parse(options.uptime, options.downtime)
    return Schedule.parse(strings(config.agent("uptime", [])), strings(config.agent("downtime", [])))


class Worker:
    """One ClearML worker. `run()` blocks (the CLI); `start()` runs it in a daemon thread (the notebook)."""

    def __init__(
        self,
        config: Config,
        options: WorkerOptions,
        *,
        session: api.Session | None = None,
        bus: EventBus | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.bus = bus or EventBus()
        self.session = session or api.Session.from_config(config.api)
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.state = WorkerState.OFFLINE
        self.state_detail = ""  # why the worker is in its state, e.g. "outside working hours (uptime 8-18 MON-FRI)"
        self.worker_id = ""
        self.gpu_ids: list[str] = []  # --gpus as ids (CUDA_VISIBLE_DEVICES of every task), set by run()
        self.queues: list[QueueRef] = []
        self._current: tuple[str, QueueRef] | None = None
        self.outcomes: list[TaskOutcome] = []
        self._stop = threading.Event()
        self._drain = False
        self._stop_reason = "user abort"
        self._resume = threading.Event()
        self._resume.set()
        self._thread: threading.Thread | None = None
        self._runner: TaskRunner | None = None
        self._reporter: StatsReporter | None = None
        self._long_poll = False
        self._gate: PullGate | None = None
        self._gpu_monitor: GpuMonitor | None = None
        # Several tasks at once (services mode, dynamic GPUs); None on the one-task path. Set by run().
        self._slots: TaskSlots | None = None
        self._allocator: GpuAllocator | None = None
        self._need_names: dict[str, str] = {}  # dynamic mode: queue id -> its name in queue_gpus
        self.registration = Registration(self._register, self._stop.is_set)
        self.error: BaseException | None = None

    @property
    def current(self) -> tuple[str, QueueRef] | None:
        """The running task and its queue; with task slots the first one running (status reports name one task,
        as clearml-agent's do)."""
        if self._slots is not None:
            running = self._slots.running
            if not running:
                return None
            first = running[0]
            return first.task_id, next((q for q in self.queues if q.id == first.queue_id), QueueRef(first.queue_id, ""))
        return self._current

    @current.setter
    def current(self, value: tuple[str, QueueRef] | None) -> None:
        self._current = value

    def slots_snapshot(self) -> SlotsSnapshot:
        """The tasks running side by side (and in dynamic mode which GPU runs what), for the worker card."""
        running = tuple(self._slots.running) if self._slots is not None else ()
        if self._slots is None and self._current is not None:
            running = (RunningSlot(self._current[0], self._current[1].id),)
        capacity = self._slots.capacity if self._slots is not None else 1
        gpus = self._allocator.snapshot() if self._allocator is not None else None
        return SlotsSnapshot(running=running, capacity=capacity, gpus=gpus)

    # control (any thread) -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_guarded, name="notebook-agent-worker", daemon=True)
        self._thread.start()

    def stop(self, drain: bool = False, timeout: float | None = None, reason: str = "user abort") -> None:
        """Leave: after the running task ends (`drain`), or now, aborting it (`reason`: its status_reason)."""
        self._drain = drain
        self._stop_reason = reason
        if drain and self.current is not None:
            self._set_state(WorkerState.DRAINING)
        self._stop.set()
        self._resume.set()
        if self._slots is not None:
            self._slots.wake()
        if not drain and self._runner is not None:
            self._runner.leave()  # an ended task does not wait here for an unreachable server (see runner._finish)
            for task_id in self._runner.running:
                self._runner.abort(task_id, reason)
        if self._long_poll and self.current is None:
            self._end_long_poll(leaving=True)
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def pause(self) -> None:
        """Stop pulling new tasks (the running one goes on)."""
        self._resume.clear()
        if self._slots is not None:
            self._slots.wake()
        if self._long_poll:
            self._end_long_poll(leaving=False)

    def _end_long_poll(self, leaving: bool) -> None:
        """Our server ends a worker's pending long poll when that worker reports or unregisters."""
        try:
            if leaving:
                api.workers.unregister(self.session, self.worker_id)
            elif self._reporter is not None:
                self._reporter.report_now()
        except APIError as err:
            logger.info("could not wake the pending poll: %s", err)

    def resume(self) -> None:
        self._resume.set()

    def abort(self, task_id: str) -> bool:
        return self._runner.abort(task_id) if self._runner is not None else False

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # the loop -----------------------------------------------------------------------------------------
    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # the notebook shows it; the kernel thread must not die loudly
            self.error = exc
            logger.exception("worker stopped by an error")

    def run(self) -> None:
        schedule = schedule_for(self.config, self.options)  # a bad entry fails before anything is registered
        self.gpu_ids = self._gpu_ids()
        lease = lease_worker_id(
            self.options.state_dir / "worker-ids",
            explicit_id=str(self.config.agent("worker_id", "") or ""),
            name=str(self.config.agent("worker_name", "") or ""),
            gpus=",".join(self.gpu_ids) or None,
            cpu_only=self.options.cpu_only,
            dynamic_gpus=self.options.dynamic_gpus,
        )
        self.worker_id = lease.worker_id
        self.session.worker = self.worker_id
        self._set_state(WorkerState.STARTING)
        registered = False
        try:
            self.queues = resolve_queues(self.session, self.options.queues, create=self.options.create_queue)
            order = QueueOrder(self.queues, fairness=self.options.order_fairness)
            self._register()
            registered = True
            self._publish_services_limit()
            self._publish_listening()
            self._long_poll = bool(self.session.claim(api.queues.LONG_POLL_CLAIM)) and not self.options.stop_when_idle
            self._make_slots()
            self._gate = self._make_gate(schedule)
            self._runner = self._make_runner()
            freq = float(self.config.agent("status_report_freq_sec", 30))
            self._reporter = StatsReporter(self, freq, self.bus, on_error=self.registration.failed)
            self._reporter.start()
            try:
                self._loop(order, self._reporter)
            except BaseException:
                self._abort_slots("agent error: the worker loop failed")
                raise
            finally:
                self._join_slots()
        finally:
            if self._reporter is not None:
                self._reporter.close()
            if registered:
                try:
                    api.workers.unregister(self.session, self.worker_id)
                except APIError as err:
                    logger.warning("could not unregister %s: %s", self.worker_id, err)
            lease.close()
            if self._gpu_monitor is not None:
                self._gpu_monitor.close()
            # A cache entry still being archived (to a mounted Drive) would be lost with the process.
            if not VenvCache.wait_for_archives(ARCHIVE_WAIT_SEC):
                logger.warning("venv cache archives still uploading after %.0f s; leaving them", ARCHIVE_WAIT_SEC)
            self._set_state(WorkerState.OFFLINE)

    def _register(self) -> None:
        """Register (again, when the server forgot us: see engine/registration.py) with our queues."""
        api.workers.register(
            self.session,
            self.worker_id,
            queues=[q.id for q in self.queues],
            timeout=max(1, round(float(self.config.agent("worker_registration_timeout_sec", 600)))),
        )

    def _gpu_ids(self) -> list[str]:
        """--gpus as ids (`0-3` -> 0,1,2,3; `all` through NVML)."""
        if self.options.dynamic_gpus and self.options.services_mode is not None:
            raise NotImplementedError("--services-mode with --dynamic-gpus is not supported; use one of them")
        if self.options.dynamic_gpus and (self.options.cpu_only or not self.options.gpus):
            raise ValueError("--dynamic-gpus needs the GPUs to share out, e.g. --gpus 0-7 (and no --cpu-only)")
        if self.options.cpu_only or not self.options.gpus:
            return []
        available = None  # the CLI checked the ids against NVML already; only `all` needs the list here
        if self.options.gpus.strip().lower() == ALL:
            monitor = GpuMonitor()
            try:
                available = nvml_gpu_ids(monitor)
            finally:
                monitor.close()
        ids = parse_gpus(self.options.gpus, available)
        if self.options.dynamic_gpus:
            self._allocator = self._make_allocator(ids)
        return ids

    def _make_allocator(self, gpu_ids: list[str]) -> GpuAllocator:
        """--dynamic-gpus: the pool and each queue's need, checked before an id is leased (a ValueError says why)."""
        missing = [q for q in self.options.queues if q not in self.options.queue_gpus]
        if missing or not self.options.queues:
            raise ValueError(f"--dynamic-gpus: give each queue its GPU count, e.g. --queue {(missing or ['q'])[0]}=2")
        needs = [QueueNeed(name, low, high) for name, (low, high) in self.options.queue_gpus.items()]
        return GpuAllocator(gpu_ids, needs)

    def _make_runner(self) -> TaskRunner:
        visible = "" if self.options.cpu_only else (",".join(self.gpu_ids) or None)
        settings = RunnerSettings(
            work_root=Path(tempfile.gettempdir()) / "notebook-agent" / self.worker_id.replace(":", "_"),
            build=build_settings(self.config),
            task_config=task_config_sections(self.config.tree),
            visible_devices=visible,
            grace_sec=self.options.grace_sec,
            setup_script_enabled=bool(self.config.agent("enable_setup_shell_script", False)),
            default_setup_script=str(self.config.agent("default_setup_shell_script", "") or ""),
            state_dir=self.options.state_dir,
            log_spool_max_bytes=int(self.config.agent("log_spool.max_bytes", DEFAULT_MAX_BYTES)),
            docker=None
            if self.options.docker is None
            else docker_settings(
                self.config,
                self.options.docker,
                env=self.base_env,
                force_current_version=self.options.force_current_version,
            ),
        )
        return TaskRunner(self.session, self.config.api, self.worker_id, settings, bus=self.bus, base_env=self.base_env)

    def _poll_sec(self) -> float:
        if self.options.poll_sec is not None:
            return self.options.poll_sec
        return float(self.config.agent("queue_poll_freq_sec", 0.25))

    def _loop(self, order: QueueOrder, reporter: StatsReporter) -> None:
        if self._slots is not None:
            self._slot_loop(order, reporter)
            return
        while not self._stop.is_set():
            if not self._resume.is_set():
                self._set_state(WorkerState.PAUSED)
                self._resume.wait()
                continue
            self.registration.renew()  # after an outage the server may have let the worker go
            queues, held = self._open_queues(order)
            if held:
                self._set_state(WorkerState.IDLE, held)
                self._hold_wait()
                if self._long_poll and self._gate is not None:
                    # No wait is pending on the server to end when a switch flips: look at every hold cycle.
                    self._gate.invalidate()
                continue
            self._set_state(WorkerState.IDLE)
            try:
                pulled = self._pull(order, queues)
            except TransportError as err:
                self.registration.failed(err)
                logger.warning("cannot reach the server: %s", err)
                self._stop.wait(min(5.0, max(self._poll_sec(), 1.0)))
                continue
            if pulled is self._pull_again:
                if self._gate is not None:
                    self._gate.invalidate()  # the wait may have ended because a force switch changed
                continue
            if pulled is None:
                if self.options.stop_when_idle:
                    return
                self._stop.wait(self._poll_sec())
                continue
            task_id, queue = pulled
            order.took(queue)
            self._run_task(task_id, queue, reporter)

    def _pull(self, order: QueueOrder, queues: list[QueueRef] | None = None) -> tuple[str, QueueRef] | None:
        queues = order.round() if queues is None else queues
        for queue in queues:
            entry = api.queues.get_next_task(self.session, queue.id)
            if entry is not None:
                return entry.task, queue
        if self._long_poll and not self._stop.is_set() and self._resume.is_set():
            # Wait on the server until any of our queues gets a task; an answer for another queue comes
            # back empty and the next round (in priority order) picks it up at once.
            watch = [q.id for q in queues]
            wait_sec = LONG_POLL_SEC
            entry = api.queues.get_next_task(self.session, queues[0].id, wait_sec=wait_sec, watch=watch)
            if entry is not None:
                return entry.task, queues[0]
            return self._pull_again
        return None

    # a sentinel of _pull: the long poll ended without a task for its queue; poll the round again now
    _pull_again: tuple[str, QueueRef] = ("", QueueRef("", ""))

    def _run_task(self, task_id: str, queue: QueueRef, reporter: StatsReporter) -> None:
        assert self._runner is not None
        self.current = (task_id, queue)
        self.bus.publish(TaskPulled(task_id, queue.id, queue.name))
        self._set_state(WorkerState.DRAINING if self._drain and self._stop.is_set() else WorkerState.RUNNING)
        reporter.report_now()
        try:
            outcome = self._runner.run(task_id, queue.id)
            self.outcomes.append(outcome)
        except APIError as err:
            logger.error("task %s could not be run: %s", task_id, err)
        finally:
            self.current = None
            reporter.report_now()

    # task slots: several tasks at once (services mode, dynamic GPUs) -----------------------------------------
    def _make_slots(self) -> None:
        """Task slots for --services-mode [N] or --dynamic-gpus; none (the one-task loop) otherwise."""
        if self._allocator is not None:  # --dynamic-gpus (made by _gpu_ids)
            self._need_names = {ref.id: name for name, ref in zip(self.options.queues, self.queues, strict=False)}
            self._slots = TaskSlots(None)  # the GPUs are the limit
        elif self.options.services_mode is not None:
            self._slots = TaskSlots(self.options.services_mode or None)
        else:
            return
        # A long poll would hold the loop on the server while a slot frees; tasks finishing must wake it at once.
        self._long_poll = False

    def _join_slots(self) -> None:
        """Wait for every slot: drained, or aborted by stop(). A task launched just as stop(drain=False) aborted
        the others would run on, so the abort is repeated until all have ended."""
        if self._slots is None:
            return
        while not self._slots.join(timeout=0.5):
            if self._stop.is_set() and not self._drain:
                self._abort_slots(self._stop_reason)

    def _abort_slots(self, reason: str) -> None:
        if self._slots is not None and self._runner is not None:
            for task_id in self._runner.running:
                self._runner.abort(task_id, reason)

    def _slot_loop(self, order: QueueOrder, reporter: StatsReporter) -> None:
        """Pull while a slot is free; each task runs in its own slot thread, supervised as on the one-task path."""
        slots = self._slots
        assert slots is not None
        while not self._stop.is_set():
            if not self._resume.is_set():
                self._set_state(WorkerState.PAUSED)
                self._resume.wait()
                continue
            if not slots.has_room():
                self._set_state(WorkerState.RUNNING)
                slots.wait_change(1.0)
                continue
            self.registration.renew()
            queues, held = self._open_queues(order)
            busy = WorkerState.RUNNING if slots.running else WorkerState.IDLE
            if held:
                self._set_state(busy, held)
                self._hold_wait()
                continue
            self._set_state(busy)
            try:
                pulled = self._pull_slot(order, queues)
            except TransportError as err:
                self.registration.failed(err)
                logger.warning("cannot reach the server: %s", err)
                self._stop.wait(min(5.0, max(self._poll_sec(), 1.0)))
                continue
            if pulled is None:
                if self.options.stop_when_idle and not slots.running:
                    return
                # Nothing to start now: in dynamic mode the GPUs may be busy, so a task ending is worth a look.
                slots.wait_change(max(self._poll_sec(), 0.05))
                continue
            task_id, queue, visible = pulled
            order.took(queue)
            self._launch(task_id, queue, visible, reporter)

    def _pull_slot(self, order: QueueOrder, queues: list[QueueRef]) -> tuple[str, QueueRef, str | None] | None:
        """The next task and its GPUs (dynamic mode: the allocator's grant; else the worker's --gpus)."""
        if self._allocator is None:
            pulled = self._pull(order, queues)  # no long poll with slots, so never _pull_again
            return None if pulled is None else (pulled[0], pulled[1], None)
        by_name = {self._need_names[q.id]: q for q in queues if q.id in self._need_names}

        def has_task(name: str) -> bool:
            # The waiting line may name a queue that is closed this round (force switches): it leaves the line.
            ref = by_name.get(name)
            return ref is not None and bool(api.queues.get_by_id(self.session, ref.id).get("entries"))

        def pop(name: str) -> str | None:
            entry = api.queues.get_next_task(self.session, by_name[name].id)
            return entry.task if entry is not None else None

        grant = self._allocator.pull(list(by_name), has_task, pop)
        return None if grant is None else (grant.task_id, by_name[grant.queue], grant.visible_devices)

    def _launch(self, task_id: str, queue: QueueRef, visible: str | None, reporter: StatsReporter) -> None:
        assert self._slots is not None and self._runner is not None
        runner, allocator = self._runner, self._allocator
        gpus = tuple(visible.split(",")) if visible is not None and allocator is not None else ()

        def work() -> None:
            reporter.report_now()
            try:
                self.outcomes.append(runner.run(task_id, queue.id, visible_devices=visible))
            except APIError as err:
                logger.error("task %s could not be run: %s", task_id, err)

        def on_end() -> None:
            if allocator is not None and gpus:
                allocator.release(gpus)  # the GPUs go back whatever happened to the task

        self.bus.publish(TaskPulled(task_id, queue.id, queue.name, gpus=",".join(gpus)))
        self._slots.launch(RunningSlot(task_id, queue.id, visible), work, on_end, on_freed=reporter.report_now)
        self._set_state(WorkerState.DRAINING if self._drain and self._stop.is_set() else WorkerState.RUNNING)

    def _publish_services_limit(self) -> None:
        """Services mode's limit as the worker's `max_num_instances` runtime property, where clearml-agent keeps it
        (tools read it there); a server without runtime properties just does not get it."""
        limit = self.options.services_mode
        if limit is None:
            return
        try:
            prop = {"key": "max_num_instances", "value": str(limit if limit > 0 else -1)}
            api.workers.set_runtime_properties(self.session, self.worker_id, [prop])
        except APIError as err:
            logger.info("services mode limit not stored as a runtime property: %s", err)

    def _publish_listening(self) -> None:
        needs = self.options.queue_gpus or {}
        gpus = []
        for given, ref in zip(self.options.queues, self.queues, strict=False):
            if given in needs:
                low, high = needs[given]
                gpus.append((ref.name or ref.id, f"{low}" if low == high else f"{low}-{high}"))
        self.bus.publish(
            WorkerListening(
                self.worker_id,
                tuple(q.name or q.id for q in self.queues),
                mask_url(self.session.base_url),
                fairness=self.options.order_fairness,
                gpus=tuple(gpus),
                services_limit=self.options.services_mode,
            )
        )

    def _set_state(self, state: WorkerState, detail: str = "") -> None:
        if state is self.state and detail == self.state_detail:
            return
        previous, self.state, self.state_detail = self.state, state, detail
        self.bus.publish(WorkerStateChanged(self.worker_id, state, previous, detail))

    # working hours and force switches (engine/schedule.py decides, engine/pull_gate.py reads the server) ----
    def _make_gate(self, schedule: Schedule) -> PullGate:
        # Our embedded server ends a pending long poll when the worker's runtime properties or a queue's tags
        # change, so a wait that ends without a task makes the gate read them again (see _loop), as does each
        # cycle of a hold; while tasks keep coming (a backlog) they are read when stale, as without long polls.
        return PullGate(
            self.session,
            self.worker_id,
            schedule,
            properties_every=self.options.force_check_sec,
            tags_every=self.options.queue_tags_check_sec,
        )

    def _open_queues(self, order: QueueOrder) -> tuple[list[QueueRef], str]:
        """This round's queues that may be pulled from now; when none, why not (the idle state's detail)."""
        short = self._gpu_memory_short()
        if short:
            return [], f"waiting for free GPU memory: {short}"
        if self._gate is None:
            return order.round(), ""
        return self._gate.open_queues(order.round())

    def _gpu_memory_short(self) -> str:
        """Why the assigned GPUs lack the configured free memory (--gpu-min-free-gb, agent.gpu_min_free_memory_gb:
        on Colab the notebook shares the GPU), else "". Unmeasurable GPUs never hold the worker back."""
        min_free = self.options.gpu_min_free_gb
        if min_free is None:
            min_free = float(self.config.agent("gpu_min_free_memory_gb", 0) or 0)
        if min_free <= 0 or self.options.cpu_only:
            return ""
        if self._gpu_monitor is None:
            self._gpu_monitor = GpuMonitor()
        enough, why = gpus_have_free_memory(self._gpu_monitor, self.gpu_ids, gib_to_mib(min_free))
        return "" if enough else why

    def _hold_wait(self) -> None:
        """Idle by schedule or a force switch: wait a little, in slices, so stop() and pause() end it at once."""
        deadline = time.monotonic() + HOLD_WAIT_SEC
        while not self._stop.is_set() and self._resume.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 0.2))
