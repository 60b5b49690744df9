"""`notebook-agent daemon --uptime/--downtime`: parsed, checked before connecting, errors say how to fix them."""

from __future__ import annotations

from notebook_agent.cli import daemon_cmd
from notebook_agent.cli.main import build_parser


def run_daemon(argv: list[str], capsys) -> tuple[int, str]:
    args = build_parser().parse_args(["daemon", *argv])
    code = daemon_cmd.run(args)
    return code, capsys.readouterr().err


def test_entries_are_lists():
    args = build_parser().parse_args(["daemon", "--uptime", "17-20 SUN-TUE", "13-22 WED"])
    assert args.uptime == ["17-20 SUN-TUE", "13-22 WED"] and args.downtime is None


def test_uptime_and_downtime_exclude_each_other(capsys):
    code, err = run_daemon(["--uptime", "8-18 MON-FRI", "--downtime", "0-8 SAT"], capsys)
    assert code == 2
    assert "--uptime and --downtime exclude each other" in err and '--uptime "8-18 MON-FRI"' in err


def test_a_bad_entry_fails_before_connecting(capsys):
    # No server is configured here: the error must come from the entry, before any connection is tried.
    code, err = run_daemon(["--downtime", "8-10 FUNDAY"], capsys)
    assert code == 2
    assert "downtime entry '8-10 FUNDAY': unknown day 'FUNDAY'" in err and '"20-23 SUN,TUE"' in err
