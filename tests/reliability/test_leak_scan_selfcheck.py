"""The leak scan finds what it promises: a secret planted in a log record, an event, an APIError, the output, a
process's argv (seen by Popen, or only by the psutil sampler) and a stored task log is each reported; a masked
access key, an allowed place and an unrelated text are not."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from notebook_agent import api
from notebook_agent.api.errors import APIError
from notebook_agent.engine.events import EventBus, TaskLogLines
from notebook_agent.masking import mask
from tests.reliability.conftest import FAKE_ACCESS_KEY
from tests.reliability.harness import wait_until
from tests.reliability.leak_scan import LeakScan

REPO = Path(__file__).resolve().parents[2]

# Planted only in the inner scan below: the directory's own scan does not know it, so it stays green.
PLANTED = "plantedSecret-Qm3Zt8Lw5Vx2"

logger = logging.getLogger("tests.reliability.selfcheck")


def _wheres(scan: LeakScan, label: str = "planted") -> set[str]:
    return {leak.where for leak in scan.findings() if leak.secret == label}


def test_each_source_is_scanned(server, raw, capfd, tmp_path):
    scan = LeakScan().start(capfd)
    try:
        scan.register(PLANTED, "planted")
        scan.add_databases_under(tmp_path)  # as for a server that ran in a subprocess
        logger.debug("connecting with %s", PLANTED[3:15])  # a piece is enough, in the args of a DEBUG record
        EventBus().publish(TaskLogLines(task_id="t1", stream="stdout", lines=("ok", f"token={PLANTED}")))
        APIError(400, 0, f"bad value {PLANTED}", "tasks.edit")
        print(f"printed {PLANTED}")
        subprocess.run([sys.executable, "-c", "pass", f"--password={PLANTED}"], check=True)
        # Only the sampler can see this one: the secret reaches the grandchild's argv through the environment.
        child = subprocess.Popen(
            ["sh", "-c", 'exec "$PY" -c "import time; time.sleep(10)" "$P"'],
            env={"PY": sys.executable, "P": PLANTED},
        )
        try:
            wait_until(lambda: any(PLANTED in argv for _, argv in scan.texts() if _ == "argv"), 10, what="sampler")
        finally:
            child.kill()
            child.wait()
        task = raw.new_task("planted")
        event = {"type": "log", "task": task, "level": "info", "worker": "w", "msg": f"line with {PLANTED}"}
        raw.ok("events.add_batch", lines=[{**event, "timestamp": 1}])
    finally:
        scan.stop()
    wheres = _wheres(scan)
    assert {"log tests.reliability.selfcheck", "event TaskLogLines", "APIError", "stdout"} <= wheres, wheres
    assert f"server server event of task {task}" in wheres, wheres
    argv = [leak for leak in scan.findings() if leak.where == "argv"]
    assert argv, scan.report()
    assert PLANTED not in scan.report()  # the report masks what it found
    assert "printed" in capfd.readouterr().out  # the output is written back for pytest's report


def test_the_sampler_alone_sees_a_grandchild(capfd):
    scan = LeakScan().start()
    try:
        scan.register(PLANTED, "planted")
        child = subprocess.Popen(
            ["sh", "-c", 'exec "$PY" -c "import time; time.sleep(10)" "$P"'],
            env={"PY": sys.executable, "P": PLANTED},
        )
        try:
            wait_until(lambda: _wheres(scan) == {"argv"}, 10, what="the sampler to see the argv")
        finally:
            child.kill()
            child.wait()
    finally:
        scan.stop()


def test_tokens_server_keys_and_task_fields(server, raw, leaks):
    # Planted on purpose: the directory's scan knows these secrets too.
    leaks.allow("log tests.reliability.selfcheck")
    leaks.allow("server * task * comment")
    scan = LeakScan().start()
    try:
        scan.add_server(server)
        session = api.Session(server.url, server.credentials.access_key, server.credentials.secret_key)
        session.login()
        token = session._token
        assert token
        logger.debug("token tail %s", token[-12:])
        task = raw.new_task("field", comment=f"the key is {server.credentials.secret_key}")
        session.close()
    finally:
        scan.stop()
    labels = {(leak.secret, leak.where) for leak in scan.findings()}
    # The server issued it, then the client got it: one secret, labelled by whoever saw it first.
    assert ("JWT the server issued", "log tests.reliability.selfcheck") in labels, labels
    assert ("server's secret key", f"server server task {task} comment") in labels, labels


def test_masked_allowed_and_unrelated_texts_pass():
    scan = LeakScan().start()
    try:
        scan.register(FAKE_ACCESS_KEY, "access key", prefix=5)
        scan.register(PLANTED, "planted")
        logger.info("access key %s, secret %s", mask(FAKE_ACCESS_KEY), mask(PLANTED))
        logger.info("nothing secret: %s", "planted-other-text")
        scan.add_text("widget allowed", PLANTED)
        scan.allow("widget allowed")
    finally:
        scan.stop()
    assert scan.findings() == [], scan.report()
    scan.add_text("widget", FAKE_ACCESS_KEY[:5])  # one character more than mask() shows
    assert [leak.where for leak in scan.findings()] == ["widget"]


def test_the_directory_fixture_fails_a_leaking_test_at_teardown(tmp_path):
    """The autouse fixture itself, run by a pytest of its own: a leaking test errors naming the secret, masked."""
    (tmp_path / "conftest.py").write_text("from tests.reliability.conftest import leaks  # noqa: F401\n")
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            """\
            import logging
            from tests.reliability.conftest import FAKE_SECRET_KEY

            def test_leaks():
                logging.getLogger("leaky").debug("the key is %s", FAKE_SECRET_KEY)

            def test_clean():
                logging.getLogger("leaky").debug("nothing secret here")
            """
        )
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tmp_path),
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert "2 passed, 1 error" in result.stdout, result.stdout[-3000:]
    assert "ERROR at teardown of test_leaks" in result.stdout
    assert "fake secret key in log leaky: 'the key is <fake secret key: nbaf****>'" in result.stdout
