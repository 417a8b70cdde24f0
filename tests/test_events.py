"""parse_event: the checks a record must pass to be a routable Segment event."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from segroute.events import DERIVED_ID_PREFIX, MAX_EVENT_BYTES, parse_event
from segroute.models import Event, Record, Rejected
from segroute.sources import iter_stream

DERIVED_PATTERN = re.compile(r"sr-[0-9a-f]{32}")


def parse(value: Any, size: int = 100, origin: str = "events.jsonl:3") -> Event | Rejected:
    """Parse a hand-built record."""
    return parse_event(Record(origin, value, size))


def invalid(value: Any, size: int = 100) -> Rejected:
    """The Rejected a value gives; fails the test when it is valid."""
    result = parse(value, size)
    assert isinstance(result, Rejected), result
    assert result.origin == "events.jsonl:3"
    assert result.value is value
    return result


def valid(value: dict[str, Any], size: int = 100) -> Event:
    """The Event a value gives; fails the test when it is invalid."""
    result = parse(value, size)
    assert isinstance(result, Event), result
    return result


# --- invalid records ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ([{"type": "track"}], "an array"),
        ("track", "a string"),
        (42, "a number"),
        (1.5, "a number"),
        (None, "null"),
        (True, "a boolean"),
    ],
)
def test_not_object(value: Any, kind: str) -> None:
    result = invalid(value)
    assert result.reason == "not_object"
    assert result.detail == f"not a JSON object but {kind}"


def test_not_object_comes_before_size() -> None:
    assert invalid([1, 2, 3], size=MAX_EVENT_BYTES + 1).reason == "not_object"


def test_too_large_is_measured_as_compact_json() -> None:
    value = {"type": "track", "event": "E", "userId": "u", "pad": "x" * 32_800}
    compact = len(json.dumps(value, separators=(",", ":")))
    result = invalid(value, size=compact)
    assert result.reason == "too_large"
    assert result.detail == f"{compact} bytes as compact JSON, over Segment's 32768-byte limit"


def test_whitespace_as_read_does_not_count_toward_the_limit() -> None:
    value = {"type": "track", "event": "E", "userId": "u", "pad": "x" * 30_000}
    assert valid(value, size=40_000).type == "track"


def test_multibyte_characters_count_as_bytes() -> None:
    value = {"type": "track", "event": "E", "userId": "u", "pad": "é" * 17_000}
    assert invalid(value, size=17_060).reason == "too_large"


def test_size_limit_is_inclusive() -> None:
    assert MAX_EVENT_BYTES == 32768
    base = {"type": "track", "event": "E", "userId": "u", "pad": ""}
    base["pad"] = "x" * (32768 - len(json.dumps(base, separators=(",", ":"))))
    assert valid(base, size=32768).type == "track"
    assert invalid(dict(base, pad=base["pad"] + "x"), size=32769).reason == "too_large"


def emoji_event(emoji: int) -> dict[str, Any]:
    """A track event of 50 + 2 + 4 * emoji bytes as compact UTF-8 JSON, and 52 + emoji characters."""
    return {"type": "track", "event": "E", "userId": "u", "pad": "xx" + "\N{GRINNING FACE}" * emoji}


def read_one(name: str, text: str) -> Record:
    """The one record a reader makes of an input."""
    [record] = iter_stream(io.BytesIO(text.encode()), name)
    assert isinstance(record, Record)
    return record


def compact(value: dict[str, Any]) -> str:
    """Compact JSON text, by the standard library."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def as_array_item(value: dict[str, Any]) -> Record:
    """The value as an item of a JSON array: its record's size counts characters, not bytes."""
    return read_one("in.json", "[" + compact(value) + "]\n")


def as_line(value: dict[str, Any]) -> Record:
    """The value as an NDJSON line: its record's size counts bytes."""
    return read_one("in.jsonl", compact(value) + "\n")


@pytest.mark.parametrize(("read", "size"), [(as_array_item, 8_232), (as_line, 32_772)], ids=["array", "line"])
def test_an_emoji_event_under_the_limit_in_characters_but_over_it_in_utf8_is_too_large(
    read: Any, size: int
) -> None:
    # 8,180 four-byte emoji: 32,772 bytes as compact JSON in 8,232 characters, a quarter of the limit.
    # Items of an array or a batch are measured in characters.
    value = emoji_event(8_180)
    assert len(compact(value).encode()) == 32_772
    record = read(value)
    assert record.size == size
    result = parse_event(record)
    assert isinstance(result, Rejected)
    assert (result.reason, result.detail) == (
        "too_large",
        "32772 bytes as compact JSON, over Segment's 32768-byte limit",
    )


@pytest.mark.parametrize("read", [as_array_item, as_line], ids=["array", "line"])
@pytest.mark.parametrize(("emoji", "size"), [(8_178, 32_764), (8_179, 32_768)], ids=["under", "at"])
def test_an_emoji_event_within_the_limit_in_utf8_is_valid(read: Any, emoji: int, size: int) -> None:
    value = emoji_event(emoji)
    assert len(compact(value).encode()) == size
    event = parse_event(read(value))
    assert isinstance(event, Event), event
    assert event.data == value


@pytest.mark.parametrize("kind", [1, True, ["track"]])
def test_a_type_that_is_not_a_string(kind: Any) -> None:
    assert invalid({"type": kind, "userId": "u"}).reason == "unknown_type"


@pytest.mark.parametrize("value", [{}, {"userId": "u"}, {"type": None, "userId": "u"}])
def test_missing_type(value: dict[str, Any]) -> None:
    assert invalid(value).reason == "missing_type"


@pytest.mark.parametrize("kind", ["Track", "event", "", "batch"])
def test_unknown_type(kind: str) -> None:
    result = invalid({"type": kind, "userId": "u", "event": "E"})
    assert result.reason == "unknown_type"
    assert repr(kind) in result.detail


@pytest.mark.parametrize(
    "extra",
    [{}, {"event": None}, {"event": 5}, {"event": ["E"]}, {"event": ""}],
    ids=["absent", "null", "number", "list", "empty"],
)
def test_missing_event(extra: dict[str, Any]) -> None:
    assert invalid({"type": "track", "userId": "u", **extra}).reason == "missing_event"


@pytest.mark.parametrize("user_id", [{"id": "u"}, ["u"], True, False])
def test_invalid_user_id(user_id: Any) -> None:
    assert invalid({"type": "track", "event": "E", "userId": user_id}).reason == "invalid_user_id"


def test_invalid_user_id_even_with_anonymous_id() -> None:
    value = {"type": "identify", "userId": {"id": "u"}, "anonymousId": "a", "traits": {}}
    assert invalid(value).reason == "invalid_user_id"


@pytest.mark.parametrize(
    "ids",
    [
        {},
        {"userId": None, "anonymousId": None},
        {"userId": "", "anonymousId": ""},
        {"userId": "", "anonymousId": None},
        {"anonymousId": {"id": "a"}},
    ],
    ids=["absent", "null", "empty", "empty-and-null", "bad-anonymous"],
)
def test_missing_user(ids: dict[str, Any]) -> None:
    assert invalid({"type": "track", "event": "E", **ids}).reason == "missing_user"
    assert invalid({"type": "page", **ids}).reason == "missing_user"


@pytest.mark.parametrize("user_id", [".", ".."])
@pytest.mark.parametrize("kind", ["track", "identify", "page"])
def test_a_user_id_that_would_name_another_url_path_is_unsafe(user_id: str, kind: str) -> None:
    result = invalid({"type": kind, "event": "E", "userId": user_id, "anonymousId": "a", "traits": {}})
    assert (result.reason, result.detail) == ("unsafe_id", f"userId {user_id!r} would name another URL path")


@pytest.mark.parametrize("user_id", ["...", "./", "a/..", " ..", ".a", 0.5])
def test_user_ids_with_dots_that_name_no_other_path_are_valid(user_id: str | float) -> None:
    event = valid({"type": "track", "event": "E", "userId": user_id})
    assert event.user_id == str(user_id)


@pytest.mark.parametrize("traits", [["email"], "a@b.c", 3])
def test_invalid_traits(traits: Any) -> None:
    assert invalid({"type": "identify", "userId": "u", "traits": traits}).reason == "invalid_traits"


def test_traits_are_only_checked_on_identify() -> None:
    assert valid({"type": "group", "userId": "u", "groupId": "g", "traits": ["x"]}).type == "group"


def test_invalid_carries_a_detail() -> None:
    assert invalid({"type": "track", "userId": "u"}).detail == "track event without an 'event' name"
    assert invalid({}).detail == "no 'type'"


# --- valid events -------------------------------------------------------------------------------


def test_track_event_fields() -> None:
    value = {
        "type": "track",
        "event": "Signed Up",
        "userId": "u1",
        "anonymousId": "a1",
        "messageId": "msg-1",
        "properties": {"plan": "pro"},
        "custom": [1, 2],
    }
    event = valid(value)
    assert event.origin == "events.jsonl:3"
    assert event.data is value
    assert event.data == {
        "type": "track",
        "event": "Signed Up",
        "userId": "u1",
        "anonymousId": "a1",
        "messageId": "msg-1",
        "properties": {"plan": "pro"},
        "custom": [1, 2],
    }
    assert event.type == "track"
    assert event.name == "Signed Up"
    assert event.user_id == "u1"
    assert event.message_id == "msg-1"


def test_identify_event_fields() -> None:
    value = {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}, "messageId": "m"}
    event = valid(value)
    assert event.data is value
    assert event.type == "identify"
    assert event.name is None
    assert event.user_id == "u1"
    assert event.message_id == "m"


@pytest.mark.parametrize("traits", [None, {}])
def test_identify_with_null_or_empty_traits_is_valid(traits: Any) -> None:
    assert valid({"type": "identify", "userId": "u", "traits": traits}).user_id == "u"


def test_name_is_none_for_other_types() -> None:
    assert valid({"type": "page", "userId": "u", "event": "ignored", "name": "Docs"}).name is None


def test_anonymous_event_is_valid_without_user_id() -> None:
    event = valid({"type": "track", "event": "E", "anonymousId": "anon-1", "userId": None})
    assert event.user_id is None


def test_empty_user_id_with_anonymous_id_is_anonymous() -> None:
    assert valid({"type": "track", "event": "E", "userId": "", "anonymousId": "a"}).user_id is None


def test_numeric_anonymous_id_is_enough() -> None:
    assert valid({"type": "track", "event": "E", "anonymousId": 5}).user_id is None


@pytest.mark.parametrize(("user_id", "text"), [(42, "42"), (0, "0"), (-7, "-7"), (12.5, "12.5")])
def test_numeric_user_id_becomes_a_string(user_id: int | float, text: str) -> None:
    value = {"type": "track", "event": "E", "userId": user_id}
    event = valid(value)
    assert event.user_id == text
    assert event.data["userId"] == user_id


def test_the_longest_integers_read_make_ids_and_derived_ids() -> None:
    # The readers refuse longer ones (past Python's 4,300-digit limit), so none gets this far.
    longest = int("9" * 4300)
    event = valid({"type": "track", "event": "E", "userId": longest, "properties": {"n": -longest}})
    assert event.user_id == "9" * 4300
    assert DERIVED_PATTERN.fullmatch(event.message_id)


def test_numeric_message_id_becomes_a_string() -> None:
    assert valid({"type": "track", "event": "E", "userId": "u", "messageId": 99}).message_id == "99"


@pytest.mark.parametrize("kind", ["identify", "track", "page", "screen", "group", "alias"])
def test_every_segment_type_is_accepted(kind: str) -> None:
    event = valid({"type": kind, "userId": "u", "event": "E", "messageId": f"m-{kind}"})
    assert event.type == kind
    assert event.message_id == f"m-{kind}"


# --- derived message ids ------------------------------------------------------------------------


def test_missing_message_id_is_derived() -> None:
    event = valid({"type": "track", "event": "E", "userId": "u"})
    assert DERIVED_ID_PREFIX == "sr-"
    assert DERIVED_PATTERN.fullmatch(event.message_id)


@pytest.mark.parametrize("message_id", [None, ""])
def test_null_or_empty_message_id_is_derived(message_id: str | None) -> None:
    event = valid({"type": "track", "event": "E", "userId": "u", "messageId": message_id})
    assert DERIVED_PATTERN.fullmatch(event.message_id)


def test_derived_id_is_stable() -> None:
    first = valid({"type": "track", "event": "E", "userId": "u", "properties": {"n": 1}})
    second = valid({"type": "track", "event": "E", "userId": "u", "properties": {"n": 1}})
    assert first.message_id == second.message_id


def test_derived_id_ignores_key_order() -> None:
    one = {
        "type": "track",
        "event": "E",
        "userId": "u",
        "properties": {"a": 1, "b": {"x": [1, {"p": 1, "q": 2}], "y": None}},
    }
    other = {
        "properties": {"b": {"y": None, "x": [1, {"q": 2, "p": 1}]}, "a": 1},
        "userId": "u",
        "event": "E",
        "type": "track",
    }
    assert valid(one).message_id == valid(other).message_id


def test_derived_id_ignores_origin_and_size() -> None:
    value = {"type": "track", "event": "E", "userId": "u"}
    one = parse_event(Record("a.jsonl:1", dict(value), 50))
    two = parse_event(Record("b.jsonl:9", dict(value), 60))
    assert isinstance(one, Event) and isinstance(two, Event)
    assert one.message_id == two.message_id


@pytest.mark.parametrize(
    "change",
    [
        {"event": "F"},
        {"userId": "v"},
        {"properties": {"n": 2}},
        {"properties": {"n": 1.0}},
        {"properties": {"n": "1"}},
        {"timestamp": "2026-11-02T09:15:00Z"},
    ],
)
def test_derived_id_differs_for_different_events(change: dict[str, Any]) -> None:
    base = {"type": "track", "event": "E", "userId": "u", "properties": {"n": 1}}
    assert valid(base).message_id != valid({**base, **change}).message_id


def test_derived_id_differs_across_types() -> None:
    assert (
        valid({"type": "page", "userId": "u"}).message_id
        != valid({"type": "screen", "userId": "u"}).message_id
    )


# --- what the official client sends -------------------------------------------------------------


def test_every_event_the_official_client_sends_is_valid(segment_events: list[dict[str, Any]]) -> None:
    for index, value in enumerate(segment_events):
        event = parse_event(Record(f"capture:{index}", value, 1000))
        assert isinstance(event, Event), event
        assert event.data is value
        assert event.type == value["type"]
        assert event.message_id == value["messageId"]
        assert event.user_id == value.get("userId")
