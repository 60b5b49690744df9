"""A real browser: JupyterLab started here, headless Chromium (Debian's, driven by Playwright, no browser download)
opens the quickstart, runs every cell and sees the panel: the worker card, a task's log tab, the CPU/GPU panel.
Screenshots are kept in tests/artifacts/ (or $NOTEBOOK_AGENT_ARTIFACTS)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("NOTEBOOK_AGENT_ARTIFACTS", ROOT / "tests" / "artifacts"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {proc.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)  # polling a port that is not open yet; bounded by the deadline
    raise AssertionError("jupyter lab did not listen in time")


@pytest.fixture
def lab(tmp_path, wheelhouse):
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", work / "quickstart.ipynb")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_", "PIP_"))}
    env.update(HOME=str(home), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse), JUPYTER_PLATFORM_DIRS="1")
    port, token = _free_port(), secrets.token_hex(16)
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            f"--ServerApp.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.disable_check_xsrf=True",
            "--LabApp.news_url=", "--ServerApp.allow_root=True", "--LabApp.expose_app_in_browser=True",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_port(port, proc, 60)
        yield f"http://127.0.0.1:{port}/lab/tree/quickstart.ipynb?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_quickstart_in_jupyterlab_shows_the_panel(lab):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*args, "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(lab)
            page.wait_for_selector(".jp-Notebook", timeout=90_000)
            # The app object (expose_app_in_browser) runs commands deterministically; menus move between versions.
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                " return k && k.status === 'idle'; }",
                timeout=120_000,
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            notebook = page.locator(".jp-Notebook")
            expect(notebook.get_by_text("agent stopped").first).to_be_attached(timeout=240_000)  # the last cell
            with contextlib.suppress(PlaywrightError):  # JupyterLab's news prompt, when it shows, covers the panel
                page.get_by_role("button", name="No", exact=True).click(timeout=2_000)
            panel = page.locator(".widget-vbox").filter(has=page.locator(".notebook-agent-card")).first
            expect(panel.locator(".notebook-agent-card").first).to_be_visible()
            panel.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "quickstart-card.png"))
            # A log tab with the first task's lines.
            panel.get_by_text("Tasks", exact=False).first.click()
            # The panel opens the newest task's tab; the first task's lines are in its own tab.
            tabs = panel.locator(".lm-TabBar-tab, .p-TabBar-tab")
            tabs.filter(has_text="sample: count").first.click()
            expect(panel.locator("pre", has_text="step 4").first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "quickstart-tasks.png"))
            # The machine panel: CPU and RAM sparklines (and one per GPU where there are GPUs).
            panel.get_by_text("Machine", exact=True).first.click()
            expect(panel.locator("svg.notebook-agent-sparkline").first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "quickstart-machine.png"))
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "quickstart-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
