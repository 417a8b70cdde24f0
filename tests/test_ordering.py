"""Replaying in event time: the external sort against sorted(), spilling, merging and cleaning up."""

from __future__ import annotations

import random
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segroute import _json
from segroute.events import parse_event
from segroute.models import Event, Record, Rejected
from segroute.ordering import order_by_time

NO_TIME = "not a time"


def make(n: int, value: dict[str, Any]) -> Event:
    """Event n (its origin says which) from a dict."""
    event = parse_event(Record(f"input.ndjson:{n}", value, 0))
    assert not isinstance(event, Rejected), event
    return event


def moment(value: Any) -> datetime | None:
    """An ISO-8601 time as an aware datetime, by the standard library alone (naive means UTC)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def happened(event: Event) -> datetime | None:
    """The documented event time: ``timestamp``, else ``originalTimestamp``, else ``receivedAt``."""
    for name in ("timestamp", "originalTimestamp", "receivedAt"):
        found = moment(event.data.get(name))
        if found is not None:
            return found
    return None


def goes_before(first: Event, then: Event, position: dict[str, int]) -> bool:
    """Whether ``first`` may come right before ``then`` in the documented replay order, as a rule on
    two events: the earlier event time, then the earlier receivedAt (a time before none), then the
    smaller messageId, then the earlier input position."""
    times = [
        (happened(first), happened(then)),
        (moment(first.data.get("receivedAt")), moment(then.data.get("receivedAt"))),
    ]
    for mine, theirs in times:
        if mine != theirs:
            return theirs is None or (mine is not None and mine < theirs)
    if first.message_id != then.message_id:
        return first.message_id < then.message_id
    return position[first.origin] < position[then.origin]


def assert_in_replay_order(result: list[Event], events: list[Event]) -> None:
    """``result`` is ``events`` (each one once, unchanged) with every neighbour pair in replay order."""
    position = {event.origin: n for n, event in enumerate(events)}
    assert len(position) == len(events), "the origins must tell the events apart"
    assert sorted(position[event.origin] for event in result) == list(range(len(events)))
    assert result == [events[position[event.origin]] for event in result]
    for first, then in zip(result, result[1:], strict=False):
        assert goes_before(first, then, position), (first, then)


def random_events(count: int, seed: int) -> list[Event]:
    """Events with clashing times and ids, some with no time, some received later than they happened."""
    rng = random.Random(seed)
    events = []
    for n in range(count):
        value: dict[str, Any] = {
            "type": rng.choice(["track", "identify"]),
            "event": "Order Completed",
            "userId": f"user-{rng.randrange(5)}",
            "messageId": f"m-{rng.randrange(count // 2 + 1)}",
            "properties": {"n": n, "pad": "x" * rng.randrange(200)},
        }
        if rng.random() < 0.9:
            value["timestamp"] = f"2026-03-{rng.randrange(1, 4):02d}T{rng.randrange(3):02d}:00:00Z"
        elif rng.random() < 0.5:
            value["timestamp"] = NO_TIME
        if rng.random() < 0.7:
            value["receivedAt"] = f"2026-03-04T00:00:0{rng.randrange(3)}.000+00:00"
        events.append(make(n, value))
    return events


def leftovers(path: Path) -> list[Path]:
    return sorted(path.rglob("*"))


def test_small_input_is_sorted_in_memory(tmp_path: Path) -> None:
    events = random_events(200, seed=1)
    ordered = order_by_time(events, tmpdir=str(tmp_path))
    first = next(ordered)
    assert leftovers(tmp_path) == []
    assert_in_replay_order([first, *ordered], events)
    assert leftovers(tmp_path) == []


def test_spills_and_merges_in_several_passes(tmp_path: Path) -> None:
    events = random_events(600, seed=2)
    ordered = order_by_time(events, run_bytes=2000, fan_in=3, tmpdir=str(tmp_path))
    first = next(ordered)
    # By the first event the runs (hundreds at first) have been merged down to at most fan_in.
    runs = [path for path in leftovers(tmp_path) if path.is_file()]
    assert 1 <= len(runs) <= 3
    assert_in_replay_order([first, *ordered], events)
    assert leftovers(tmp_path) == []


def test_ties_keep_input_order() -> None:
    events = [make(n, {"type": "track", "event": "E", "userId": "u", "messageId": "same"}) for n in range(50)]
    timed = [make(50 + n, {**e.data, "timestamp": "2026-01-01T00:00:00Z"}) for n, e in enumerate(events)]
    result = list(order_by_time(events + timed, run_bytes=300, fan_in=2))
    assert [e.origin for e in result] == [e.origin for e in timed + events]


def test_events_without_a_time_come_last() -> None:
    untimed = make(0, {"type": "track", "event": "E", "userId": "u", "messageId": "a"})
    garbled = make(1, {"type": "track", "event": "E", "userId": "u", "messageId": "b", "timestamp": NO_TIME})
    late = make(2, {**untimed.data, "messageId": "c", "timestamp": "9999-12-31T23:59:59Z"})
    early = make(3, {**untimed.data, "messageId": "d", "timestamp": "0001-01-01T00:00:00Z"})
    for run_bytes in (1, 10**6):
        result = list(order_by_time([untimed, garbled, late, early], run_bytes=run_bytes))
        assert [e.message_id for e in result] == ["d", "c", "a", "b"]


def test_received_time_breaks_ties_with_none_last() -> None:
    base = {"type": "track", "event": "E", "userId": "u", "timestamp": "2026-01-01T00:00:00Z"}
    events = [
        make(0, {**base, "messageId": "a"}),
        make(1, {**base, "messageId": "b", "receivedAt": "2026-01-01T00:00:02Z"}),
        make(2, {**base, "messageId": "c", "receivedAt": "2026-01-01T00:00:01Z"}),
        make(3, {**base, "messageId": "0"}),
    ]
    assert [e.message_id for e in order_by_time(events, run_bytes=1)] == ["c", "b", "0", "a"]


def test_the_event_time_is_the_timestamp_else_original_timestamp_else_received_at_across_offsets() -> None:
    base = {"type": "track", "event": "E", "userId": "u"}
    events = [
        make(0, {**base, "messageId": "ist-0630", "timestamp": "2026-01-31T12:00:00+05:30"}),
        make(1, {**base, "messageId": "original-0700", "originalTimestamp": "2026-01-31T07:00:00Z"}),
        make(2, {**base, "messageId": "received-0600", "receivedAt": "2026-01-31T06:00:00.000Z"}),
        make(3, {**base, "messageId": "naive-0645", "timestamp": "2026-01-31T06:45:00"}),
        make(4, {**base, "messageId": "date-0000", "timestamp": "2026-01-31"}),
        make(
            5,
            {
                **base,
                "messageId": "garbled-then-original-0640",
                "timestamp": NO_TIME,
                "originalTimestamp": "2026-01-31T01:40:00-05:00",
                "receivedAt": "2026-01-31T00:00:00Z",
            },
        ),
    ]
    for run_bytes in (1, 10**6):
        assert [e.message_id for e in order_by_time(events, run_bytes=run_bytes)] == [
            "date-0000",
            "received-0600",
            "ist-0630",
            "garbled-then-original-0640",
            "naive-0645",
            "original-0700",
        ]


def test_data_round_trips_exactly(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "type": "track",
        "event": "Ünïcødé 🎉",
        "userId": 42,
        "messageId": "12345678901234567890",
        "properties": {
            "big": 2**70,
            "negative": -(2**70),
            "float": 0.1,
            "huge": 1e300,
            "whole": 1.0,
            "nested": [{"a": [1, [2, [3, {"b": None}]]]}, True, False, "", '\t\n"\\'],
            "zh": "订单完成",
            "empty": {},
        },
        "timestamp": "2026-01-01T00:00:00Z",
    }
    events = [make(n, {**data, "properties": {**data["properties"], "n": n}}) for n in range(30)]
    result = list(order_by_time(reversed(events), run_bytes=1, fan_in=2, tmpdir=str(tmp_path)))
    assert result == events[::-1]
    for got, sent in zip(result, events[::-1], strict=True):
        # Same text means same key order, and ints stay ints and floats floats.
        assert _json.dumps(got.data) == _json.dumps(sent.data)
        assert (got.origin, got.type, got.message_id, got.user_id, got.name) == (
            sent.origin,
            "track",
            "12345678901234567890",
            "42",
            "Ünïcødé 🎉",
        )
    assert leftovers(tmp_path) == []


def test_an_events_text_as_read_survives_the_runs(tmp_path: Path) -> None:
    # Tabs may sit between tokens of a line as read; the run line's first two tabs must still split it.
    texts = [
        f'{{"type":\t"track", "event": "E", "userId": "u", "messageId": "m{n}", '
        f'"timestamp": "2026-01-0{9 - n}"}}'
        for n in range(6)
    ]
    events = []
    for n, text in enumerate(texts):
        record = Record(f"in.ndjson:{n}", _json.loads(text), len(text), text.encode())
        event = parse_event(record)
        assert isinstance(event, Event)
        events.append(event)
    without_text = make(9, {"type": "track", "event": "E", "userId": "u", "messageId": "x"})
    result = list(order_by_time([*events, without_text], run_bytes=1, fan_in=2, tmpdir=str(tmp_path)))
    assert [e.text for e in result] == [t.encode() for t in reversed(texts)] + [None]
    assert [e.data for e in result] == [e.data for e in reversed(events)] + [without_text.data]


def test_an_event_json_cannot_hold_stays_in_memory(tmp_path: Path) -> None:
    events = random_events(100, seed=3)
    odd = Event(
        "odd:1",
        {"type": "track", "timestamp": "2026-03-02T00:30:00Z", "bad": "\ud800"},
        "track",
        "m-odd",
        "u",
        "E",
    )
    events.insert(50, odd)
    result = list(order_by_time(events, run_bytes=1000, fan_in=2, tmpdir=str(tmp_path)))
    assert_in_replay_order(result, events)
    assert any(e is odd for e in result)


def test_closing_early_removes_the_runs(tmp_path: Path) -> None:
    ordered = order_by_time(random_events(300, seed=4), run_bytes=2000, fan_in=4, tmpdir=str(tmp_path))
    next(ordered)
    next(ordered)
    assert leftovers(tmp_path) != []
    assert isinstance(ordered, Generator)
    ordered.close()
    assert leftovers(tmp_path) == []


def test_a_failing_input_removes_the_runs(tmp_path: Path) -> None:
    def failing() -> Iterator[Event]:
        yield from random_events(100, seed=5)
        raise OSError("input went away")

    with pytest.raises(OSError, match="input went away"):
        list(order_by_time(failing(), run_bytes=500, tmpdir=str(tmp_path)))
    assert leftovers(tmp_path) == []


def test_bad_options_fail_at_once() -> None:
    with pytest.raises(ValueError, match="fan_in"):
        order_by_time([], fan_in=1)
    with pytest.raises(ValueError, match="run_bytes"):
        order_by_time([], run_bytes=0)
    assert list(order_by_time([])) == []


times = st.one_of(
    st.none(),
    st.just(NO_TIME),
    st.sampled_from(
        ["2026-01-01T00:00:00Z", "2026-01-01T02:00:00+02:00", "2026-01-02", "2025-12-31T23:59:59.9Z"]
    ),
)
values = st.fixed_dictionaries(
    {
        "type": st.just("track"),
        "event": st.just("E"),
        "userId": st.just("u"),
        "messageId": st.sampled_from(["a", "b", "c"]),
        "timestamp": times,
        "receivedAt": times,
        "properties": st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=20), max_size=3),
    }
)


@settings(deadline=None, max_examples=60)
@given(st.lists(values, max_size=40), st.sampled_from([1, 400, 2000, 10**9]), st.sampled_from([2, 3, 64]))
def test_the_external_sort_puts_any_events_in_replay_order(
    items: list[dict[str, Any]], run_bytes: int, fan_in: int
) -> None:
    events = [make(n, {k: v for k, v in item.items() if v is not None}) for n, item in enumerate(items)]
    result = list(order_by_time(events, run_bytes=run_bytes, fan_in=fan_in))
    assert_in_replay_order(result, events)


def test_events_from_the_official_client(segment_events: list[dict[str, Any]], tmp_path: Path) -> None:
    rng = random.Random(20261129)
    stamps = [item["timestamp"] for item in segment_events]
    rng.shuffle(stamps)
    events = [
        make(n, {**item, "timestamp": stamp})
        for n, (item, stamp) in enumerate(zip(segment_events, stamps, strict=True))
    ]
    result = list(order_by_time(events, run_bytes=4000, fan_in=3, tmpdir=str(tmp_path)))
    assert_in_replay_order(result, events)
    moments = [t for t in (happened(e) for e in result) if t is not None]
    assert len(moments) == len(result)
    assert moments == sorted(moments)
    assert leftovers(tmp_path) == []
