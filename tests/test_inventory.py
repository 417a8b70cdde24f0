"""What inputs hold: the Inventory counted from the pipeline's outcomes, and its JSON."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from segroute.config import Config, Link
from segroute.inventory import FIRST_ORIGINS, MAX_NAMES, Inventory
from segroute.models import Planned, Prior
from segroute.pipeline import plan
from segroute.routing import Router
from segroute.selection import Selection
from segroute.sources import iter_stream

BASE = "https://api.courier.com"
CONFIG = Config(
    links=[
        Link(event="Checkout Complete", automation="order-confirmation"),
        Link(event="Checkout Complete", automation="loyalty"),
        Link(event="Order Refunded", automation="refund"),
    ]
)


def lines(*events: Any) -> bytes:
    return b"".join((e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n" for e in events)


def inventory_of(
    data: bytes,
    *,
    selection: Selection | None = None,
    prior: Callable[[str], Prior | None] | None = None,
) -> Inventory:
    """Every outcome of planning ``data`` (read as in.jsonl) counted, as ``segroute inspect`` does."""
    inventory = Inventory()
    outcomes = plan(
        iter_stream(io.BytesIO(data), "in.jsonl"),
        Router(CONFIG),
        base_url=BASE,
        selection=selection,
        prior=prior,
    )
    try:
        for outcome in outcomes:
            inventory.add(outcome)
    finally:
        inventory.close()
    return inventory


def track(
    message_id: str, name: str = "Checkout Complete", user: str | None = "u1", **fields: Any
) -> dict[str, Any]:
    event = {"type": "track", "event": name, "messageId": message_id, **fields}
    if user is not None:
        event["userId"] = user
    else:
        event["anonymousId"] = f"anon-{message_id}"
    return event


def identify(message_id: str, user: str = "u1", **fields: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "messageId": message_id, "traits": {"plan": "pro"}, **fields}


def test_events_are_counted_by_type_and_track_events_by_name() -> None:
    inventory = inventory_of(
        lines(
            track("m1"),
            track("m2", "Page Scrolled"),
            track("m3"),
            identify("i1"),
            {"type": "page", "userId": "u1", "messageId": "p1"},
            {"type": "group", "userId": "u1", "groupId": "g", "messageId": "g1"},
            track("m4", "Page Scrolled"),
            track("m5", "Checkout Complete"),
        )
    )
    assert inventory.types == {"track": 5, "identify": 1, "page": 1, "group": 1}
    assert inventory.names == {"Checkout Complete": 3, "Page Scrolled": 2}
    assert (inventory.events, inventory.summary.read, inventory.other_names) == (8, 8, 0)


def test_a_duplicate_is_counted_as_an_event_the_inputs_hold_and_as_skipped() -> None:
    inventory = inventory_of(lines(track("m1"), track("m1"), identify("i1"), identify("i1"), identify("i1")))
    assert inventory.summary.outcomes == {
        ("planned", ""): 2,
        ("skipped", "duplicate"): 3,
    }
    assert inventory.types == {"track": 2, "identify": 3}
    assert inventory.names == {"Checkout Complete": 2}
    # The requests are those of the first of each: the duplicates plan nothing.
    assert inventory.as_dict(CONFIG)["requests"] == {
        "automation loyalty": 1,
        "automation order-confirmation": 1,
        "profile merge": 1,
    }


def test_users_are_counted_once_each_and_events_without_a_user_id_as_anonymous() -> None:
    inventory = inventory_of(
        lines(
            track("m1", user="ana"),
            track("m2", user="ana"),
            identify("i1", user="bo"),
            track("m3", user=None),
            track("m4", user=None),
            {"type": "page", "anonymousId": "a9", "messageId": "p1"},
            {"type": "identify", "userId": 42, "messageId": "i2", "traits": {}},
        )
    )
    assert (inventory.distinct_users, inventory.anonymous) == (3, 3)
    assert inventory.as_dict(CONFIG)["users"] == {"distinct": 3, "anonymous_events": 3}


def test_time_ranges_are_the_earliest_and_latest_and_count_events_without_one() -> None:
    inventory = inventory_of(
        lines(
            track("m1", timestamp="2026-03-02T10:00:00Z", receivedAt="2026-03-02T10:00:01.500Z"),
            track("m2", timestamp="2026-03-01T23:59:59+02:00", receivedAt="2026-03-02T10:00:00Z"),
            track("m3", originalTimestamp="2026-03-05T08:00:00.250Z"),
            track("m4", receivedAt="2026-02-28T12:00:00Z"),
            track("m5", timestamp="not a time"),
        )
    )
    found = inventory.as_dict(CONFIG)
    # timestamp falls back on originalTimestamp, then receivedAt; received_at is receivedAt only.
    assert found["timestamp"] == {
        "first": "2026-02-28T12:00:00Z",
        "last": "2026-03-05T08:00:00.250000Z",
        "missing": 1,
    }
    assert found["received_at"] == {
        "first": "2026-02-28T12:00:00Z",
        "last": "2026-03-02T10:00:01.500000Z",
        "missing": 2,
    }


def test_time_ranges_of_no_events_are_empty() -> None:
    found = inventory_of(b"").as_dict(CONFIG)
    assert found["timestamp"] == found["received_at"] == {"first": None, "last": None, "missing": 0}
    assert (found["read"], found["events"], found["notes"]) == (0, 0, 1)


def test_rejected_records_are_counted_by_reason_with_the_first_few_origins() -> None:
    broken = [b"{broken"] * (FIRST_ORIGINS + 2)
    inventory = inventory_of(lines(track("m1"), *broken, {"type": "tack", "userId": "u"}, [1]))
    found = inventory.as_dict(CONFIG)
    assert found["rejected"] == {
        "invalid_json": {
            "count": FIRST_ORIGINS + 2,
            "first": [f"in.jsonl:{n}" for n in range(2, 2 + FIRST_ORIGINS)],
            "detail": "not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        },
        "not_object": {
            "count": 1,
            "first": [f"in.jsonl:{FIRST_ORIGINS + 5}"],
            "detail": "not a JSON object but an array",
        },
        "unknown_type": {
            "count": 1,
            "first": [f"in.jsonl:{FIRST_ORIGINS + 4}"],
            "detail": "unknown type 'tack'",
        },
    }
    assert (found["read"], found["events"]) == (FIRST_ORIGINS + 5, 1)
    assert inventory.types == {"track": 1}


def test_events_the_selection_leaves_out_are_read_but_not_counted_as_events() -> None:
    inventory = inventory_of(
        lines(track("m1", user="ana"), track("m2", user="bo"), identify("i1", user="ana"), b"{broken"),
        selection=Selection(users=frozenset({"ana"})),
    )
    assert inventory.summary.outcomes == {
        ("planned", ""): 2,
        ("skipped", "filtered"): 1,
        ("rejected", "invalid_json"): 1,
    }
    assert (inventory.summary.read, inventory.events) == (4, 2)
    assert inventory.types == {"track": 1, "identify": 1}
    assert inventory.distinct_users == 1


def test_links_are_judged_against_the_config_linked_unlinked_and_never_seen() -> None:
    inventory = inventory_of(
        lines(
            track("m1", "Page Scrolled"),
            track("m2", "Checkout Complete"),
            track("m3", "Page Scrolled"),
            track("m4", "Added To Cart"),
            track("m5", "Page Scrolled", user=None),
        )
    )
    found = inventory.as_dict(CONFIG)
    assert found["track_events"] == [
        {"event": "Page Scrolled", "count": 3, "automations": [], "journeys": []},
        {"event": "Added To Cart", "count": 1, "automations": [], "journeys": []},
        {
            "event": "Checkout Complete",
            "count": 1,
            "automations": ["order-confirmation", "loyalty"],
            "journeys": [],
        },
    ]
    assert found["links"] == {
        "linked": ["Checkout Complete"],
        "unlinked": ["Page Scrolled", "Added To Cart"],
        "never_seen": ["Order Refunded"],
        "conditions_and_mappings": [],
    }
    # Unlinked comes before anonymous: the anonymous Page Scrolled counts as unlinked too.
    assert inventory.summary.unlinked == {"Page Scrolled": 3, "Added To Cart": 1}
    assert found["outcomes"] == {"planned": {"ok": 1}, "skipped": {"unlinked": 4}}


def test_names_past_max_names_are_counted_together_and_known_ones_still_one_by_one() -> None:
    events = [track(f"m{n}", f"Event {n:05d}") for n in range(MAX_NAMES + 2)]
    events += [track("again-0", "Event 00000"), track("again-last", f"Event {MAX_NAMES + 1:05d}")]
    inventory = inventory_of(lines(*events))
    assert len(inventory.names) == MAX_NAMES
    assert inventory.names["Event 00000"] == 2
    assert f"Event {MAX_NAMES:05d}" not in inventory.names
    assert inventory.other_names == 3
    assert inventory.types == {"track": MAX_NAMES + 4}
    found = inventory.as_dict(CONFIG)
    assert found["track_events_not_listed"] == 3
    assert found["track_events"][0] == {"event": "Event 00000", "count": 2, "automations": [], "journeys": []}


def test_requests_accepted_before_are_counted_apart_from_those_to_make() -> None:
    data = lines(track("m1"), identify("i1"), track("m2"))
    assert inventory_of(data).as_dict(CONFIG)["requests_sent_before"] == {}
    # What a ledger says once the requests of the first track event and of the identify were accepted.
    earlier = plan(iter_stream(io.BytesIO(data), "in.jsonl"), Router(CONFIG), base_url=BASE, limit=2)
    accepted = {request.idempotency_key for o in earlier if isinstance(o, Planned) for request in o.requests}
    assert len(accepted) == 3

    def prior(key: str) -> Prior | None:
        return Prior(accepted=True) if key in accepted else None

    found = inventory_of(data, prior=prior).as_dict(CONFIG)
    assert found["requests"] == {"automation loyalty": 1, "automation order-confirmation": 1}
    assert found["requests_sent_before"] == {
        "automation loyalty": 1,
        "automation order-confirmation": 1,
        "profile merge": 1,
    }
    assert found["outcomes"] == {"planned": {"ok": 1}, "skipped": {"already_sent": 2}}
    # Sent before, they are still events the inputs hold.
    assert found["types"] == {"track": 2, "identify": 1}


def test_the_json_lists_every_field_in_order() -> None:
    found = inventory_of(lines(track("m1", timestamp="2026-03-02T10:00:00Z"))).as_dict(CONFIG)
    assert found == {
        "read": 1,
        "events": 1,
        "outcomes": {"planned": {"ok": 1}},
        "types": {"track": 1},
        "track_events": [
            {
                "event": "Checkout Complete",
                "count": 1,
                "automations": ["order-confirmation", "loyalty"],
                "journeys": [],
            }
        ],
        "track_events_not_listed": 0,
        "users": {"distinct": 1, "anonymous_events": 0},
        "timestamp": {"first": "2026-03-02T10:00:00Z", "last": "2026-03-02T10:00:00Z", "missing": 0},
        "received_at": {"first": None, "last": None, "missing": 1},
        "days": {"2026-03-02": 1},
        "days_not_listed": 0,
        "rejected": {},
        "links": {
            "linked": ["Checkout Complete"],
            "unlinked": [],
            "never_seen": ["Order Refunded"],
            "conditions_and_mappings": [],
        },
        "link_failures": [],
        "requests": {"automation loyalty": 1, "automation order-confirmation": 1},
        "requests_sent_before": {},
        "notes": 0,
    }
    assert list(found) == [
        "read",
        "events",
        "outcomes",
        "types",
        "track_events",
        "track_events_not_listed",
        "users",
        "timestamp",
        "received_at",
        "days",
        "days_not_listed",
        "rejected",
        "links",
        "link_failures",
        "requests",
        "requests_sent_before",
        "notes",
    ]


def test_events_are_counted_per_day_of_event_time_up_to_max_days(monkeypatch: pytest.MonkeyPatch) -> None:
    from segroute import inventory as inventory_module

    data = lines(
        track("m1", timestamp="2026-11-02T23:59:59Z"),
        track("m2", timestamp="2026-11-01T10:00:00+02:00"),  # 08:00 UTC
        track("m3", timestamp="2026-11-02T00:00:00Z"),
        track("m4"),  # no time: not in any day
        track("m5", timestamp="2026-11-05T01:00:00-03:00"),  # 04:00 UTC, the 5th
    )
    assert inventory_of(data).as_dict(CONFIG)["days"] == {"2026-11-01": 1, "2026-11-02": 2, "2026-11-05": 1}
    monkeypatch.setattr(inventory_module, "MAX_DAYS", 2)
    bounded = inventory_of(data).as_dict(CONFIG)
    assert (bounded["days"], bounded["days_not_listed"]) == ({"2026-11-01": 1, "2026-11-02": 2}, 1)
