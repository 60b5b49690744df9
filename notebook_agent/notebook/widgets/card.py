"""The worker card at the top of the panel: worker id and state, server and web-app links, queues, the current
task with its link, uptime and the last error. Plain HTML, so it is one comm message when it changes."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from notebook_agent.engine.events import WorkerState
from notebook_agent.masking import mask_url
from notebook_agent.notebook.html_card import PHASE_COLORS, STATE_COLORS, badge
from notebook_agent.notebook.state import Snapshot
from notebook_agent.notebook.widgets.common import format_duration


@dataclass(frozen=True)
class ServerInfo:
    """Which server the agent uses (or will), learnt without starting anything."""

    api_server: str = ""
    web_server: str = ""
    source: str = ""  # where the settings come from, for the Connect section
    embedded: bool = False  # the local embedded server (started, or to be started at the next use)
    error: str = ""  # a clearml.conf that cannot be read

    @property
    def configured(self) -> bool:
        return bool(self.api_server) or self.embedded


def link(url: str, text: str) -> str:
    """An anchor opening in a new tab; the address is masked (a password in a URL never reaches the page)."""
    shown = mask_url(url)
    if not shown.startswith(("http://", "https://")):
        return html.escape(text)
    return f"<a href='{html.escape(shown, quote=True)}' target='_blank'>{html.escape(text)}</a>"


def _state_badge(snapshot: Snapshot, paused: bool) -> str:
    state = snapshot.state
    label = state.value
    if paused and state not in (WorkerState.PAUSED, WorkerState.OFFLINE):
        label += ", pausing after this task"  # the worker shows PAUSED only between tasks
    return badge(label, STATE_COLORS.get(state, "#757575"))


def worker_card(
    snapshot: Snapshot,
    server: ServerInfo,
    *,
    queues: Sequence[str],
    paused: bool,
    web_url: Callable[[str | None], str] | None,
    now: float,
) -> str:
    """The card's HTML; `web_url` is the agent's (None while no server is connected: no links yet)."""
    head = [
        "<b>ClearML agent</b>",
        _state_badge(snapshot, paused),
        f"<code>{html.escape(snapshot.worker_id or 'not started')}</code>",
    ]
    if snapshot.started_at and snapshot.state != WorkerState.OFFLINE:
        head.append(f"up {format_duration(now - snapshot.started_at)}")
    if snapshot.detail:
        head.append(f"<span style='color:#666'>{html.escape(snapshot.detail)}</span>")

    if server.api_server:
        where = f"server <code>{html.escape(mask_url(server.api_server))}</code>"
        if server.embedded:
            where += " (embedded)"
        workers = web_url(None) if web_url is not None else ""
        if workers:
            where += " &middot; " + link(workers, "workers in the web app")
        elif server.web_server:
            where += " &middot; " + link(server.web_server, "web app")
    elif server.embedded:
        where = "the embedded server starts with the agent"
    elif server.error:
        where = f"<span style='color:#c62828'>clearml.conf: {html.escape(server.error)}</span>"
    else:
        where = "<span style='color:#ef6c00'>no ClearML server configured: see Connect</span>"
    lines = [" ".join(head), where]
    if queues:
        order = " &gt; ".join(f"<code>{html.escape(q)}</code>" for q in queues)
        verb = "pulling from" if snapshot.state == WorkerState.IDLE else "queues"
        lines.append(f"{verb} {order}" + (" (first has priority)" if len(queues) > 1 else ""))

    # Every running task: one normally, several in services mode or with dynamic GPUs (each on its own GPUs).
    for task in (t for t in snapshot.tasks if t.running):
        url = web_url(task.task_id) if web_url is not None else ""
        name = html.escape(task.name or task.task_id[:8])
        title = link(url, task.name or task.task_id[:8]) if url else name
        step = f" &middot; {html.escape(task.step)}" if task.step else ""
        gpus = f" &middot; GPUs {html.escape(task.gpus)}" if task.gpus else ""
        color = PHASE_COLORS.get(task.phase, "#1565c0")
        lines.append(
            f"task {title} <code>{html.escape(task.task_id[:8])}</code> {badge(task.phase.value, color)}"
            f"{step}{gpus} &middot; {format_duration(task.duration(now))}"
        )
    if snapshot.error:
        lines.append(f"<span style='color:#c62828'>{html.escape(snapshot.error)}</span>")
    body = "".join(f"<div>{line}</div>" for line in lines)
    return (
        "<div class='notebook-agent-card' style='border:1px solid #ddd;border-radius:6px;padding:6px 10px;"
        f"font-family:sans-serif;font-size:13px;line-height:1.6'>{body}</div>"
    )
