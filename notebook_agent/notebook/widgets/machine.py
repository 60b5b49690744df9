"""The machine section: per GPU utilization and memory with sparklines and temperature, then CPU and RAM."""

from __future__ import annotations

import html

import ipywidgets as w

from notebook_agent.notebook.state import GpuView, Snapshot
from notebook_agent.notebook.widgets.common import assign
from notebook_agent.notebook.widgets.sparkline import sparkline

NO_SAMPLES = (
    "<div style='color:#666'>No samples yet: CPU, RAM and GPUs are sampled every 2 s while the agent runs.</div>"
)


def _gib(mb: float) -> str:
    return f"{mb / 1024:.1f}"


def _row(label: str, *cells: str) -> str:
    tds = "".join(f"<td style='padding:2px 8px'>{cell}</td>" for cell in cells)
    return f"<tr><td style='padding:2px 8px'><b>{html.escape(label)}</b></td>{tds}</tr>"


def _gpu_row(gpu: GpuView) -> str:
    util = f"{gpu.utilization[-1]:.0f}%" if gpu.utilization else "-"
    memory_max = gpu.memory_total_mb or max(gpu.memory_used_mb, default=0.0)
    if gpu.memory_used_mb:
        total = f" / {_gib(gpu.memory_total_mb)}" if gpu.memory_total_mb else ""
        memory = f"{_gib(gpu.memory_used_mb[-1])}{total} GiB"
    else:
        memory = "-"
    temperature = f"{gpu.temperature:.0f} &deg;C" if gpu.temperature is not None else ""
    return _row(
        f"GPU {gpu.index}",
        f"{sparkline(gpu.utilization)} {util}",
        f"{sparkline(gpu.memory_used_mb, memory_max, color='#6a1b9a')} {memory}",
        temperature,
    )


def machine_html(snapshot: Snapshot) -> str:
    """GPUs first (what a notebook user watches), then CPU and RAM, which every machine has."""
    rows = [_gpu_row(gpu) for gpu in snapshot.gpus]
    if snapshot.cpu:
        rows.append(_row("CPU", f"{sparkline(snapshot.cpu, color='#2e7d32')} {snapshot.cpu[-1]:.0f}%", "", ""))
    if snapshot.memory_used_mb:
        total = snapshot.memory_total_mb or max(snapshot.memory_used_mb)
        used = snapshot.memory_used_mb[-1]
        memory = f"{sparkline(snapshot.memory_used_mb, total, color='#ef6c00')} {_gib(used)} / {_gib(total)} GiB"
        rows.append(_row("RAM", "", memory, ""))
    if not rows:
        return NO_SAMPLES
    head = "<tr><th></th><th>utilization</th><th>memory</th><th>temperature</th></tr>"
    return f"<table style='border-collapse:collapse;font-size:12px'>{head}{''.join(rows)}</table>"


class MachineView:
    """One HTML widget: the machine's last minute."""

    def __init__(self) -> None:
        self.html = w.HTML(NO_SAMPLES)
        self.box = w.VBox([self.html])

    def render(self, snapshot: Snapshot) -> None:
        assign(self.html, "value", machine_html(snapshot))
