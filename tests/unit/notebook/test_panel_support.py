"""Support for the panel tests (no tests here): a recording comm (no kernel, no browser), a clearml.conf in tmp,
an Agent that records its control calls, and a way to wait on a condition with a deadline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets as w
import pytest

from notebook_agent.config import load_config
from notebook_agent.notebook.agent import Agent
from notebook_agent.notebook.widgets.common import walk

SECRET = "S3cr3t-Value-Never-Shown-0123456789"
ACCESS = "AKEY0123456789ABCDEF"
API_BLOCK = f"""api {{
    web_server: http://127.0.0.1:9/web
    api_server: http://127.0.0.1:9
    files_server: http://127.0.0.1:9/files
    credentials {{
        "access_key" = "{ACCESS}"
        "secret_key" = "{SECRET}"
    }}
}}
"""


class RecordingComm:
    """Stands in for the kernel's comm, like ipywidgets' own DummyComm, and keeps what would be sent."""

    kernel = "recording"  # widgets send only through a comm that has a kernel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.comm_id = uuid.uuid4().hex
        self.messages: list[dict[str, Any]] = []
        SENT.append(self)

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_close(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send(self, data: Any = None, buffers: Any = None, **kwargs: Any) -> None:
        self.messages.append(data or {})

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


SENT: list[RecordingComm] = []


def install_recording_comm(monkeypatch: pytest.MonkeyPatch) -> None:
    """ipywidgets 8 creates comms through ipywidgets.comm/comm.create_comm, 7.7.5 through comm.create_comm and
    7.7.1 (Colab) through ipykernel's Comm imported into ipywidgets.widgets.widget: replace each that exists."""
    import ipywidgets.widgets.widget as widget_module

    SENT.clear()
    try:
        import comm

        monkeypatch.setattr(comm, "create_comm", RecordingComm)
    except ImportError:
        pass
    ipywidgets_comm = getattr(w, "comm", None)
    if ipywidgets_comm is not None and hasattr(ipywidgets_comm, "create_comm"):
        monkeypatch.setattr(ipywidgets_comm, "create_comm", RecordingComm)
    if hasattr(widget_module, "Comm"):
        monkeypatch.setattr(widget_module, "Comm", RecordingComm)
    trait = widget_module.Widget.class_traits()["comm"]
    if hasattr(trait, "klass"):  # 7.7.1 types the trait as ipykernel's Comm; ipywidgets' DummyComm does this too
        monkeypatch.setattr(trait, "klass", RecordingComm)


def updates_sent() -> int:
    return sum(1 for c in SENT for m in c.messages if isinstance(m, dict) and m.get("method") == "update")


def write_conf(home: Path, text: str = API_BLOCK) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "clearml.conf"
    path.write_text(text)
    return path


class RecordingAgent(Agent):
    """An Agent whose controls record their calls instead of starting a worker."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Any, ...]] = []
        self.fail_start: Exception | None = None

    def start(self, queues: Any = None, **options: Any) -> Agent:
        self.calls.append(("start", queues, options))
        if self.fail_start is not None:
            raise self.fail_start
        return self

    def stop(self, drain: bool = False, timeout: float | None = None) -> None:
        self.calls.append(("stop", drain))

    def pause(self) -> None:
        self.calls.append(("pause",))

    def resume(self) -> None:
        self.calls.append(("resume",))

    def abort(self, task_id: str) -> bool:
        self.calls.append(("abort", task_id))
        return True


def configured_agent(tmp_path: Path, cls: type[Agent] = RecordingAgent, **kwargs: Any) -> Any:
    home = tmp_path / "home"
    write_conf(home)
    env = {"HOME": str(home)}
    return cls(config=load_config(env=env), env=env, **kwargs)


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def widget_texts(root: Any) -> Iterator[tuple[Any, str]]:
    """Every text a widget holds (values, options, descriptions, placeholders, titles), with its widget."""
    for item in walk(root):
        for name in ("value", "description", "placeholder", "tooltip", "options", "_titles", "titles"):
            value = getattr(item, name, None)
            if value is not None and not callable(value):
                yield item, repr(value)
