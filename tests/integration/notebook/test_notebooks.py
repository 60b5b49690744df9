"""The notebooks run top to bottom in a real kernel (nbclient), unattended, against the embedded server."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NOTEBOOKS = Path(__file__).resolve().parents[3] / "notebooks"


@pytest.fixture
def notebook_env(monkeypatch, tmp_path, wheelhouse):
    """The kernel inherits this process's environment: a fresh home (no clearml.conf), pip offline."""
    for name in list(os.environ):
        if name.startswith(("CLEARML_", "TRAINS_", "PIP_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    return home


def _run(name: str, workdir: Path) -> nbformat.NotebookNode:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return book


def _text(book: nbformat.NotebookNode) -> str:
    parts = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts.append(data.get("text/plain", "") + data.get("text/html", ""))
    return "\n".join(parts)


def test_quickstart_runs_its_tasks_to_completed(notebook_env, tmp_path):
    book = _run("quickstart.ipynb", tmp_path)
    text = _text(book)
    assert text.count(" completed ") >= 2, text[-3000:]
    assert "step 4" in text  # the log tail of the first task
    assert "notebook-agent-card" in text  # the static card of `agent`
    assert "agent stopped" in text
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    # The panel was made of real widgets: nbclient stores their state in the notebook.
    state = book.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})
    names = {model.get("model_name") for model in models.values()}
    assert {"VBoxModel", "ButtonModel", "HTMLModel"} <= names, names


def test_colab_notebook_runs_unattended_without_credentials(notebook_env, tmp_path):
    book = _run("colab_agent.ipynb", tmp_path)
    text = _text(book)
    assert "none: embedded server" in text
    assert "completed - " in text and "hello from a task" in text, text[-3000:]
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
