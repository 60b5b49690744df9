"""A client that disconnects mid-answer is routine for the embedded server: no traceback on the host's stderr."""

from __future__ import annotations

import logging

from notebook_agent.server.http_handler import ApiServer


class _Bare(ApiServer):
    def __init__(self) -> None:  # no socket: only handle_error is exercised
        pass


def test_disconnects_are_quiet_and_other_errors_are_logged(capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="notebook_agent.server.http_handler")
    for error in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")):
        try:
            raise error
        except OSError:
            _Bare().handle_error(None, ("127.0.0.1", 5))
    assert capsys.readouterr().err == ""
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    try:
        raise ValueError("a real bug")
    except ValueError:
        _Bare().handle_error(None, ("127.0.0.1", 5))
    assert any(r.levelno == logging.ERROR and "a real bug" in (r.exc_text or "") for r in caplog.records)


def test_sdk_binary_names_major_and_minor() -> None:
    import sys

    from notebook_agent.environment.interpreter import sdk_binary

    assert sdk_binary() == f"python{sys.version_info.major}.{sys.version_info.minor}"
