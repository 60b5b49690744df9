"""Inline SVG sparklines: a short history as a polyline, small enough to resend every sample."""

from __future__ import annotations

from collections.abc import Sequence


def sparkline(
    values: Sequence[float],
    maximum: float = 100.0,
    *,
    width: int = 120,
    height: int = 22,
    color: str = "#1565c0",
) -> str:
    """An <svg> of `values` (oldest first) scaled to [0, maximum]; a flat baseline when there is nothing yet."""
    top = maximum if maximum > 0 else max((*values, 1.0))
    if len(values) < 2:  # one sample draws as a level line, none as the baseline
        y = _y(values[0], top, height) if values else height - 1.0
        points = f"0,{y:.1f} {width},{y:.1f}"
    else:
        step = width / (len(values) - 1)
        points = " ".join(f"{i * step:.1f},{_y(v, top, height):.1f}" for i, v in enumerate(values))
    return (
        f'<svg class="notebook-agent-sparkline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" '
        f'style="vertical-align:middle;background:#f4f6f8;border-radius:3px">'
        f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/></svg>'
    )


def _y(value: float, top: float, height: int) -> float:
    return height - 1 - min(max(value / top, 0.0), 1.0) * (height - 2)
