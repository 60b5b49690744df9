"""Working hours and the force switches: whether a worker may pull from a queue now. Pure: no I/O, no clock.

Entries (`--uptime` / `--downtime`, `agent.uptime` / `agent.downtime`) read `"<hours> <days>"`, as in the
ClearML docs:

- `<hours>`: comma-separated spans `H-H` (end exclusive) or single hours `H` (from H to midnight); 0-23, and an
  end of `00` (or `24`) is midnight. A span whose end is before its start runs over midnight into the next day
  (`"22-02 FRI"`: Friday 22:00 to Saturday 02:00).
- `<days>`: comma-separated days or day spans, `SUN`..`SAT` (any case); a span may wrap (`FRI-MON`). Left out,
  the entry holds every day.

Unlike clearml-agent, a span starting at hour 0 (`"0-8 MON"`) counts, and a span over midnight is not empty.
Precedence (`decide`): queue tag `force_workers:off`/`:on` > runtime property `force` = off/on (until it
expires) > the schedule > pull.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

Kind = Literal["uptime", "downtime"]

DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")  # index = datetime.weekday()
QUEUE_TAG_ON = "force_workers:on"
QUEUE_TAG_OFF = "force_workers:off"
FORCE_KEY = "force"
EXAMPLE = '"20-23 SUN,TUE" (8 PM to 11 PM on Sundays and Tuesdays) or "8-18 MON-FRI"'

_HOURS = re.compile(r"^(\d{1,2})(?:-(\d{1,2}))?$")


class ScheduleError(ValueError):
    """A malformed uptime/downtime entry, or both uptime and downtime given."""


@dataclass(frozen=True)
class Schedule:
    """Working hours as (weekday, hour) slots. `kind` None: no schedule, every hour is a working hour."""

    kind: Kind | None = None
    entries: tuple[str, ...] = ()
    slots: frozenset[tuple[int, int]] = frozenset()

    @classmethod
    def parse(cls, uptime: Sequence[str] | str | None = None, downtime: Sequence[str] | str | None = None) -> Schedule:
        """Parse the entries of one of uptime/downtime; both non-empty is a ScheduleError."""
        up, down = _as_list(uptime), _as_list(downtime)
        if up and down:
            raise ScheduleError(
                f"both uptime {up} and downtime {down} are set; use only one of them: uptime for the hours to "
                'pull tasks (e.g. ["8-18 MON-FRI"]) or downtime for the hours not to (e.g. ["0-8 SAT,SUN"])'
            )
        if not (up or down):
            return cls()
        kind: Kind = "uptime" if up else "downtime"
        entries = _group_entries(up or down, kind)
        slots: set[tuple[int, int]] = set()
        for entry in entries:
            slots |= _entry_slots(entry, kind)
        return cls(kind, tuple(entries), frozenset(slots))

    def __bool__(self) -> bool:
        return self.kind is not None

    def allows(self, now: datetime) -> bool:
        """True when `now` (local wall time) is a working hour: inside an uptime span, outside a downtime span."""
        if self.kind is None:
            return True
        inside = (now.weekday(), now.hour) in self.slots
        return inside if self.kind == "uptime" else not inside

    def describe(self) -> str:
        """`uptime 20-23 SUN,TUE; 13-22 WED`: what the user gave, for state details and logs."""
        return f"{self.kind} {'; '.join(self.entries)}" if self.kind else "no schedule"


@dataclass(frozen=True)
class RuntimeProperty:
    """A worker runtime property as read from the server; `expires_at` on the reader's clock (None: never)."""

    key: str
    value: str
    expires_at: datetime | None = None

    @classmethod
    def from_api(cls, doc: Mapping[str, Any], fetched_at: datetime) -> RuntimeProperty:
        """The server answers `expiry` as seconds left (clearml-agent reads it so); absent or 0: no expiry."""
        expiry = doc.get("expiry")
        expires_at = fetched_at + timedelta(seconds=float(expiry)) if expiry else None
        return cls(str(doc.get("key", "")), str(doc.get("value", "")), expires_at)

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Decision:
    """Whether to pull now, why (shown as the idle worker's state detail), and which rule decided."""

    pull: bool
    reason: str
    source: Literal["queue_tag", "runtime_property", "schedule", "default"] = "default"


def decide(
    now: datetime,
    schedule: Schedule,
    runtime_properties: Iterable[RuntimeProperty] = (),
    queue_tags: Iterable[str] = (),
) -> Decision:
    """The precedence of clearml-agent's `should_be_currently_active`, for one queue.

    1. the queue's tags: `force_workers:off` (checked first, so it wins when both are set), `force_workers:on`;
    2. the worker's runtime property `force` = `off`/`on` (any case) while it has not expired; another value is
       ignored, as clearml-agent does;
    3. the schedule; 4. pull.
    """
    tags = set(queue_tags)
    if QUEUE_TAG_OFF in tags:
        return Decision(False, f"forced off by queue tag {QUEUE_TAG_OFF}", "queue_tag")
    if QUEUE_TAG_ON in tags:
        return Decision(True, f"forced on by queue tag {QUEUE_TAG_ON}", "queue_tag")
    force = next((p for p in runtime_properties if p.key == FORCE_KEY and p.live(now)), None)
    value = force.value.strip().lower() if force is not None else ""
    if force is not None and value in ("on", "off"):
        until = f" until {force.expires_at:%Y-%m-%d %H:%M}" if force.expires_at else ""
        return Decision(value == "on", f"forced {value} by runtime property force={value}{until}", "runtime_property")
    if schedule:
        if schedule.allows(now):
            return Decision(True, f"within working hours ({schedule.describe()})", "schedule")
        return Decision(False, f"outside working hours ({schedule.describe()})", "schedule")
    return Decision(True, "no schedule")


# parsing ---------------------------------------------------------------------------------------------------
def _as_list(value: Sequence[str] | str | None) -> list[str]:
    # One string where a list was meant (a hand-written config) is one entry.
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in value if str(v).strip()]


def _group_entries(values: Sequence[str], kind: Kind) -> list[str]:
    """Entries as `"<hours> <days>"` strings, also when a shell split them (`--uptime 17-20 TUE 8-12 SAT`).

    Tokens are regrouped: an hours token (leading digit) starts an entry unless the previous hours token ended
    with a comma; day tokens join the entry they follow.
    """
    entries: list[tuple[list[str], list[str]]] = []
    for token in " ".join(values).split():
        if token[0].isdigit():
            if entries and not entries[-1][1] and entries[-1][0][-1].endswith(","):
                entries[-1][0].append(token)
            else:
                entries.append(([token], []))
        elif not entries:
            raise ScheduleError(f"{kind} entry {' '.join(values)!r}: days {token!r} come before any hours; {_hint()}")
        else:
            entries[-1][1].append(token)
    return [" ".join(["".join(hours), ",".join(days)]).strip() for hours, days in entries]


def _hint() -> str:
    return f'expected "<hours> <days>", e.g. {EXAMPLE}'


def _entry_slots(entry: str, kind: Kind) -> set[tuple[int, int]]:
    hours_text, _, days_text = entry.partition(" ")
    days = _days(days_text, entry, kind) if days_text else list(range(7))
    slots: set[tuple[int, int]] = set()
    for item in (h for h in hours_text.split(",") if h):
        start, end = _hour_span(item, entry, kind)
        for day in days:
            if end > start:
                slots |= {(day, hour) for hour in range(start, end)}
            else:  # over midnight: the evening on the given day, the early hours on the day after it
                slots |= {(day, hour) for hour in range(start, 24)}
                slots |= {((day + 1) % 7, hour) for hour in range(end)}
    return slots


def _hour_span(item: str, entry: str, kind: Kind) -> tuple[int, int]:
    """(start, end) with end exclusive; end 24 is midnight, end < start runs over midnight."""
    match = _HOURS.match(item)
    if match is None:
        raise ScheduleError(f"{kind} entry {entry!r}: {item!r} is not an hour or an hour span like 20-23; {_hint()}")
    start = int(match.group(1))
    end = 24 if match.group(2) is None else int(match.group(2))
    if start > 23 or end > 24:
        raise ScheduleError(f"{kind} entry {entry!r}: hours go from 00 to 23 (24 or 00 ends at midnight); {_hint()}")
    if end == 0:
        end = 24  # "20-00": to midnight
    if end == start:
        raise ScheduleError(f"{kind} entry {entry!r}: the span {item!r} is empty; {_hint()}")
    return start, end


def _days(text: str, entry: str, kind: Kind) -> list[int]:
    days: list[int] = []
    for item in (d for d in text.split(",") if d):
        first, dash, last = item.partition("-")
        if dash and not (first and last):
            raise ScheduleError(
                f"{kind} entry {entry!r}: the day span {item!r} needs two days, like SUN-TUE; {_hint()}"
            )
        start, end = _day(first, entry, kind), _day(last if dash else first, entry, kind)
        days += [(start + i) % 7 for i in range((end - start) % 7 + 1)]  # a span may wrap: FRI-MON
    return days


def _day(name: str, entry: str, kind: Kind) -> int:
    try:
        return DAYS.index(name.upper())
    except ValueError:
        raise ScheduleError(
            f"{kind} entry {entry!r}: unknown day {name!r} (use SUN, MON, TUE, WED, THU, FRI, SAT); {_hint()}"
        ) from None
