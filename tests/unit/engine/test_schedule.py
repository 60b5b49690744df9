"""Working hours (`--uptime`/`--downtime`) and the force switches' precedence, on a fixed clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from notebook_agent.config import load_config
from notebook_agent.engine.schedule import Decision, RuntimeProperty, Schedule, ScheduleError, decide
from notebook_agent.engine.worker import WorkerOptions, schedule_for

# The week of Sunday 2 June 2024, so "SUN" 20:00 is datetime(2024, 6, 2, 20).
_DATES = {"SUN": 2, "MON": 3, "TUE": 4, "WED": 5, "THU": 6, "FRI": 7, "SAT": 8}


def at(day: str, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 6, _DATES[day], hour, minute)


def test_the_fixed_week_starts_on_sunday():
    assert [at(day, 0).strftime("%a").upper() for day in _DATES] == list(_DATES)


# Every example of the ClearML docs' "Scheduling Working Hours", plus the config example; (day, hour, minute).
SEED_EXAMPLES = [
    pytest.param(
        ["20-23 SUN"],
        [("SUN", 20, 0), ("SUN", 22, 59)],
        [("SUN", 19, 59), ("SUN", 23, 0), ("MON", 21, 0), ("SAT", 21, 0)],
        id="20-23 SUN",
    ),
    pytest.param(
        ["20-23 SUN,TUE"],
        [("SUN", 21, 0), ("TUE", 20, 0), ("TUE", 22, 30)],
        [("MON", 21, 0), ("TUE", 23, 0), ("WED", 21, 0)],
        id="20-23 SUN,TUE",
    ),
    pytest.param(
        ["20-23 SUN-TUE"],
        [("SUN", 20, 0), ("MON", 21, 0), ("TUE", 22, 0)],
        [("WED", 21, 0), ("SAT", 21, 0), ("MON", 23, 0)],
        id="20-23 SUN-TUE",
    ),
    pytest.param(
        ["20 SUN"],
        [("SUN", 20, 0), ("SUN", 23, 59)],
        [("SUN", 19, 59), ("MON", 0, 0), ("SAT", 20, 0)],
        id="20 SUN (to midnight)",
    ),
    pytest.param(
        ["20-00,00-08 SUN"],
        [("SUN", 0, 0), ("SUN", 7, 59), ("SUN", 20, 0), ("SUN", 23, 59)],
        [("SUN", 8, 0), ("SUN", 19, 0), ("MON", 0, 0), ("SAT", 23, 0)],
        id="20-00,00-08 SUN",
    ),
    pytest.param(
        ["20-00 SUN", "00-08 MON"],
        [("SUN", 20, 0), ("SUN", 23, 59), ("MON", 0, 0), ("MON", 7, 59)],
        [("SUN", 0, 0), ("SUN", 19, 0), ("MON", 8, 0), ("MON", 20, 0)],
        id="20-00 SUN + 00-08 MON (before to after midnight)",
    ),
    pytest.param(
        ["17-20 SUN-TUE", "13-22 WED"],
        [("SUN", 17, 0), ("TUE", 19, 59), ("WED", 13, 0), ("WED", 21, 59)],
        [("TUE", 20, 0), ("WED", 12, 59), ("WED", 22, 0), ("THU", 14, 0)],
        id="config example 17-20 SUN-TUE + 13-22 WED",
    ),
]


class TestUptime:
    @pytest.mark.parametrize(("entries", "inside", "outside"), SEED_EXAMPLES)
    def test_seed_examples(self, entries, inside, outside):
        schedule = Schedule.parse(uptime=entries)
        assert [t for t in inside if not schedule.allows(at(*t))] == []
        assert [t for t in outside if schedule.allows(at(*t))] == []

    def test_hour_zero_counts(self):
        # clearml-agent drops "0-8" (its `if not (start and end)` treats hour 0 as missing).
        schedule = Schedule.parse(uptime=["0-8 MON"])
        assert schedule.allows(at("MON", 0, 0)) and schedule.allows(at("MON", 7, 59))
        assert not schedule.allows(at("MON", 8, 0))
        assert not schedule.allows(at("SUN", 0, 0)) and not schedule.allows(at("TUE", 0, 0))

    def test_span_over_midnight_runs_into_the_next_day(self):
        schedule = Schedule.parse(uptime=["22-02 FRI"])
        for inside in [("FRI", 22, 0), ("FRI", 23, 59), ("SAT", 0, 0), ("SAT", 1, 59)]:
            assert schedule.allows(at(*inside)), inside
        # Friday's early hours belong to a Thursday span, and Saturday evening to none.
        for outside in [("FRI", 1, 0), ("FRI", 21, 59), ("SAT", 2, 0), ("SAT", 22, 0)]:
            assert not schedule.allows(at(*outside)), outside

    def test_span_over_midnight_on_saturday_wraps_to_sunday(self):
        schedule = Schedule.parse(uptime=["23-1 SAT"])
        assert schedule.allows(at("SAT", 23)) and schedule.allows(at("SUN", 0, 30))
        assert not schedule.allows(at("SUN", 23))

    def test_day_span_may_wrap(self):
        schedule = Schedule.parse(uptime=["9-17 FRI-MON"])
        assert [day for day in _DATES if schedule.allows(at(day, 10))] == ["SUN", "MON", "FRI", "SAT"]

    def test_whole_days_and_week(self):
        assert all(Schedule.parse(uptime=["0-00 SUN-SAT"]).allows(at(day, h)) for day in _DATES for h in range(24))
        weekend = Schedule.parse(uptime=["0 SAT,SUN"])
        assert weekend.allows(at("SAT", 0)) and weekend.allows(at("SUN", 23, 59)) and not weekend.allows(at("MON", 0))

    def test_several_hour_spans_and_24_as_midnight(self):
        schedule = Schedule.parse(uptime=["6-8,18-24 WED"])
        assert [h for h in range(24) if schedule.allows(at("WED", h))] == [6, 7, 18, 19, 20, 21, 22, 23]

    def test_days_are_case_insensitive_and_optional(self):
        assert Schedule.parse(uptime=["8-9 mon,Tue"]).allows(at("TUE", 8))
        every_day = Schedule.parse(uptime=["8-9"])
        assert all(every_day.allows(at(day, 8)) and not every_day.allows(at(day, 9)) for day in _DATES)

    def test_entries_split_by_a_shell_are_regrouped(self):
        # `--uptime 17-20 TUE 8-12 SAT` (no quotes) reaches argparse as four words.
        schedule = Schedule.parse(uptime=["17-20", "TUE", "8-12", "SAT"])
        assert schedule.entries == ("17-20 TUE", "8-12 SAT")
        assert Schedule.parse(uptime=["20-00,", "00-08", "SUN"]).entries == ("20-00,00-08 SUN",)

    def test_one_string_is_one_entry(self):
        assert Schedule.parse(uptime="20-23 SUN").entries == ("20-23 SUN",)


class TestDowntime:
    def test_downtime_is_the_complement(self):
        schedule = Schedule.parse(downtime=["0-8 MON", "22-02 FRI"])
        assert not schedule.allows(at("MON", 0)) and not schedule.allows(at("MON", 7, 59))
        assert schedule.allows(at("MON", 8)) and schedule.allows(at("SUN", 3))
        assert not schedule.allows(at("SAT", 1)) and schedule.allows(at("SAT", 2))

    def test_no_schedule_allows_every_hour(self):
        for empty in (Schedule.parse(), Schedule.parse([], []), Schedule.parse(None, ["  "])):
            assert not empty and empty.kind is None
            assert all(empty.allows(at(day, h)) for day in _DATES for h in range(24))


class TestErrors:
    @pytest.mark.parametrize(
        ("entry", "says"),
        [
            ("25 MON", "00 to 23"),
            ("8-25 MON", "00 to 23"),
            ("8-8 MON", "empty"),
            ("8-10 FUNDAY", "unknown day 'FUNDAY'"),
            ("MON 8-10", "before any hours"),
            ("8am MON", "'8am' is not an hour"),
            ("8-10-12 MON", "is not an hour"),
            ("8-10 SUN-", "needs two days"),
        ],
    )
    def test_bad_entry_is_named_with_an_example(self, entry, says):
        with pytest.raises(ScheduleError) as err:
            Schedule.parse(downtime=[entry])
        message = str(err.value)
        assert f"downtime entry {entry!r}" in message and says in message
        assert '"20-23 SUN,TUE"' in message  # a correct example

    def test_both_uptime_and_downtime_is_an_error(self):
        with pytest.raises(ScheduleError, match=r"both uptime .* and downtime .* use only one"):
            Schedule.parse(uptime=["8-18 MON-FRI"], downtime=["0-8 SAT"])

    def test_schedule_error_is_a_value_error(self):
        assert issubclass(ScheduleError, ValueError)


NOW = at("SUN", 21)  # inside "20-23 SUN,TUE"
OFF_HOURS = at("MON", 21)
UPTIME = Schedule.parse(uptime=["20-23 SUN,TUE"])


def force(value: str, expires_at: datetime | None = None) -> list[RuntimeProperty]:
    return [RuntimeProperty("force", value, expires_at)]


class TestPrecedence:
    def test_no_schedule_pulls(self):
        assert decide(NOW, Schedule(), [], []) == Decision(True, "no schedule", "default")

    def test_schedule_decides_alone(self):
        assert decide(NOW, UPTIME) == Decision(True, "within working hours (uptime 20-23 SUN,TUE)", "schedule")
        assert decide(OFF_HOURS, UPTIME) == Decision(False, "outside working hours (uptime 20-23 SUN,TUE)", "schedule")

    def test_downtime_reason(self):
        decision = decide(at("MON", 3), Schedule.parse(downtime=["0-8 MON"]))
        assert decision == Decision(False, "outside working hours (downtime 0-8 MON)", "schedule")

    def test_runtime_property_beats_schedule(self):
        on = decide(OFF_HOURS, UPTIME, force("on"))
        assert on == Decision(True, "forced on by runtime property force=on", "runtime_property")
        off = decide(NOW, UPTIME, force("OFF"))
        assert off == Decision(False, "forced off by runtime property force=off", "runtime_property")

    def test_queue_tag_beats_runtime_property(self):
        off = decide(NOW, UPTIME, force("on"), ["force_workers:off"])
        assert off == Decision(False, "forced off by queue tag force_workers:off", "queue_tag")
        on = decide(OFF_HOURS, UPTIME, force("off"), ["other", "force_workers:on"])
        assert on == Decision(True, "forced on by queue tag force_workers:on", "queue_tag")

    def test_off_tag_wins_over_on_tag(self):
        assert not decide(NOW, Schedule(), [], ["force_workers:on", "force_workers:off"]).pull

    def test_expired_force_falls_back_to_the_schedule(self):
        expired = force("on", expires_at=OFF_HOURS - timedelta(seconds=1))
        assert decide(OFF_HOURS, UPTIME, expired).source == "schedule"
        exactly_now = force("on", expires_at=OFF_HOURS)
        assert not decide(OFF_HOURS, UPTIME, exactly_now).pull

    def test_unexpired_force_says_until_when(self):
        decision = decide(OFF_HOURS, UPTIME, force("on", expires_at=OFF_HOURS + timedelta(hours=1)))
        assert decision.pull and decision.reason == "forced on by runtime property force=on until 2024-06-03 22:00"

    def test_unknown_force_value_is_ignored(self):
        assert decide(OFF_HOURS, UPTIME, force("maybe")).source == "schedule"
        assert decide(NOW, Schedule(), [RuntimeProperty("gpus", "0,1")]).reason == "no schedule"

    def test_first_live_force_counts(self):
        props = [*force("off", OFF_HOURS - timedelta(minutes=1)), *force("on")]
        assert decide(OFF_HOURS, UPTIME, props).reason == "forced on by runtime property force=on"


class TestRuntimePropertyFromApi:
    FETCHED = at("WED", 12)

    def test_expiry_is_seconds_left_when_read(self):
        prop = RuntimeProperty.from_api({"key": "force", "value": "on", "expiry": 90}, self.FETCHED)
        assert prop == RuntimeProperty("force", "on", at("WED", 12, 1) + timedelta(seconds=30))
        assert prop.live(at("WED", 12, 1)) and not prop.live(at("WED", 12, 2))

    @pytest.mark.parametrize("doc", [{"key": "force", "value": "on"}, {"key": "force", "value": "on", "expiry": None}])
    def test_no_expiry_lives_forever(self, doc):
        prop = RuntimeProperty.from_api(doc, self.FETCHED)
        assert prop.expires_at is None and prop.live(self.FETCHED + timedelta(days=365))


class TestScheduleFor:
    """Where the worker's schedule comes from: --uptime/--downtime, else agent.uptime/agent.downtime."""

    @staticmethod
    def config(tmp_path, agent: str):
        conf = tmp_path / "agent.conf"
        conf.write_text("agent {\n" + agent + "\n}\n")
        return load_config(conf, env={})

    def test_config_downtime(self, tmp_path):
        schedule = schedule_for(self.config(tmp_path, 'downtime: ["0-8 MON"]'), WorkerOptions())
        assert (schedule.kind, schedule.entries) == ("downtime", ("0-8 MON",))

    def test_command_line_replaces_the_config(self, tmp_path):
        config = self.config(tmp_path, 'downtime: ["0-8 MON"]')
        schedule = schedule_for(config, WorkerOptions(uptime=["20-23 SUN,TUE"]))
        assert (schedule.kind, schedule.entries) == ("uptime", ("20-23 SUN,TUE",))

    def test_both_in_the_config_is_an_error(self, tmp_path):
        config = self.config(tmp_path, 'uptime: ["8-18 MON-FRI"]\n  downtime: ["0-8 SAT"]')
        with pytest.raises(ScheduleError, match="use only one"):
            schedule_for(config, WorkerOptions())

    def test_none_anywhere_is_no_schedule(self, tmp_path):
        assert not schedule_for(self.config(tmp_path, ""), WorkerOptions())
