"""Which events a replay picks: by type, event name, user, time window, a deterministic sample,
and the shard (a share of the users) a machine replays.

Times are integer microseconds since the Unix epoch, UTC, so comparisons are exact and cheap.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from segroute.models import Event

__all__ = [
    "BOUND_FORMS",
    "DAY_MS",
    "Selection",
    "Shard",
    "event_time",
    "format_time",
    "in_sample",
    "in_shard",
    "parse_bound",
    "parse_shard",
    "parse_time",
    "received_time",
    "sample_fraction",
    "shard_key",
    "stable_hash",
]

DAY_MS = 86_400_000
"""One Segment archive day folder, in the milliseconds its name is written in."""
_DAY_US = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_TWO_64 = 2**64
_GLOB_CHARS = frozenset("*?[")
_DESCRIBE_MAX = 3
"""Values listed by `Selection.describe` before it says how many more there are."""
BOUND_FORMS = (
    "a date (2026-01-31), an ISO-8601 date-time (2026-01-31T12:00:00Z, 2026-01-31T12:00:00+02:00, "
    "2026-01-31T12:00:00.250; without an offset it is UTC), a time back from now (30m, 6h, 2d, 1w, "
    "'90 minutes', '2 days ago'), now, today or yesterday (midnight UTC)"
)
_MIN_US = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _MICROSECOND
"""0001-01-01T00:00:00Z, the earliest time ISO-8601 bounds can name."""
_UNIT_US = {"m": 60_000_000, "h": 3_600_000_000, "d": _DAY_US, "w": 7 * _DAY_US}
# Long units are case-insensitive, one-letter ones lowercase only: 1M is refused, not read as 1 minute
# by someone who meant a month. ASCII only: no other digits, spaces or letters that fold to these.
_RELATIVE = re.compile(
    r"([0-9]+)\s*(?:([mhdw])|(?i:(minutes?|mins?|hours?|hrs?|days?|weeks?)))(?:\s+(?i:ago))?",
    re.ASCII,
)
_fromisoformat = datetime.fromisoformat


def parse_time(value: object) -> int | None:
    """An ISO-8601 date-time (or date) as microseconds since the epoch, UTC; None for anything else."""
    if not isinstance(value, str):
        return None
    # fromisoformat first, and checks after it. In 3.11 it takes any character between the date and
    # the time ("2026-11-29x10:00"); refuse all but ISO's.
    if len(value) > 10 and value[7:8] == "-" and value[10] not in "Tt ":
        return None
    try:
        moment = _fromisoformat(value)
    except ValueError:
        return None
    # Subtracting timedeltas never overflows, even for year 1 with a positive offset.
    if moment.tzinfo is None:
        return (moment - _NAIVE_EPOCH) // _MICROSECOND
    return (moment - _EPOCH) // _MICROSECOND


def event_time(data: dict[str, Any]) -> int | None:
    """When the event happened: ``timestamp``, else ``originalTimestamp``, else ``receivedAt``."""
    for name in ("timestamp", "originalTimestamp", "receivedAt"):
        moment = parse_time(data.get(name))
        if moment is not None:
            return moment
    return None


def received_time(data: dict[str, Any]) -> int | None:
    """When Segment received the event: ``receivedAt``."""
    return parse_time(data.get("receivedAt"))


def parse_bound(text: str, *, end: bool, now: Callable[[], float] = time.time) -> int:
    """A ``--since`` (end=False) or ``--until`` (end=True) bound as microseconds; a date ends at midnight.

    The window is [since, until), so an until date means the start of the next day: the whole day is in;
    so do ``today`` and ``yesterday``. A relative time (``6h``, ``2 days ago``) and ``now`` are instants
    back from ``now()`` (seconds since the epoch), which is only called for them.
    """
    stripped = text.strip()
    try:
        day = date.fromisoformat(stripped)
    except ValueError:
        pass
    else:
        start = (day.toordinal() - _EPOCH.toordinal()) * _DAY_US
        return start + _DAY_US if end else start
    moment = parse_time(stripped)
    if moment is not None:
        return moment
    word = stripped.lower()
    found = _RELATIVE.fullmatch(stripped)
    if word not in ("now", "today", "yesterday") and found is None:
        raise ValueError(f"not a time: {text!r}; expected {BOUND_FORMS}")
    now_us = round(now() * 1_000_000)
    if word == "now":
        return now_us
    if found is None:
        start = now_us // _DAY_US * _DAY_US - (_DAY_US if word == "yesterday" else 0)
        return start + _DAY_US if end else start
    digits = found[1].lstrip("0") or "0"
    unit = _UNIT_US[found[2] or found[3][0].lower()]
    # int() refuses over 4300 digits; 16 are already before the year 1, whatever the unit.
    moment = now_us - int(digits) * unit if len(digits) <= 15 else _MIN_US - 1
    if moment < _MIN_US:
        raise ValueError(f"{text!r} reaches back before the year 1")
    return moment


def sample_fraction(message_id: str) -> float:
    """Where a messageId falls in [0, 1): the first 8 bytes of its BLAKE2b hash over 2**64."""
    return stable_hash(message_id) / _TWO_64


def in_sample(message_id: str, fraction: float) -> bool:
    """Whether a messageId is in a sample of this fraction; the same answer on every run."""
    # int < float compares exactly in Python, so 1.0 keeps every id and 0.0 none.
    return stable_hash(message_id) < fraction * _TWO_64


def stable_hash(text: str) -> int:
    """A 64-bit hash of a string that is the same on every run and machine (BLAKE2b's first 8 bytes)."""
    # surrogatepass: an id made in Python may hold a lone surrogate; it must hash, not raise.
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Shard(NamedTuple):
    """The ``number``-th (from 1) of ``total`` shares of the events, partitioned by user."""

    number: int
    total: int

    def __str__(self) -> str:
        return f"{self.number}/{self.total}"


def parse_shard(text: str) -> Shard:
    """``K/N`` with 1 <= K <= N; ValueError otherwise."""
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if found is None or not 1 <= int(found.group(1)) <= int(found.group(2)):
        raise ValueError("give K/N with K from 1 to N, e.g. 2/4")
    return Shard(int(found.group(1)), int(found.group(2)))


def shard_key(event: Event) -> str:
    """What shards partition by: the user, so one user's events stay in order on one machine."""
    anonymous_id = event.data.get("anonymousId")
    if event.user_id is not None:
        return "u:" + event.user_id
    if isinstance(anonymous_id, str | int | float) and anonymous_id != "":
        return "a:" + str(anonymous_id)
    return "m:" + event.message_id


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Whether a key falls to shard K of N (K from 1), by a hash that is the same on every machine."""
    number, count = shard
    return count == 1 or stable_hash(key) % count == number - 1


@dataclass(frozen=True, slots=True)
class Selection:
    """What to replay: every criterion given must hold; the defaults select everything."""

    types: frozenset[str] = frozenset()
    events: tuple[str, ...] = ()
    """Track event names: exact, or fnmatch globs (``*``, ``?``, ``[...]``), case-sensitive."""
    users: frozenset[str] = frozenset()
    """userIds or anonymousIds."""
    since: int | None = None
    """Inclusive, in microseconds since the epoch."""
    until: int | None = None
    """Exclusive, in microseconds since the epoch."""
    sample: float | None = None
    """The fraction of messageIds kept, chosen by their hash."""
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _glob: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.sample is not None and not 0.0 <= self.sample <= 1.0:
            raise ValueError(f"the sample must be a fraction from 0 to 1, not {self.sample!r}")
        exact = frozenset(p for p in self.events if _GLOB_CHARS.isdisjoint(p))
        globs = [fnmatch.translate(p) for p in self.events if p not in exact]
        # One alternation of every glob: matching a name costs one regex call however many there are.
        glob = re.compile("|".join(globs)) if globs else None
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_glob", glob)

    @property
    def active(self) -> bool:
        """Whether any criterion is set."""
        return bool(
            self.types
            or self.events
            or self.users
            or self.since is not None
            or self.until is not None
            or self.sample is not None
        )

    def matches(self, event: Event) -> bool:
        """Whether the event meets every criterion given."""
        if self.types and event.type not in self.types:
            return False
        if self.events:
            name = event.name
            if name is None:
                return False
            if name not in self._exact and (self._glob is None or self._glob.match(name) is None):
                return False
        if self.users and event.user_id not in self.users:
            anonymous_id = _as_id(event.data.get("anonymousId"))
            if anonymous_id is None or anonymous_id not in self.users:
                return False
        if self.since is not None or self.until is not None:
            moment = event_time(event.data)
            if moment is None:
                return False
            if self.since is not None and moment < self.since:
                return False
            if self.until is not None and moment >= self.until:
                return False
        return self.sample is None or in_sample(event.message_id, self.sample)

    def skip_day(self, day_start_ms: int) -> bool:
        """Whether an archive day folder (received that UTC day) cannot hold a selected event.

        An event's time is never after its receivedAt, so an event received on a day ends that day or
        earlier: only ``since`` rules a folder out. Late events land in later folders, so ``until`` never
        does.
        """
        return self.since is not None and (day_start_ms + DAY_MS) * 1000 <= self.since

    def describe(self) -> str:
        """What is selected, in words: ``type track; event 'Order *'; since 2026-01-01T00:00:00Z``."""
        parts = []
        if self.types:
            parts.append(_listing("type", sorted(self.types), quote=False))
        if self.events:
            parts.append(_listing("event", list(self.events), quote=True))
        if self.users:
            parts.append(_listing("user", sorted(self.users), quote=True))
        if self.since is not None:
            parts.append(f"since {format_time(self.since)}")
        if self.until is not None:
            parts.append(f"until {format_time(self.until)}")
        if self.sample is not None:
            parts.append(f"sample {self.sample * 100:g}% of messageIds")
        return "; ".join(parts) if parts else "every event"


def format_time(moment: int) -> str:
    """Microseconds since the epoch as ISO-8601 UTC with a ``Z``; fractions only when there are any."""
    try:
        value = _EPOCH + moment * _MICROSECOND
    except OverflowError:
        return f"{moment} microseconds after the epoch"
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds").replace("+00:00", "Z")


def _as_id(value: Any) -> str | None:
    # The same rule as events.Event.user_id: the Segment clients stringify numeric ids.
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _listing(label: str, values: list[str], *, quote: bool) -> str:
    shown = [repr(v) if quote else v for v in values[:_DESCRIBE_MAX]]
    more = len(values) - len(shown)
    text = ", ".join(shown) + (f" and {more} more" if more else "")
    return f"{label}{'s' if len(values) > 1 else ''} {text}"
