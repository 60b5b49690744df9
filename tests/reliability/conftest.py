"""Fixtures of the fault matrix: every test runs under the secret-leak scan (leak_scan.py) with known fake secrets,
every server here uses those fake keys, and the engine fixtures (wheelhouse, agent config, a worker in a thread)
come from the engine acceptance tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from notebook_agent.server import EmbeddedServer
from tests.conftest import FakeClock
from tests.integration.engine.conftest import (  # noqa: F401  (fixtures, re-exported for this directory)
    WorkerRun,
    agent_config,
    agent_env,
    run_worker,
    wheelhouse,
)
from tests.reliability.leak_scan import LeakScan, basic_auth

# Known fake secrets: distinctive, so that a scan finds any copy of them (whole or in part) wherever it leaked.
FAKE_ACCESS_KEY = "NBAFAKEACCESSKEYQ7Z3"
FAKE_SECRET_KEY = "nbafake-secret-Xy7Qp2Lm9Rt4Vw8Kd3Hs6Jf1"
# No 8 characters in common with each other, nor with the non-secret user name, so each finding names its secret.
FAKE_GIT_USER = "gituser-nba"
FAKE_GIT_PASSWORD = "gitfakepass-Zr5Kc8Wn2Bq7Tm4"

# The capture fixtures a test may ask for itself; the scan reads the same one (pytest allows only one per test).
_CAPTURES = ("capsys", "capsysbinary", "capfdbinary", "capfd")


@pytest.fixture(autouse=True)
def leaks(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LeakScan]:
    """The leak scan around every test here: fails the test at teardown, naming each secret found and where.

    A test registers its own fake values with `leaks.register(value, label)` (a wrong password, a token in a URL)
    and exempts a place it filled with a secret on purpose with `leaks.allow(pattern)`.
    """
    capture = request.getfixturevalue(next(n for n in _CAPTURES if n in request.fixturenames or n == "capfd"))
    scan = LeakScan()
    # mask() shows an access key's first 4 characters: a 5th is already a leak.
    scan.register(FAKE_ACCESS_KEY, "fake access key", prefix=5)
    scan.register(FAKE_SECRET_KEY, "fake secret key")
    scan.register(FAKE_GIT_PASSWORD, "fake git password")
    scan.register(basic_auth(FAKE_ACCESS_KEY, FAKE_SECRET_KEY), "Basic auth of the fake keys")
    with scan.running(capture):
        yield scan
        scan.add_databases_under(tmp_path)  # servers that ran in subprocesses too
    report = scan.report()
    if report:
        pytest.fail(report, pytrace=False)


@pytest.fixture
def server(tmp_path: Path, clock: FakeClock) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(
        tmp_path / "server", clock=clock, access_key=FAKE_ACCESS_KEY, secret_key=FAKE_SECRET_KEY
    ).start()
    try:
        yield srv
    finally:
        srv.stop()
