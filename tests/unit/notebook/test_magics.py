"""`%load_ext notebook_agent` and `%agent`: parsing, errors as messages (never tracebacks), one agent per kernel."""

from __future__ import annotations

import pytest
from IPython.testing.globalipapp import start_ipython

from notebook_agent.notebook import extension
from notebook_agent.notebook.agent import Agent


@pytest.fixture(scope="module")
def ip():
    shell = start_ipython()
    yield shell


@pytest.fixture
def fake_agent(monkeypatch):
    calls: list[tuple] = []

    class FakeAgent(Agent):
        def start(self, queues=None, **options):
            calls.append(("start", queues, options))
            self.queues = list(queues or ["default"])
            return self

        def stop(self, drain=False, timeout=None):
            calls.append(("stop", drain))

        def pause(self):
            calls.append(("pause",))

        def resume(self):
            calls.append(("resume",))

        def abort(self, task_id):
            calls.append(("abort", task_id))
            return task_id == "abc"

        def status(self):
            return "worker test:0: idle"

        def panel(self):
            raise RuntimeError("no widgets in this test")

    agent = FakeAgent(config=None)
    agent.messages.append("using the embedded server")
    monkeypatch.setattr(extension, "_AGENT", agent)
    return calls


def test_load_registers_the_magic_and_shows_the_card(ip, fake_agent, capsys):
    ip.run_line_magic("load_ext", "notebook_agent")
    assert "agent" in ip.magics_manager.magics["line"]
    ip.run_line_magic("agent", "status")
    assert "worker test:0: idle" in capsys.readouterr().out


def test_commands_reach_the_agent(ip, fake_agent, capsys):
    ip.register_magics(extension.AgentMagics)
    ip.run_line_magic("agent", "start --queue gpu default --cpu-only")
    ip.run_line_magic("agent", "pause")
    ip.run_line_magic("agent", "resume")
    ip.run_line_magic("agent", "abort abc")
    ip.run_line_magic("agent", "stop --drain")
    assert fake_agent == [
        ("start", ["gpu", "default"], {"gpus": None, "cpu_only": True, "order_fairness": False}),
        ("pause",),
        ("resume",),
        ("abort", "abc"),
        ("stop", True),
    ]
    out = capsys.readouterr().out
    assert "agent started on gpu, default" in out and "draining" in out


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("bogus", "invalid choice"),
        ("logs -n many", "invalid int value"),
        ("abort zzz", "no running task 'zzz'"),
        ('start --queue "unclosed', "No closing quotation"),
    ],
)
def test_bad_input_is_a_message_not_a_traceback(ip, fake_agent, capsys, line, expected):
    ip.register_magics(extension.AgentMagics)
    ip.run_line_magic("agent", line)
    out = capsys.readouterr().out
    assert out.startswith("%agent: ") and expected in out, out
