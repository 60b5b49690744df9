"""The static HTML status card: the worker's state as plain HTML, for saved notebooks, nbconvert output and front
ends without widgets (the Agent's `_repr_html_`, and the panel's header)."""

from __future__ import annotations

import html
import time

from notebook_agent.engine.events import TaskPhase, WorkerState
from notebook_agent.masking import mask_url
from notebook_agent.notebook.state import Snapshot, TaskView

STATE_COLORS = {
    WorkerState.IDLE: "#2e7d32",
    WorkerState.RUNNING: "#1565c0",
    WorkerState.BUILDING: "#6a1b9a",
    WorkerState.STARTING: "#6d4c41",
    WorkerState.PAUSED: "#ef6c00",
    WorkerState.DRAINING: "#ef6c00",
    WorkerState.OFFLINE: "#757575",
}
PHASE_COLORS = {
    TaskPhase.COMPLETED: "#2e7d32",
    TaskPhase.FAILED: "#c62828",
    TaskPhase.STOPPED: "#757575",
}


def badge(text: str, color: str) -> str:
    return (
        f'<span style="background:{color};color:#fff;border-radius:8px;padding:1px 8px;font-size:90%">'
        f"{html.escape(text)}</span>"
    )


def task_row(task: TaskView, now: float | None = None) -> str:
    color = PHASE_COLORS.get(task.phase, "#1565c0")
    step = f" &middot; {html.escape(task.step)}" if task.running and task.step else ""
    reason = f'<br><span style="color:#666">{html.escape(task.reason)}</span>' if task.reason else ""
    return (
        "<tr>"
        f"<td><code>{html.escape(task.task_id[:8])}</code></td>"
        f"<td>{html.escape(task.name or '')}</td>"
        f"<td>{html.escape(task.queue or '')}</td>"
        f"<td>{badge(task.phase.value, color)}{step}{reason}</td>"
        f"<td style='text-align:right'>{task.duration(now):.0f} s</td>"
        "</tr>"
    )


def status_card(snapshot: Snapshot, *, server: str = "", queues: tuple[str, ...] = ()) -> str:
    """A self-contained HTML block (inline styles only) describing `snapshot`."""
    state = snapshot.state
    header = (
        f"<b>notebook-agent</b> {badge(state.value, STATE_COLORS.get(state, '#757575'))} "
        f"<code>{html.escape(snapshot.worker_id or 'not started')}</code>"
    )
    facts = []
    if server:
        facts.append(f"server <code>{html.escape(mask_url(server))}</code>")
    if queues:
        facts.append("queues " + ", ".join(f"<code>{html.escape(q)}</code>" for q in queues))
    if snapshot.started_at and state != WorkerState.OFFLINE:
        facts.append(f"up {time.time() - snapshot.started_at:.0f} s")
    if snapshot.cpu:
        facts.append(f"CPU {snapshot.cpu[-1]:.0f}%")
    for gpu in snapshot.gpus:
        util = f"{gpu.utilization[-1]:.0f}%" if gpu.utilization else "-"
        mem = f", {gpu.memory_used_mb[-1] / 1024:.1f} GiB" if gpu.memory_used_mb else ""
        facts.append(f"GPU{gpu.index} {util}{mem}")
    rows = "".join(task_row(t) for t in snapshot.tasks[:10])
    table = (
        "<table style='border-collapse:collapse;margin-top:4px'>"
        "<tr><th>task</th><th>name</th><th>queue</th><th>status</th><th>time</th></tr>"
        f"{rows}</table>"
        if rows
        else "<div style='color:#666'>no task has run here yet</div>"
    )
    error = f"<div style='color:#c62828'>{html.escape(snapshot.error)}</div>" if snapshot.error else ""
    return (
        "<div class='notebook-agent-card' style='border:1px solid #ddd;border-radius:6px;padding:6px 10px;"
        "font-family:sans-serif;font-size:13px'>"
        f"<div>{header}</div><div style='color:#444'>{' &middot; '.join(facts)}</div>{error}{table}</div>"
    )
