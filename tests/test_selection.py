"""Picking events: timestamps, bounds, each criterion, sampling and pruning archive day folders."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from segroute.cli import app
from segroute.events import parse_event
from segroute.models import Event, Record, Rejected
from segroute.selection import (
    DAY_MS,
    Selection,
    event_time,
    format_time,
    in_sample,
    parse_bound,
    parse_time,
    received_time,
    sample_fraction,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


def micros(text: str) -> int:
    """The expected value, worked out independently of parse_time."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // US


def make(**fields: Any) -> Event:
    """A valid event: a track by default, with the fields given (None removes one)."""
    value: dict[str, Any] = {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m1"}
    value.update(fields)
    value = {k: v for k, v in value.items() if v is not None}
    event = parse_event(Record("test:1", value, 0))
    assert not isinstance(event, Rejected), event
    return event


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T10:00:00.123Z", "2026-11-29T10:00:00.123+00:00"),
        ("2026-11-29T10:00:00.123456+00:00", "2026-11-29T10:00:00.123456+00:00"),
        ("2026-11-29T10:00:00Z", "2026-11-29T10:00:00+00:00"),
        ("2026-11-29T12:00:00+02:00", "2026-11-29T10:00:00+00:00"),
        ("2026-11-29T05:30:00-04:30", "2026-11-29T10:00:00+00:00"),
        ("2026-11-29T10:00:00", "2026-11-29T10:00:00+00:00"),
        ("2026-11-29T10:00:00.5", "2026-11-29T10:00:00.5+00:00"),
        ("2026-11-29 10:00:00Z", "2026-11-29T10:00:00+00:00"),
        ("2026-11-29", "2026-11-29T00:00:00+00:00"),
        ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999+00:00"),
        ("0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00+05:00"),
        ("9999-12-31T23:59:59.999999-05:00", "9999-12-31T23:59:59.999999-05:00"),
    ],
)
def test_parse_time_forms(text: str, expected: str) -> None:
    assert parse_time(text) == micros(expected)


def test_parse_time_known_value() -> None:
    assert parse_time("1970-01-01T00:00:00Z") == 0
    assert parse_time("1970-01-01T00:00:01.000001Z") == 1_000_001
    assert parse_time("2026-11-29T10:00:00.123Z") == 1_795_946_400_123_000


def test_parse_time_keeps_microseconds_of_longer_fractions() -> None:
    # Go clients write nanoseconds; the microseconds are kept, the rest dropped.
    assert parse_time("2026-11-29T10:00:00.123456789Z") == micros("2026-11-29T10:00:00.123456Z")


@pytest.mark.parametrize(
    "value",
    [
        None,
        1764410400,
        1.5,
        True,
        b"2026-11-29T10:00:00Z",
        ["2026-11-29"],
        "",
        "garbage",
        "2026-13-01T00:00:00Z",
        "2026-02-30",
        "2026-11-29T25:00:00Z",
        "2026-11-29T10:00:00+24:00",
        "10000-01-01T00:00:00Z",
        "0000-01-01",
        " 2026-11-29",
        "2026-11-29x10:00:00",
        "29/11/2026",
        "2026-11-29T10:00:00Z trailing",
        "\ud800",
    ],
)
def test_parse_time_rejects(value: object) -> None:
    assert parse_time(value) is None


# Offsets in whole minutes, as ISO-8601 and every Segment client write them (CPython 3.11 misreads
# sub-second offsets such as +00:00:00.000001, which no client produces).
offsets = st.builds(
    timezone,
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timedelta(minutes=m)),
)


@given(st.datetimes(timezones=offsets))
def test_parse_time_agrees_with_datetime(moment: datetime) -> None:
    expected = (moment - EPOCH) // US
    assert parse_time(moment.isoformat()) == expected
    assert parse_time(moment.isoformat(timespec="milliseconds")) == expected - moment.microsecond % 1000


@given(st.datetimes())
def test_parse_time_naive_is_utc(moment: datetime) -> None:
    assert parse_time(moment.isoformat()) == (moment.replace(tzinfo=UTC) - EPOCH) // US


@given(st.text())
def test_parse_time_never_raises(text: str) -> None:
    assert parse_time(text) is None or isinstance(parse_time(text), int)


def test_event_time_falls_back_in_order() -> None:
    a, b, c = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"
    assert event_time({"timestamp": a, "originalTimestamp": b, "receivedAt": c}) == micros(a)
    assert event_time({"timestamp": "soon", "originalTimestamp": b, "receivedAt": c}) == micros(b)
    assert event_time({"originalTimestamp": 5, "receivedAt": c}) == micros(c)
    assert event_time({}) is None
    assert received_time({"timestamp": a, "receivedAt": c}) == micros(c)
    assert received_time({"timestamp": a}) is None


# Worked out with `date -u -d 2026-01-31T12:00:00Z +%s` and the like, not with Python.
NOON = 1_769_860_800_000_000
"""2026-01-31T12:00:00Z in microseconds since the epoch."""
MIDNIGHT = 1_769_817_600_000_000
"""2026-01-31T00:00:00Z."""
NEXT_MIDNIGHT = 1_769_904_000_000_000
"""2026-02-01T00:00:00Z."""


@pytest.fixture(params=[("America/New_York", "-0500"), ("Asia/Kolkata", "+0530")], ids=lambda p: p[0])
def local_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """The process in a local zone that is not UTC (TZ and tzset), put back as it was afterwards."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX only")
    zone, offset = request.param
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        assert time.strftime("%z", time.localtime(NOON // 1_000_000)) == offset  # the zone took
        yield zone
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_a_time_without_an_offset_is_utc_whatever_the_local_zone(local_zone: str) -> None:
    assert parse_time("2026-01-31T12:00:00") == NOON
    assert parse_time("2026-01-31T12:00:00.250") == NOON + 250_000
    assert parse_time("2026-01-31") == MIDNIGHT
    assert event_time({"timestamp": "2026-01-31T12:00:00"}) == NOON
    assert event_time({"originalTimestamp": "2026-01-31T12:00:00"}) == NOON
    assert event_time({"receivedAt": "2026-01-31T12:00:00"}) == NOON
    assert received_time({"receivedAt": "2026-01-31T12:00:00"}) == NOON
    assert format_time(NOON) == "2026-01-31T12:00:00Z"


def test_a_bound_without_an_offset_is_utc_whatever_the_local_zone(local_zone: str) -> None:
    assert parse_bound("2026-01-31T12:00:00", end=False) == NOON
    assert parse_bound("2026-01-31T12:00:00", end=True) == NOON
    assert parse_bound("2026-01-31", end=False) == MIDNIGHT
    assert parse_bound("2026-01-31", end=True) == NEXT_MIDNIGHT


WINDOW_EVENTS = [
    ("before", "2026-01-30T23:59:59.999Z"),
    ("midnight", "2026-01-31T00:00:00Z"),
    ("kolkata-0700", "2026-01-31T12:30:00+05:30"),
    ("just-before-noon", "2026-01-31T11:59:59.999Z"),
    ("noon", "2026-01-31T12:00:00Z"),
    ("naive-1230", "2026-01-31T12:30:00"),
    ("new-york-1230", "2026-01-31T07:30:00-05:00"),
    ("last-of-the-hour", "2026-01-31T12:59:59.999999Z"),
    ("one", "2026-01-31T13:00:00Z"),
    ("late", "2026-01-31T23:59:59Z"),
    ("next-day", "2026-02-01T00:00:00Z"),
]


@pytest.mark.parametrize(
    ("bounds", "planned"),
    [
        (
            ["--since", "2026-01-31T12:00:00", "--until", "2026-01-31T13:00:00"],
            ["noon", "naive-1230", "new-york-1230", "last-of-the-hour"],
        ),
        (
            ["--since", "2026-01-31", "--until", "2026-01-31"],
            [name for name, _ in WINDOW_EVENTS if name not in ("before", "next-day")],
        ),
    ],
    ids=["date-times", "dates"],
)
def test_since_and_until_without_an_offset_select_in_utc_whatever_the_local_zone(
    local_zone: str,
    bounds: list[str],
    planned: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGROUTE_CONFIG", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["link", "E", "a"]).exit_code == 0
    Path("events.jsonl").write_text(
        "".join(
            json.dumps({"type": "track", "event": "E", "userId": "u", "messageId": name, "timestamp": stamp})
            + "\n"
            for name, stamp in WINDOW_EVENTS
        )
    )
    result = runner.invoke(app, ["send", "events.jsonl", "--dry-run", "-o", "jsonl", "-q", *bounds])
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["messageId"] for line in result.stdout.splitlines()] == planned


def test_parse_bound_date_for_since_and_until() -> None:
    start = micros("2026-03-10T00:00:00Z")
    assert parse_bound("2026-03-10", end=False) == start
    # The window is [since, until): an until date keeps all of that day.
    assert parse_bound("2026-03-10", end=True) == micros("2026-03-11T00:00:00Z")
    assert parse_bound(" 2026-03-10\n", end=False) == start
    assert parse_bound("9999-12-31", end=True) == micros("9999-12-31T00:00:00Z") + 86_400_000_000


def test_parse_bound_date_time_is_exact_either_way() -> None:
    for end in (False, True):
        assert parse_bound("2026-03-10T00:00:00Z", end=end) == micros("2026-03-10T00:00:00Z")
        assert parse_bound("2026-03-10T12:30:00+02:00", end=end) == micros("2026-03-10T10:30:00Z")
        assert parse_bound("2026-03-10T12:30", end=end) == micros("2026-03-10T12:30:00Z")


def never() -> float:
    """A clock for bounds that must not read one."""
    raise AssertionError("the clock was read")


def test_dates_and_date_times_never_read_the_clock() -> None:
    assert parse_bound("2026-01-31", end=True, now=never) == NEXT_MIDNIGHT
    assert parse_bound("2026-01-31T12:00:00Z", end=False, now=never) == NOON


# "now" for the relative forms: 2026-01-31T12:00:00.25Z (a quarter second is exact in binary).
NOW = NOON + 250_000
MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US


def fixed(moment_us: int) -> Callable[[], float]:
    """A clock stopped at this moment, read in seconds since the epoch as time.time gives them."""
    return lambda: moment_us / 1_000_000


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("30m", 30 * MINUTE_US),
        ("6h", 6 * HOUR_US),
        ("2d", 2 * DAY_US),
        ("1w", 7 * DAY_US),
        ("0m", 0),
        ("90 minutes", 90 * MINUTE_US),
        ("1 minute", MINUTE_US),
        ("5min", 5 * MINUTE_US),
        ("5 mins", 5 * MINUTE_US),
        ("6 hours", 6 * HOUR_US),
        ("1 hour", HOUR_US),
        ("3 hrs", 3 * HOUR_US),
        ("2 days", 2 * DAY_US),
        ("1 day", DAY_US),
        ("2 weeks", 14 * DAY_US),
        ("2d ago", 2 * DAY_US),
        ("2 days ago", 2 * DAY_US),
        ("6 Hours Ago", 6 * HOUR_US),
        ("  36h\n", 36 * HOUR_US),
        ("0048h", 48 * HOUR_US),
    ],
)
def test_parse_bound_relative_is_an_instant_back_from_now(text: str, back: int) -> None:
    # An instant for --until too: only days named by a date or word stretch to their end.
    for end in (False, True):
        assert parse_bound(text, end=end, now=fixed(NOW)) == NOW - back


def test_parse_bound_now_is_the_clock_either_way() -> None:
    for end in (False, True):
        assert parse_bound("now", end=end, now=fixed(NOW)) == NOW
        assert parse_bound(" NOW ", end=end, now=fixed(NOW)) == NOW


PREVIOUS_MIDNIGHT = MIDNIGHT - DAY_US
"""2026-01-30T00:00:00Z."""


@pytest.mark.parametrize(
    "clock",
    [NOW, MIDNIGHT, NEXT_MIDNIGHT - 1, MIDNIGHT + 30 * MINUTE_US, NEXT_MIDNIGHT - 30 * MINUTE_US],
    ids=["noon", "midnight", "last-microsecond", "00:30", "23:30"],
)
def test_today_and_yesterday_start_at_midnight_utc_and_end_the_day_for_until(clock: int) -> None:
    now = fixed(clock)
    assert parse_bound("today", end=False, now=now) == MIDNIGHT
    assert parse_bound("today", end=True, now=now) == NEXT_MIDNIGHT
    assert parse_bound("yesterday", end=False, now=now) == PREVIOUS_MIDNIGHT
    # --until yesterday keeps all of yesterday, as --until 2026-01-30 does.
    assert parse_bound("yesterday", end=True, now=now) == MIDNIGHT
    assert parse_bound("yesterday", end=True, now=now) == parse_bound("2026-01-30", end=True)
    assert parse_bound("Yesterday", end=False, now=now) == PREVIOUS_MIDNIGHT


def test_today_and_yesterday_are_utc_whatever_the_local_zone(local_zone: str) -> None:
    # Half an hour either side of a UTC midnight, New York or Kolkata is on another day.
    for clock in (MIDNIGHT + 30 * MINUTE_US, NEXT_MIDNIGHT - 30 * MINUTE_US):
        assert parse_bound("today", end=False, now=fixed(clock)) == MIDNIGHT
        assert parse_bound("yesterday", end=True, now=fixed(clock)) == MIDNIGHT


def test_today_before_the_epoch_is_still_the_day_it_falls_in() -> None:
    # Half a second before the epoch is 1969-12-31: days round down, not toward zero.
    assert parse_bound("today", end=False, now=lambda: -0.5) == -DAY_US
    assert parse_bound("yesterday", end=True, now=lambda: -0.5) == -DAY_US


def test_relative_times_reach_back_no_further_than_the_year_1() -> None:
    # 739,646 days from 0001-01-01 to 2026-01-31 (`date -u -d 0001-01-01 +%s` is -62135596800).
    assert parse_bound("739646d", end=False, now=fixed(NOON)) == micros("0001-01-01T12:00:00Z")
    for text in ("739647d", "200000w", "9" * 5000 + "m"):
        with pytest.raises(ValueError, match=r"reaches back before the year 1"):
            parse_bound(text, end=False, now=fixed(NOON))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "6x",
        "-2d",
        "+2d",
        "2d from now",
        "in 2d",
        "1M",
        "2",
        "d",
        "2.5h",
        "2d ago ago",
        "now ago",
        "tomorrow",
        "1 month",
        "\u0661d",
        "2026-03-32",
        "10/03/2026",
        "2026-03-10T",
        "1700000000",
    ],
)
def test_parse_bound_rejects_with_the_accepted_forms(text: str) -> None:
    expected = (
        r"not a time: .*; expected a date \(2026-01-31\), an ISO-8601 date-time \(.*\), "
        r"a time back from now \(30m, 6h, 2d, 1w, '90 minutes', '2 days ago'\), now, today or yesterday"
    )
    with pytest.raises(ValueError, match=expected):
        parse_bound(text, end=False, now=fixed(NOW))


@pytest.mark.parametrize(
    ("bounds", "planned"),
    [(["--since", "2d"], ["an-hour-ago"]), (["--until", "2 days ago"], ["ten-days-ago"])],
    ids=["since", "until"],
)
def test_since_and_until_relative_select_back_from_the_clock(
    bounds: list[str], planned: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI reads the real clock: the events sit days either side of the bound, so no run is close.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGROUTE_CONFIG", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["link", "E", "a"]).exit_code == 0
    now = datetime.now(UTC)
    stamps = {"ten-days-ago": now - timedelta(days=10), "an-hour-ago": now - timedelta(hours=1)}
    Path("events.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "type": "track",
                    "event": "E",
                    "userId": "u",
                    "messageId": name,
                    "timestamp": stamp.isoformat(),
                }
            )
            + "\n"
            for name, stamp in stamps.items()
        )
    )
    result = runner.invoke(app, ["send", "events.jsonl", "--dry-run", "-o", "jsonl", "-q", *bounds])
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["messageId"] for line in result.stdout.splitlines()] == planned


def test_empty_selection_matches_everything() -> None:
    selection = Selection()
    assert not selection.active
    assert selection.matches(make())
    assert selection.matches(make(type="identify", event=None, timestamp=None))
    assert selection.describe() == "every event"


def test_types() -> None:
    selection = Selection(types=frozenset({"identify", "page"}))
    assert selection.active
    assert selection.matches(make(type="identify"))
    assert selection.matches(make(type="page"))
    assert not selection.matches(make())


def test_event_patterns_exact_and_glob() -> None:
    selection = Selection(events=("Order *", "Signed Up", "Step ?"))
    assert selection.matches(make(event="Order Completed"))
    assert selection.matches(make(event="Order "))
    assert selection.matches(make(event="Signed Up"))
    assert selection.matches(make(event="Step 1"))
    assert not selection.matches(make(event="Step 10"))
    assert not selection.matches(make(event="Signed Up Again"))
    assert not selection.matches(make(event="Signed up"))
    assert not selection.matches(make(event="order completed"))  # case-sensitive
    assert not selection.matches(make(event="Re Order Completed"))


def test_event_patterns_only_match_track_events() -> None:
    selection = Selection(events=("*",))
    assert selection.matches(make(event="Anything"))
    assert not selection.matches(make(type="page", name="Order Completed"))
    assert not selection.matches(make(type="identify"))


def test_brackets_are_a_character_class() -> None:
    # As in fnmatch, "[...]" is a set of characters even when the pattern has no * or ?; "[[]" is a
    # literal "[".
    assert Selection(events=("Plan [Pro]",)).matches(make(event="Plan P"))
    assert not Selection(events=("Plan [Pro]",)).matches(make(event="Plan [Pro]"))
    assert Selection(events=("Plan [[]Pro]",)).matches(make(event="Plan [Pro]"))
    # An unclosed bracket is literal.
    assert Selection(events=("Plan [",)).matches(make(event="Plan ["))


def test_users_match_user_id_or_anonymous_id() -> None:
    selection = Selection(users=frozenset({"u1", "anon-7", "42"}))
    assert selection.matches(make())
    assert selection.matches(make(userId=None, anonymousId="anon-7"))
    assert selection.matches(make(userId="u2", anonymousId="anon-7"))
    assert selection.matches(make(userId=42))
    assert selection.matches(make(userId=None, anonymousId=42))
    assert not selection.matches(make(userId="u2"))
    assert not selection.matches(make(userId=None, anonymousId="anon-8"))


def test_time_window_is_since_inclusive_until_exclusive() -> None:
    since = parse_bound("2026-03-10", end=False)
    until = parse_bound("2026-03-11", end=True)
    selection = Selection(since=since, until=until)
    assert selection.matches(make(timestamp="2026-03-10T00:00:00Z"))
    assert selection.matches(make(timestamp="2026-03-11T23:59:59.999999Z"))
    assert selection.matches(make(timestamp="2026-03-12T01:00:00+02:00"))
    assert not selection.matches(make(timestamp="2026-03-09T23:59:59.999999Z"))
    assert not selection.matches(make(timestamp="2026-03-12T00:00:00Z"))
    assert selection.matches(
        make(originalTimestamp="2026-03-10T08:00:00Z", receivedAt="2026-03-13T00:00:00Z")
    )
    assert selection.matches(make(receivedAt="2026-03-11T08:00:00Z"))


def test_time_window_needs_a_time() -> None:
    untimed = make(timestamp="not a time")
    assert not Selection(since=0).matches(untimed)
    assert not Selection(until=2**62).matches(untimed)
    assert Selection(types=frozenset({"track"})).matches(untimed)


def test_criteria_combine() -> None:
    selection = Selection(
        types=frozenset({"track"}),
        events=("Order *",),
        users=frozenset({"u1"}),
        since=parse_bound("2026-01-01", end=False),
    )
    good = {"event": "Order Completed", "timestamp": "2026-02-01T00:00:00Z"}
    assert selection.matches(make(**good))
    assert not selection.matches(make(**{**good, "event": "Signed Up"}))
    assert not selection.matches(make(**{**good, "userId": "u2"}))
    assert not selection.matches(make(**{**good, "timestamp": "2025-12-31T23:00:00Z"}))
    assert selection.describe() == "type track; event 'Order *'; user 'u1'; since 2026-01-01T00:00:00Z"


def test_describe_everything() -> None:
    selection = Selection(
        types=frozenset({"track", "page"}),
        events=("A", "B"),
        users=frozenset({"u1", "u2", "u3", "u4", "u5"}),
        since=micros("2026-01-01T00:00:00.5Z"),
        until=micros("2026-02-01T00:00:00Z"),
        sample=0.25,
    )
    assert selection.describe() == (
        "types page, track; events 'A', 'B'; users 'u1', 'u2', 'u3' and 2 more; "
        "since 2026-01-01T00:00:00.500000Z; until 2026-02-01T00:00:00Z; sample 25% of messageIds"
    )
    assert format_time(0) == "1970-01-01T00:00:00Z"


def test_sampling_is_deterministic_and_near_the_fraction() -> None:
    ids = [f"message-{n}" for n in range(10_000)]
    first = [in_sample(i, 0.3) for i in ids]
    assert first == [in_sample(i, 0.3) for i in ids]
    assert 2_700 <= sum(first) <= 3_300
    assert all(in_sample(i, 1.0) for i in ids)
    assert not any(in_sample(i, 0.0) for i in ids)
    assert all((sample_fraction(i) < 0.3) == kept for i, kept in zip(ids, first, strict=True))
    assert all(0.0 <= sample_fraction(i) < 1.0 for i in ids)
    # A smaller sample is a subset of a larger one.
    assert all(in_sample(i, 0.3) for i in ids if in_sample(i, 0.1))


def test_sample_in_selection() -> None:
    events = [make(messageId=f"m-{n}") for n in range(2_000)]
    selection = Selection(sample=0.5)
    picked = [e.message_id for e in events if selection.matches(e)]
    assert picked == [e.message_id for e in events if in_sample(e.message_id, 0.5)]
    assert 800 <= len(picked) <= 1_200
    assert not any(Selection(sample=0.0).matches(e) for e in events)
    assert all(Selection(sample=1.0).matches(e) for e in events)
    assert in_sample("\ud800", 1.0)  # a lone surrogate hashes instead of raising


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_sample_must_be_a_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction from 0 to 1"):
        Selection(sample=fraction)


def day_ms(text: str) -> int:
    return parse_bound(text, end=False) // 1000


def test_skip_day_only_before_since() -> None:
    selection = Selection(since=parse_bound("2026-03-10", end=False))
    # The day before ends exactly at since: nothing in it can be selected.
    assert selection.skip_day(day_ms("2026-03-09"))
    assert selection.skip_day(day_ms("2026-01-01"))
    assert not selection.skip_day(day_ms("2026-03-10"))
    assert not selection.skip_day(day_ms("2026-03-11"))


def test_skip_day_with_since_inside_a_day() -> None:
    late = Selection(since=micros("2026-03-10T00:00:00.000001Z"))
    assert late.skip_day(day_ms("2026-03-09"))
    assert not late.skip_day(day_ms("2026-03-10"))
    early = Selection(since=micros("2026-03-09T23:59:59.999999Z"))
    assert not early.skip_day(day_ms("2026-03-09"))
    assert early.skip_day(day_ms("2026-03-08"))
    assert early.skip_day(day_ms("2026-03-09") - DAY_MS)


def test_until_never_prunes() -> None:
    # Events received on a later day may still have happened before until.
    selection = Selection(until=parse_bound("2026-03-10", end=True))
    assert not selection.skip_day(day_ms("2026-03-20"))
    assert not selection.skip_day(day_ms("2026-03-01"))
    assert not Selection().skip_day(0)
    assert not Selection(types=frozenset({"track"})).skip_day(day_ms("1999-01-01"))
