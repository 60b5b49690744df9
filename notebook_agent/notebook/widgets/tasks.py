"""The tasks section: a table of the running and recent tasks, and one tab per task (at most MAX_TABS) with its
build progress, the tail of its log and an Abort button. Tab pages are kept and reused, never rebuilt."""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as w

from notebook_agent.engine.events import TaskPhase
from notebook_agent.masking import mask_url
from notebook_agent.notebook.html_card import PHASE_COLORS, badge, task_row
from notebook_agent.notebook.state import Snapshot, TaskView
from notebook_agent.notebook.widgets.common import Report, assign, close_all, format_duration, reporter, show

MAX_TABS = 8  # the newest tasks; older ones stay in the table and in the ClearML web app
LOG_LINES = 200  # shown per task; the state keeps more and the server keeps the whole log
TITLE_CHARS = 18

# column-reverse keeps a scrolling box pinned to its end (the newest line) without any JavaScript.
_LOG_BOX = (
    "<div style='max-height:320px;overflow-y:auto;display:flex;flex-direction:column-reverse;"
    "border:1px solid #ddd;border-radius:4px;background:#fafafa'>"
    "<pre style='margin:0;padding:4px 6px;font-size:12px;line-height:1.35;white-space:pre-wrap;"
    "word-break:break-all'>{}</pre></div>"
)
NO_TASKS = "<div style='color:#666'>No task has run here yet: enqueue one in the ClearML web app.</div>"

WebUrl = Callable[[str], str]
AbortHandler = Callable[[str, Report], None]


def log_html(lines: tuple[str, ...] | list[str]) -> str:
    """The last LOG_LINES lines, escaped: a task's output is text, never markup."""
    text = "\n".join(lines[-LOG_LINES:]) if lines else "(no output yet)"
    return _LOG_BOX.format(html.escape(text))


def tab_title(task: TaskView) -> str:
    name = task.name or task.task_id[:8]
    if len(name) > TITLE_CHARS:
        name = name[: TITLE_CHARS - 1] + "\u2026"
    return ("\u25b6 " if task.running else "") + name


def _header(task: TaskView, web_url: WebUrl | None, now: float) -> str:
    color = PHASE_COLORS.get(task.phase, "#1565c0")
    parts = [f"<b>{html.escape(task.name)}</b>"] if task.name else []
    parts += [f"<code>{html.escape(task.task_id)}</code>", badge(task.phase.value, color)]
    if task.queue:
        parts.append(f"queue <code>{html.escape(task.queue)}</code>")
    parts.append(format_duration(task.duration(now)))
    if task.exit_code is not None and not task.running:
        parts.append(f"exit code {task.exit_code}")
    url = web_url(task.task_id) if web_url is not None else ""
    if url:
        parts.append(f"<a href='{html.escape(mask_url(url), quote=True)}' target='_blank'>open in the web app</a>")
    reason = f"<div style='color:#666'>{html.escape(task.reason)}</div>" if task.reason else ""
    return " &middot; ".join(parts) + reason


class TaskPage:
    """One task's tab page; `render` sets only what changed, so a quiet task costs no comm traffic."""

    def __init__(self, on_abort: AbortHandler) -> None:
        self.task_id = ""
        self.header = w.HTML()
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="build", bar_style="info")
        self.step = w.Label()
        self.log = w.HTML()
        self.abort = w.Button(description="Abort", button_style="danger", tooltip="abort this task")
        self.note = w.HTML()
        self.box = w.VBox(
            [
                self.header,
                w.HBox([self.progress, self.step]),
                self.log,
                w.HBox([self.abort, self.note]),
            ]
        )
        self._log_key: tuple[str, int] | None = None
        self._on_abort = on_abort
        self.abort.on_click(self._clicked)

    def render(self, task: TaskView, web_url: WebUrl | None, now: float) -> None:
        if task.task_id != self.task_id:  # a reused page: forget the previous task's message
            self.task_id = task.task_id
            assign(self.note, "value", "")
        assign(self.header, "value", _header(task, web_url, now))
        building = task.fraction is not None or bool(task.step)
        show(self.progress, building)
        show(self.step, building)
        if building:
            fraction = task.fraction if task.fraction is not None else 0.0
            assign(self.progress, "value", round(min(max(fraction, 0.0), 1.0), 3))
            assign(self.progress, "bar_style", "success" if fraction >= 1.0 else "info")
            step = f"{task.step}: {task.step_detail}" if task.step_detail else task.step
            assign(self.step, "value", step)
        key = (task.task_id, task.log_lines)
        if key != self._log_key:  # log_lines only grows, so an equal count means an equal tail
            self._log_key = key
            assign(self.log, "value", log_html(task.log_tail))
        show(self.abort, task.running)
        aborting = task.phase == TaskPhase.ABORTING
        assign(self.abort, "disabled", aborting)
        assign(self.abort, "description", "Aborting\u2026" if aborting else "Abort")

    def _clicked(self, _button: w.Button) -> None:
        if self.task_id:
            self._on_abort(self.task_id, reporter(self.note))


class TasksView:
    """The table of tasks and a Tab of TaskPages: oldest tab left, newest right, the selection kept."""

    def __init__(self, on_abort: AbortHandler) -> None:
        self.summary = w.HTML(NO_TASKS)
        self.tabs = w.Tab()
        self.box = w.VBox([self.summary, self.tabs])
        self._on_abort = on_abort
        self._pages: dict[str, TaskPage] = {}  # the pages in the Tab, by task id
        self._spare: list[TaskPage] = []  # pages of tasks that left the Tab, for the next new task
        self._order: tuple[str, ...] = ()
        self._seen: set[str] = set()
        show(self.tabs, False)

    def render(self, snapshot: Snapshot, web_url: WebUrl | None, now: float) -> None:
        if snapshot.tasks:
            rows = "".join(task_row(t, now) for t in snapshot.tasks[:10])
            table = (
                "<table style='border-collapse:collapse;font-size:12px'>"
                "<tr><th>task</th><th>name</th><th>queue</th><th>status</th><th>time</th></tr>"
                f"{rows}</table>"
            )
        else:
            table = NO_TASKS
        assign(self.summary, "value", table)
        shown = self._shown(snapshot)
        new_running = [t.task_id for t in shown if t.task_id not in self._seen and t.running]
        self._seen.update(t.task_id for t in shown)
        self._place(shown)
        for task in shown:
            self._pages[task.task_id].render(task, web_url, now)
        for index, task in enumerate(shown):
            title = tab_title(task)
            if self.tabs.get_title(index) != title:
                self.tabs.set_title(index, title)
        if new_running:  # follow a newly pulled task; otherwise the user's choice stays
            assign(self.tabs, "selected_index", self._order.index(new_running[-1]))
        show(self.tabs, bool(shown))

    @staticmethod
    def _shown(snapshot: Snapshot) -> list[TaskView]:
        running = [t for t in snapshot.tasks if t.running]
        finished = [t for t in snapshot.tasks if not t.running]  # most recent first
        kept = running[:MAX_TABS] + finished[: max(0, MAX_TABS - len(running))]
        return sorted(kept, key=lambda t: t.pulled_at)

    def _place(self, shown: list[TaskView]) -> None:
        order = tuple(t.task_id for t in shown)
        if order == self._order:
            return
        index = self.tabs.selected_index
        selected = self._order[index] if index is not None and 0 <= index < len(self._order) else None
        for task_id in set(self._pages) - set(order):
            self._spare.append(self._pages.pop(task_id))
        for task_id in order:
            if task_id not in self._pages:
                self._pages[task_id] = self._spare.pop() if self._spare else TaskPage(self._on_abort)
        self.tabs.children = tuple(self._pages[task_id].box for task_id in order)
        self._order = order
        if selected in order:
            assign(self.tabs, "selected_index", order.index(selected))
        elif order:
            assign(self.tabs, "selected_index", len(order) - 1)

    def page(self, task_id: str) -> TaskPage | None:
        return self._pages.get(task_id)

    def close(self) -> None:
        for page in self._spare:
            close_all(page.box)
        self._spare.clear()
