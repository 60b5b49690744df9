"""notebook-agent: a ClearML-compatible execution agent for Jupyter and Colab kernels.

`%load_ext notebook_agent` shows the control panel; `from notebook_agent import Agent` is the Python API.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Agent", "AgentError", "current_agent", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    from notebook_agent.notebook.extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from notebook_agent.notebook.extension import unload

    unload(ipython)


def __getattr__(name: str) -> Any:
    # Lazy, so `import notebook_agent` (the CLI, the server) does not import the engine and widgets.
    if name in ("Agent", "AgentError"):
        from notebook_agent.notebook import agent

        return getattr(agent, name)
    if name == "current_agent":
        # The agent `%load_ext notebook_agent` and `%agent` control, for code in the same kernel.
        from notebook_agent.notebook.extension import agent as current_agent

        return current_agent
    raise AttributeError(f"module 'notebook_agent' has no attribute {name!r}")
