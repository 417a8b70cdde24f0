"""Issue 17 end to end: journeys, jq conditions and mappings, opt-outs, /v1/batch bodies and
``--via segment``, each sent through the command line to the fake Courier on 127.0.0.1.

The events are the official Segment client's (`segment_events`, `segment_bodies`), or copies of them
with one field changed. Every expected number, body and key is derived here, in Python, from those
events and the documented formulas, never copied from segroute's output.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from segroute.cli import app
from tests.conftest import background, isolate, received_keys, received_so_far, report, send, wait_until
from tests.courier_server import API_KEY, FakeCourier, Received

runner = CliRunner()

Event = dict[str, Any]

CHECKOUT = "Checkout Complete"
INTAKE = "/inbound/segment"
EVEN_ORDERS = (
    '.properties.tags[1] | if . == null then false elif . % 5 == 0 then error("order \\(.) needs review") '
    "else . % 2 == 0 end"
)
"""A condition on the client's checkouts: false without tags (the storefront's), an error for an
order number that is a multiple of 5, else whether it is even."""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in its own folder with the fake Courier's API key and none of the user's settings."""
    isolate(tmp_path, monkeypatch)
    monkeypatch.setenv("COURIER_API_KEY", API_KEY)


# --- helpers ------------------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def link(*args: str) -> None:
    result = invoke("link", *args)
    assert result.exit_code == 0, result.stderr


def key(message_id: str, path: str) -> str:
    """The documented Idempotency-Key: sr1- + sha256("<messageId>\\nPOST <path>")[:32]."""
    return "sr1-" + hashlib.sha256(f"{message_id}\nPOST {path}".encode()).hexdigest()[:32]


def line(event: Event) -> bytes:
    """An event's NDJSON line as these tests write it (json.dumps: ", " and ": ", ASCII only)."""
    return json.dumps(event).encode()


def compact(value: Any) -> bytes:
    """A value as segroute writes what it builds itself: compact, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def pairs(body: bytes) -> Any:
    """A JSON body with every object as its list of (key, value) pairs: key order counts."""
    return json.loads(body, object_pairs_hook=list)


def write_lines(events: Iterable[Event], path: str = "events.jsonl") -> str:
    Path(path).write_bytes(b"".join(line(event) + b"\n" for event in events))
    return path


def checkouts(events: list[Event]) -> list[Event]:
    """The client's Checkout Complete events, in order: three from the storefront (one anonymous),
    then sixty of users user-0..user-6 with tags ["a", n]."""
    found = [e for e in events if e["type"] == "track" and e["event"] == CHECKOUT]
    assert len(found) == 63
    return found


def first_of_each(events: list[Event]) -> list[Event]:
    """The events a run does not skip as duplicates: the first of each messageId."""
    seen: set[str] = set()
    kept = []
    for event in events:
        if event["messageId"] not in seen:
            seen.add(event["messageId"])
            kept.append(event)
    return kept


def order_tag(event: Event) -> int | None:
    tags = event["properties"].get("tags")
    return None if tags is None else int(tags[1])


def even_orders(event: Event) -> bool | str:
    """EVEN_ORDERS in Python: True, False, or "error"."""
    tag = order_tag(event)
    if tag is None:
        return False
    return "error" if tag % 5 == 0 else tag % 2 == 0


def on(courier: FakeCourier, path: str) -> list[Received]:
    with courier.lock:
        return [r for r in courier.received if r.path == path]


def message_ids(received: Iterable[Received], of: Callable[[Any], str]) -> list[str]:
    return sorted(of(r.json()) for r in received)


def stderr_lines(result: Result, marker: str) -> list[str]:
    return sorted(text for text in result.stderr.splitlines() if marker in text)


def file_lines(path: str) -> list[bytes]:
    return sorted(Path(path).read_bytes().splitlines())


def exported() -> list[dict[str, Any]]:
    shown = invoke("ledger", "export")
    assert shown.exit_code == 0, shown.stderr
    return [json.loads(text) for text in shown.stdout.splitlines()]


def origin(events: list[Event], event: Event, path: str = "events.jsonl") -> str:
    return f"{path}:{events.index(event) + 1}"


# --- journeys -----------------------------------------------------------------------------------


def test_a_journey_gets_the_event_line_and_user_id_under_its_own_key(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """POST /journeys/{id}/invoke with body bytes exactly {"data":<the event's line>,"user_id":<userId>},
    the documented key, the API key and JSON content type; the anonymous checkout is skipped; the ledger
    names the target journey/<id>."""
    events = checkouts(segment_events)
    write_lines(events)
    link(CHECKOUT, "order-journey", "--journey")
    result = send(courier, "events.jsonl", "--report", "report.json")
    assert result.exit_code == 0, result.stderr
    path = "/journeys/order-journey/invoke"
    named = [e for e in events if e["userId"] is not None]
    assert len(named) == 62
    expected = {
        key(e["messageId"], path): b'{"data":' + line(e) + b',"user_id":' + compact(e["userId"]) + b"}"
        for e in named
    }
    got = {r.key: r.body for r in courier.received}
    assert got == expected
    assert {r.path for r in courier.received} == {path}
    for received in courier.received:
        assert received.method == "POST"
        assert received.headers["Authorization"] == f"Bearer {API_KEY}"
        assert received.headers["Content-Type"] == "application/json"
    assert set(courier.acted.values()) == {1} and len(courier.acted) == 62
    found = report("report.json")
    assert found["outcomes"] == {"sent": {"ok": 62}, "skipped": {"anonymous": 1}}
    assert found["targets"] == {"journey order-journey": {"sent": 62}}
    assert found["link_failures"] == [] and found["problems"] == []
    rows = exported()
    assert Counter(row["automation"] for row in rows) == {"journey/order-journey": 62}
    assert {row["idempotency_key"] for row in rows} == set(expected)
    assert {row["recipient"] for row in rows} == {e["userId"] for e in named}


def test_a_journey_and_an_automation_of_one_id_are_two_requests_under_two_keys(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """Linked to journey "order" and automation "order", each named checkout makes one request to
    each path, under keys that differ and are each the documented one; the automation's body is
    {"brand","data","profile","recipient"}."""
    events = checkouts(segment_events)[:5]
    write_lines(events)
    link(CHECKOUT, "order", "--journey")
    link(CHECKOUT, "order", "--brand", "shop")
    result = send(courier, "events.jsonl")
    assert result.exit_code == 0, result.stderr
    named = [e for e in events if e["userId"] is not None]
    journeys = {r.key: r for r in on(courier, "/journeys/order/invoke")}
    automations = {r.key: r for r in on(courier, "/automations/order/invoke")}
    assert set(journeys) == {key(e["messageId"], "/journeys/order/invoke") for e in named}
    assert set(automations) == {key(e["messageId"], "/automations/order/invoke") for e in named}
    assert set(journeys).isdisjoint(automations)
    for event in named:
        body = automations[key(event["messageId"], "/automations/order/invoke")].body
        assert body == (
            b'{"brand":"shop","data":'
            + line(event)
            + b',"profile":null,"recipient":'
            + compact(event["userId"])
            + b"}"
        )
    assert len(courier.received) == 2 * len(named) == 8


# --- conditions ---------------------------------------------------------------------------------


def test_conditions_true_false_and_erroring_on_the_clients_checkouts(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """Two links with conditions: each fires where its condition holds; an error skips only that
    link (the other still fires), is a line on stderr with the event's origin, a "missed" problem and
    a link failure in the report, puts the event in --failed, and exits 1. An event no link fired for
    is skipped condition_error when one errored, else condition_false."""
    events = checkouts(segment_events)
    write_lines(events)
    link(CHECKOUT, "big-order", "--when", ".properties.total > 50")
    link(CHECKOUT, "even-orders", "--journey", "--when", EVEN_ORDERS)
    result = send(courier, "events.jsonl", "--report", "report.json", "--failed", "failed.jsonl")
    assert result.exit_code == 1, result.stderr

    named = [e for e in events if e["userId"] is not None]
    big = [e for e in named if e["properties"]["total"] > 50]
    even = [e for e in named if even_orders(e) is True]
    erroring = [e for e in named if even_orders(e) == "error"]
    sent = [e for e in named if e in big or e in even]
    assert (len(big), len(even), len(erroring), len(sent)) == (27, 24, 12, 40)  # what the client sent
    condition_error = [e for e in erroring if e not in sent]
    condition_false = [e for e in named if e not in sent and e not in erroring]

    automation_ids = message_ids(
        on(courier, "/automations/big-order/invoke"), lambda b: b["data"]["messageId"]
    )
    journey_ids = message_ids(on(courier, "/journeys/even-orders/invoke"), lambda b: b["data"]["messageId"])
    assert automation_ids == sorted(e["messageId"] for e in big)
    assert journey_ids == sorted(e["messageId"] for e in even)
    assert len(courier.received) == 27 + 24

    found = report("report.json")
    assert found["outcomes"] == {
        "sent": {"ok": len(sent)},
        "skipped": {
            "anonymous": 1,
            "condition_error": len(condition_error),
            "condition_false": len(condition_false),
        },
    }
    assert found["targets"] == {"automation big-order": {"sent": 27}, "journey even-orders": {"sent": 24}}
    assert found["link_failures"] == [
        {"target": "journey even-orders", "reason": "condition_error", "events": 12}
    ]
    expected_problems = [
        {
            "origin": origin(events, e),
            "outcome": "missed",
            "reason": "condition_error",
            "detail": f"condition failed: order {order_tag(e)} needs review",
            "messageId": e["messageId"],
            "target": "journey even-orders",
        }
        for e in erroring
    ]
    assert sorted(found["problems"], key=lambda p: p["origin"]) == sorted(
        expected_problems, key=lambda p: p["origin"]
    )
    assert found["problems_not_listed"] == 0
    assert stderr_lines(result, ": condition_error for ") == sorted(
        f"{origin(events, e)}: condition_error for journey even-orders: condition failed: "
        f"order {order_tag(e)} needs review"
        for e in erroring
    )
    # Exactly the events a link failed on, their lines as read: sent elsewhere or not at all.
    assert file_lines("failed.jsonl") == sorted(line(e) for e in erroring)

    # Run again on the same ledger: nothing goes twice, and the failing link is still reported.
    start = received_so_far(courier)
    again = send(courier, "events.jsonl", "--report", "again.json", "--failed", "again.jsonl")
    assert again.exit_code == 1, again.stderr
    assert received_so_far(courier) == start
    found = report("again.json")
    assert found["outcomes"] == {
        "skipped": {
            "already_sent": len(sent),
            "anonymous": 1,
            "condition_error": len(condition_error),
            "condition_false": len(condition_false),
        }
    }
    assert found["link_failures"] == [
        {"target": "journey even-orders", "reason": "condition_error", "events": 12}
    ]
    assert file_lines("again.jsonl") == sorted(line(e) for e in erroring)


def test_a_condition_false_for_every_event_sends_nothing_and_exits_0(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """A condition no checkout meets: every named one is skipped condition_false, nothing is sent,
    no problem, and the run exits 0."""
    write_lines(checkouts(segment_events))
    link(CHECKOUT, "refund-review", "--when", ".properties.total < 0")
    result = send(courier, "events.jsonl", "--report", "report.json", "--failed", "failed.jsonl")
    assert result.exit_code == 0, result.stderr
    assert courier.received == []
    found = report("report.json")
    assert found["outcomes"] == {"skipped": {"anonymous": 1, "condition_false": 62}}
    assert found["problems"] == [] and found["link_failures"] == []
    assert Path("failed.jsonl").read_bytes() == b""


def test_a_condition_with_no_output_does_not_fire(courier: FakeCourier, segment_events: list[Event]) -> None:
    """`.properties.products[]? | select(.sku == "CUP-STONE")` has an output only for the storefront
    checkout that bought the cup: only that one is sent; the rest (no output) are condition_false."""
    events = checkouts(segment_events)
    write_lines(events)
    link(CHECKOUT, "cup-care", "--when", '.properties.products[]? | select(.sku == "CUP-STONE")')
    result = send(courier, "events.jsonl", "--report", "report.json")
    assert result.exit_code == 0, result.stderr
    cups = [
        e
        for e in events
        if e["userId"] is not None
        and any(p["sku"] == "CUP-STONE" for p in e["properties"].get("products", []))
    ]
    assert [e["properties"]["order_id"] for e in cups] == ["ord-88412"]
    assert [r.key for r in courier.received] == [key(cups[0]["messageId"], "/automations/cup-care/invoke")]
    assert report("report.json")["outcomes"] == {
        "sent": {"ok": 1},
        "skipped": {"anonymous": 1, "condition_false": 61},
    }


def test_a_condition_that_does_not_compile_is_a_config_error_naming_the_link(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """`link --when` refuses a jq syntax error and writes no config; the same condition written into
    segroute.toml by hand stops the send before anything is sent (exit 2), naming the link."""
    refused = invoke("link", CHECKOUT, "j", "--journey", "--when", ".a >")
    assert refused.exit_code == 2
    assert refused.stderr == (
        "error: --when: not a valid jq expression: syntax error, unexpected end of file (line 1, column 4)\n"
    )
    assert not Path("segroute.toml").exists()
    write_lines(checkouts(segment_events))
    Path("segroute.toml").write_text(f'[[links]]\nevent = "{CHECKOUT}"\njourney = "j"\nwhen = ".a >"\n')
    result = send(courier, "events.jsonl")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: segroute.toml: invalid config:\n"
        f"  - links[0] (event '{CHECKOUT}').when: not a valid jq expression: syntax error, unexpected end "
        "of file (line 1, column 4)\n"
    )
    assert courier.received == []


# --- mappings -----------------------------------------------------------------------------------


def test_data_recipient_and_profile_mappings_make_the_bodies(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """A journey and an automation with data, recipient and profile mappings: the bodies are the
    mapped values in the documented key order, the journey's "profile" between data and user_id only
    when the mapping gives an object; a recipient mapping lets the anonymous checkout through."""
    events = checkouts(segment_events)
    write_lines(events)
    link(
        CHECKOUT,
        "order-journey",
        "--journey",
        "--data",
        ".properties",
        "--recipient",
        ".userId // .anonymousId",
        "--profile",
        "if .userId then {segment_user: .userId} else null end",
    )
    link(
        CHECKOUT,
        "loyalty",
        "--brand",
        "shop",
        "--data",
        "{order: .properties.order_id, currency: .properties.currency}",
        "--recipient",
        ".userId // .anonymousId",
    )
    result = send(courier, "events.jsonl", "--report", "report.json")
    assert result.exit_code == 0, result.stderr
    journey_path, automation_path = "/journeys/order-journey/invoke", "/automations/loyalty/invoke"
    expected = {}
    for event in events:
        user = event["userId"] or event["anonymousId"]
        profile = b'"profile":{"segment_user":' + compact(user) + b"}," if event["userId"] else b""
        expected[key(event["messageId"], journey_path)] = (
            b'{"data":' + compact(event["properties"]) + b"," + profile + b'"user_id":' + compact(user) + b"}"
        )
        data = {"order": event["properties"]["order_id"], "currency": event["properties"].get("currency")}
        expected[key(event["messageId"], automation_path)] = (
            b'{"brand":"shop","data":'
            + compact(data)
            + b',"profile":null,"recipient":'
            + compact(user)
            + b"}"
        )
    # jq gives numbers back as it computes them (45.0 becomes 45): bodies are compared as JSON, keys in
    # order and values as numbers, not byte for byte.
    assert {r.key: pairs(r.body) for r in courier.received} == {k: pairs(v) for k, v in expected.items()}
    anonymous = json.loads(expected[key(events[2]["messageId"], journey_path)])
    assert anonymous["user_id"] == "anon-7f3a" and "profile" not in anonymous
    found = report("report.json")
    assert found["outcomes"] == {"sent": {"ok": 63}}
    assert found["targets"] == {"automation loyalty": {"sent": 63}, "journey order-journey": {"sent": 63}}


def test_a_recipient_mapping_that_gives_a_number_sends_it_as_a_string_and_null_as_anonymous(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """--recipient '.properties.tags[1]': the sixty tagged checkouts go to the journey with the order
    number as a JSON string ("0" too); the storefront's three, where it gives null, are anonymous."""
    events = checkouts(segment_events)
    write_lines(events)
    link(CHECKOUT, "by-order", "--journey", "--recipient", ".properties.tags[1]")
    result = send(courier, "events.jsonl", "--report", "report.json")
    assert result.exit_code == 0, result.stderr
    path = "/journeys/by-order/invoke"
    tagged = [e for e in events if order_tag(e) is not None]
    assert {r.key: r.body for r in courier.received} == {
        key(e["messageId"], path): b'{"data":'
        + line(e)
        + b',"user_id":"'
        + str(order_tag(e)).encode()
        + b'"}'
        for e in tagged
    }
    assert report("report.json")["outcomes"] == {"sent": {"ok": 60}, "skipped": {"anonymous": 3}}


def test_mappings_of_the_wrong_kind_or_that_fail_are_mapping_errors(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """data that is not an object, a recipient that is an object, a profile that is a string, and a
    profile whose jq fails: each misses its link as mapping_error, with the detail on stderr and in the
    report; the plain link still fires for every named event; the anonymous checkout, which only the
    recipient-mapped link takes up, is skipped mapping_error; every event is in --failed; exit 1."""
    events = checkouts(segment_events)[:8]
    write_lines(events)
    link(CHECKOUT, "order-confirmation")
    link(CHECKOUT, "by-total", "--data", ".properties.total")
    link(CHECKOUT, "by-props", "--journey", "--recipient", ".properties")
    link(CHECKOUT, "with-order", "--profile", ".properties.order_id")
    link(CHECKOUT, "with-email", "--profile", "{email: (.context.traits.email | ascii_downcase)}")
    result = send(courier, "events.jsonl", "--report", "report.json", "--failed", "failed.jsonl")
    assert result.exit_code == 1, result.stderr
    named = [e for e in events if e["userId"] is not None]
    anonymous = [e for e in events if e["userId"] is None]
    assert (len(named), len(anonymous)) == (7, 1)
    assert {r.path for r in courier.received} == {"/automations/order-confirmation/invoke"}
    assert sorted(r.key for r in courier.received) == sorted(
        key(e["messageId"], "/automations/order-confirmation/invoke") for e in named
    )
    details = {
        "automation by-total": "data (.properties.total) gave a number, not an object",
        "journey by-props": "recipient (.properties) gave an object, not a string",
        "automation with-order": "profile (.properties.order_id) gave a string, not an object",
        "automation with-email": (
            "profile ({email: (.context.traits.email | ascii_downcase)}) failed: "
            "explode input must be a string"
        ),
    }
    missed = [(e, target) for e in named for target in details] + [(e, "journey by-props") for e in anonymous]
    assert stderr_lines(result, ": mapping_error for ") == sorted(
        f"{origin(events, e)}: mapping_error for {target}: {details[target]}" for e, target in missed
    )
    found = report("report.json")
    assert found["outcomes"] == {"sent": {"ok": 7}, "skipped": {"mapping_error": 1}}
    assert sorted(found["link_failures"], key=lambda f: f["target"]) == [
        {"target": "automation by-total", "reason": "mapping_error", "events": 7},
        {"target": "automation with-email", "reason": "mapping_error", "events": 7},
        {"target": "automation with-order", "reason": "mapping_error", "events": 7},
        {"target": "journey by-props", "reason": "mapping_error", "events": 8},
    ]
    assert sorted((p["origin"], p["target"], p["detail"], p["outcome"]) for p in found["problems"]) == sorted(
        (origin(events, e), target, details[target], "missed") for e, target in missed
    )
    assert file_lines("failed.jsonl") == sorted(line(e) for e in events)


# --- opt-outs -----------------------------------------------------------------------------------

OPT_OUTS: list[tuple[str, dict[str, Any], bool]] = [
    ("as-sent", {}, True),
    ("courier-false", {"Courier": False}, False),
    ("actions-false", {"Courier (Actions)": False}, False),
    ("all-false", {"All": False}, False),
    ("all-false-courier-true", {"All": False, "Courier": True}, True),
    ("all-false-courier-options", {"All": False, "Courier": {}}, True),
    ("all-false-actions-true", {"All": False, "Courier (Actions)": True}, True),
    ("courier-false-actions-true", {"Courier": False, "Courier (Actions)": True}, False),
    ("all-true-courier-true", {"All": True, "Courier": True}, True),
    ("other-false", {"Mixpanel": False}, True),
]
"""A variant's name, its integrations, and whether Segment would deliver it to Courier."""


def opt_out_variants(segment_events: list[Event]) -> list[tuple[Event, bool]]:
    """Copies of the client's first checkout and first identify (user-1042's), one per variant,
    each under a messageId of its own, with whether Segment would deliver it."""
    checkout = checkouts(segment_events)[0]
    identify = next(e for e in segment_events if e["type"] == "identify")
    assert checkout["userId"] == identify["userId"] == "user-1042" and checkout["integrations"] == {}
    return [
        (dict(original, integrations=integrations, messageId=f"{original['messageId']}-{name}"), delivered)
        for name, integrations, delivered in OPT_OUTS
        for original in (checkout, identify)
    ]


def sent_ids(courier: FakeCourier, variants: list[Event], path: dict[str, str]) -> list[str]:
    """The messageIds of the variants whose requests reached Courier, found by key (a profile merge's
    body carries none); ``path`` is each event type's request path."""
    by_key = {key(e["messageId"], path[e["type"]]): e["messageId"] for e in variants}
    with courier.lock:
        return sorted(by_key[r.key] for r in courier.received)


PATHS = {
    "links": {"track": "/journeys/order-journey/invoke", "identify": "/profiles/user-1042"},
    "segment": {"track": INTAKE, "identify": INTAKE},
}


@pytest.mark.parametrize("via", ["links", "segment"])
def test_opt_outs_are_skipped_as_segment_would(
    courier: FakeCourier, segment_events: list[Event], via: str
) -> None:
    """Integrations of "Courier": false, "Courier (Actions)": false (a false under either name wins),
    or "All": false without Courier true or options: skipped opted_out, tracks and identifies alike,
    in both modes; every other variant goes out."""
    made = opt_out_variants(segment_events)
    variants = [event for event, _ in made]
    write_lines(variants)
    link(CHECKOUT, "order-journey", "--journey")
    result = send(courier, "events.jsonl", "--via", via, "--report", "report.json")
    assert result.exit_code == 0, result.stderr
    expected = sorted(event["messageId"] for event, delivered in made if delivered)
    assert len(expected) == 2 * 6
    assert sent_ids(courier, variants, PATHS[via]) == expected
    assert report("report.json")["outcomes"] == {"sent": {"ok": 12}, "skipped": {"opted_out": 8}}


@pytest.mark.parametrize("via", ["links", "segment"])
def test_ignore_integrations_sends_the_opted_out_too(
    courier: FakeCourier, segment_events: list[Event], via: str
) -> None:
    """--ignore-integrations: every variant goes out, opted out or not, in both modes."""
    variants = [event for event, _ in opt_out_variants(segment_events)]
    write_lines(variants)
    link(CHECKOUT, "order-journey", "--journey")
    result = send(courier, "events.jsonl", "--via", via, "--ignore-integrations", "--report", "report.json")
    assert result.exit_code == 0, result.stderr
    assert sent_ids(courier, variants, PATHS[via]) == sorted(e["messageId"] for e in variants)
    assert set(courier.acted.values()) == {1}
    assert report("report.json")["outcomes"] == {"sent": {"ok": 20}}


# --- /v1/batch bodies ---------------------------------------------------------------------------


def merged(item: Event, body: Event) -> Event:
    """An item as the body's context and integrations apply to it: the item's own keys first and
    winning, the body's it lacks after them."""
    found = dict(item)
    for name in ("context", "integrations"):
        found[name] = item[name] | {k: v for k, v in body[name].items() if k not in item[name]}
    return found


def test_a_batch_bodys_integrations_and_context_apply_to_every_item(
    courier: FakeCourier, segment_bodies: list[Event]
) -> None:
    """The storefront's /v1/batch body with a top-level "integrations": {"All": false} and a context:
    every item is opted out but the password reset, whose own {"All": true, "Courier": true} wins;
    with --ignore-integrations the rest go too; each item's data carries the body's context keys it
    lacked (its own "library" kept) and the merged integrations."""
    body = next(
        b for b in segment_bodies if any(i.get("event") == "Password Reset Requested" for i in b["batch"])
    )
    assert len(body["batch"]) == 11 and "context" not in body and "integrations" not in body
    body = dict(
        body, context={"ip": "203.0.113.9", "library": {"name": "relay"}}, integrations={"All": False}
    )
    Path("batch.json").write_text(json.dumps(body, indent=2))
    link(CHECKOUT, "order-journey", "--journey")
    link("Password Reset Requested", "password-reset")
    items = first_of_each(body["batch"])
    assert len(items) == 10  # the storefront sent one Signed Up twice

    first = send(courier, "batch.json", "--report", "first.json")
    assert first.exit_code == 0, first.stderr
    assert report("first.json")["outcomes"] == {
        "sent": {"ok": 1},
        "skipped": {"duplicate": 1, "opted_out": 9},
    }
    (reset,) = [i for i in items if i.get("event") == "Password Reset Requested"]
    (received,) = courier.received
    assert received.path == "/automations/password-reset/invoke"
    assert received.key == key(reset["messageId"], received.path)
    data = merged(reset, body)
    assert data["integrations"] == {"All": True, "Courier": True}
    assert data["context"]["ip"] == "203.0.113.9" and data["context"]["library"]["name"] == "analytics-python"
    assert pairs(received.body) == pairs(
        b'{"brand":null,"data":' + compact(data) + b',"profile":null,"recipient":"user-1042"}'
    )

    start = received_so_far(courier)
    second = send(courier, "batch.json", "--ignore-integrations", "--report", "second.json")
    assert second.exit_code == 0, second.stderr
    assert report("second.json")["outcomes"] == {
        "sent": {"ok": 4},
        "skipped": {"already_sent": 1, "anonymous": 1, "duplicate": 1, "not_routed": 2, "unlinked": 2},
    }
    with courier.lock:
        journeys = [r for r in courier.received[start:] if r.path == "/journeys/order-journey/invoke"]
    named = [i for i in items if i.get("event") == CHECKOUT and i["userId"] is not None]
    assert len(journeys) == len(named) == 2
    expected = {
        key(i["messageId"], "/journeys/order-journey/invoke"): pairs(
            b'{"data":' + compact(merged(i, body)) + b',"user_id":' + compact(i["userId"]) + b"}"
        )
        for i in named
    }
    assert {r.key: pairs(r.body) for r in journeys} == expected
    assert all(merged(i, body)["integrations"] == {"All": False} for i in named)


# --- --via segment ------------------------------------------------------------------------------


def test_via_segment_posts_each_event_as_it_was_read(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """--via segment: every track, identify and group event, anonymous ones too, goes to POST
    /inbound/segment with its line as the body byte for byte, under the documented key, with the API
    key; page, screen and alias are not_routed; the toml's links (a journey, a condition) play no
    part; the ledger names the target "(segment intake)"; a second run sends nothing (already_sent)."""
    write_lines(segment_events)
    link(CHECKOUT, "order-journey", "--journey", "--when", "false")
    link("Signed Up", "welcome")
    result = send(courier, "events.jsonl", "--via", "segment", "--report", "first.json")
    assert result.exit_code == 0, result.stderr
    kept = first_of_each(segment_events)
    intake = [e for e in kept if e["type"] in ("track", "identify", "group")]
    anonymous = [e for e in intake if e["userId"] is None]
    assert (len(intake), len(anonymous)) == (249, 61)
    assert {r.path for r in courier.received} == {INTAKE}
    assert {r.key: r.body for r in courier.received} == {key(e["messageId"], INTAKE): line(e) for e in intake}
    assert len(courier.received) == 249 and set(courier.acted.values()) == {1}
    for received in courier.received:
        assert received.headers["Authorization"] == f"Bearer {API_KEY}"
        assert received.headers["Content-Type"] == "application/json"
    not_routed = sum(e["type"] in ("page", "screen", "alias") for e in kept)
    found = report("first.json")
    assert found["outcomes"] == {"sent": {"ok": 249}, "skipped": {"duplicate": 1, "not_routed": not_routed}}
    assert not_routed == 181
    assert found["targets"] == {"segment intake": {"sent": 249}}
    rows = exported()
    assert Counter(row["automation"] for row in rows) == {"(segment intake)": 249}

    again = send(courier, "events.jsonl", "--via", "segment", "--report", "second.json")
    assert again.exit_code == 0, again.stderr
    assert len(courier.received) == 249
    assert report("second.json")["outcomes"] == {
        "skipped": {"already_sent": 249, "duplicate": 1, "not_routed": 181}
    }


def test_via_segment_leaves_identifies_alone_when_profiles_are_off(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """update_profiles = false: identify events are skipped profiles_off through the intake too; tracks
    and groups still go."""
    write_lines(segment_events)
    Path("segroute.toml").write_text("update_profiles = false\n")
    result = send(courier, "events.jsonl", "--via", "segment", "--report", "report.json")
    assert result.exit_code == 0, result.stderr
    kept = first_of_each(segment_events)
    sent = [e for e in kept if e["type"] in ("track", "group")]
    identifies = sum(e["type"] == "identify" for e in kept)
    assert sorted(r.body for r in courier.received) == sorted(line(e) for e in sent)
    assert report("report.json")["outcomes"] == {
        "sent": {"ok": len(sent)},
        "skipped": {"duplicate": 1, "not_routed": 181, "profiles_off": identifies},
    }
    assert identifies == 62


# --- resume -------------------------------------------------------------------------------------


def journey_ids(received: Iterable[Received]) -> Counter[str]:
    """messageId -> times a journey request for it is in ``received``."""
    return Counter(r.json()["data"]["messageId"] for r in received if r.path.startswith("/journeys/"))


def test_a_journey_send_that_partly_failed_resends_only_what_failed(
    courier: FakeCourier, segment_events: list[Event]
) -> None:
    """503s for two users' journey requests (no retries): the run exits 1 with exactly those events in
    --failed; run again, it sends only them; a third run sends nothing. Courier acts once on each."""
    events = checkouts(segment_events)
    write_lines(events)
    link(CHECKOUT, "order-journey", "--journey")
    failing = {"user-3", "user-5"}
    courier.fault("status", times=10**6, status=503, match=lambda r: r.json().get("user_id") in failing)
    first = send(courier, "events.jsonl", "--max-retries", "0", "--failed", "failed.jsonl")
    assert first.exit_code == 1
    named = [e for e in events if e["userId"] is not None]
    lost = [e for e in named if e["userId"] in failing]
    assert len(lost) == 17
    assert file_lines("failed.jsonl") == sorted(line(e) for e in lost)
    with courier.lock:
        assert journey_ids(courier.acted_order) == {e["messageId"]: 1 for e in named if e not in lost}

    courier.faults.clear()
    start = received_so_far(courier)
    second = send(courier, "events.jsonl", "--report", "second.json")
    assert second.exit_code == 0, second.stderr
    with courier.lock:
        assert journey_ids(courier.received[start:]) == {e["messageId"]: 1 for e in lost}
        assert journey_ids(courier.acted_order) == {e["messageId"]: 1 for e in named}
    assert report("second.json")["outcomes"] == {
        "sent": {"ok": 17},
        "skipped": {"already_sent": 45, "anonymous": 1},
    }
    start = received_so_far(courier)
    third = send(courier, "events.jsonl")
    assert third.exit_code == 0, third.stderr
    assert received_so_far(courier) == start


def test_a_killed_journey_send_resumed_notifies_no_one_twice(
    courier: FakeCourier, segment_events: list[Event], ledger: Path
) -> None:
    """A journey send in a process of its own, killed mid-run: run again, every named checkout's
    journey is acted on exactly once, under the documented key, and nothing the ledger holds as
    accepted reaches Courier again."""
    events = checkouts(segment_events)
    write_lines(events)
    link(CHECKOUT, "order-journey", "--journey")
    courier.fault("delay", times=10**6, seconds=0.05)
    with background(courier, "first", "events.jsonl", "--concurrency", "4") as run:
        wait_until(lambda: len(courier.acted_keys()) >= 20, "twenty journeys acted on")
        run.proc.kill()
        code, _ = run.finish()
    assert code == -signal.SIGKILL
    courier.wait_until_answered()
    courier.faults.clear()
    accepted = {row["idempotency_key"] for row in exported()}
    assert 1 <= len(accepted) < 62
    start = received_so_far(courier)
    again = send(courier, "events.jsonl")
    assert again.exit_code == 0, again.stderr
    assert set(received_keys(courier, start)).isdisjoint(accepted)
    named = [e for e in events if e["userId"] is not None]
    path = "/journeys/order-journey/invoke"
    assert courier.acted_keys() == {key(e["messageId"], path) for e in named}
    assert set(courier.acted.values()) == {1}


# --- inspect ------------------------------------------------------------------------------------


def link_counts(
    events: list[Event], when: Callable[[Event], bool | str] | None, *, mapped_recipient: bool
) -> dict[str, int]:
    """What inspect counts for a link: events of its name, those its condition let through, the
    requests it made, and the errors; an event it cannot address (anonymous) is let through by none."""
    counts = {"events": len(events), "let_through": 0, "fired": 0, "errors": 0}
    for event in events:
        if event["userId"] is None and not mapped_recipient:
            continue
        verdict = True if when is None else when(event)
        if verdict == "error":
            counts["errors"] += 1
        elif verdict:
            counts["let_through"] += 1
            counts["fired"] += 1
    return counts


@pytest.mark.parametrize("ignore", [False, True])
def test_inspect_json_counts_what_each_condition_let_through(
    segment_events: list[Event], ignore: bool
) -> None:
    """inspect -o json on the client's checkouts and three opted-out copies: per link with a condition
    or a mapping, its keys and the events it saw (opted-out ones only with --ignore-integrations), let
    through, fired for and failed on; the link failures; the requests a send would make."""
    events = checkouts(segment_events)
    copies = [
        dict(e, integrations={"Courier": False}, messageId=e["messageId"] + "-off") for e in events[3:6]
    ]
    write_lines(events + copies)
    link(CHECKOUT, "order-confirmation")
    link(CHECKOUT, "big-order", "--when", ".properties.total > 50")
    link(CHECKOUT, "even-orders", "--journey", "--when", EVEN_ORDERS)
    link(
        CHECKOUT,
        "order-journey",
        "--journey",
        "--data",
        ".properties",
        "--recipient",
        ".userId // .anonymousId",
    )
    shown = invoke("inspect", "events.jsonl", "-o", "json", *(["--ignore-integrations"] if ignore else []))
    assert shown.exit_code == 0, shown.stderr
    found = json.loads(shown.stdout)
    seen = events + copies if ignore else events
    big = link_counts(seen, lambda e: e["properties"]["total"] > 50, mapped_recipient=False)
    even = link_counts(seen, even_orders, mapped_recipient=False)
    mapped = link_counts(seen, None, mapped_recipient=True)
    assert found["links"]["conditions_and_mappings"] == [
        {"event": CHECKOUT, "automation": "big-order", "when": ".properties.total > 50", **big},
        {"event": CHECKOUT, "journey": "even-orders", "when": EVEN_ORDERS, **even},
        {
            "event": CHECKOUT,
            "journey": "order-journey",
            "data": ".properties",
            "recipient": ".userId // .anonymousId",
            **mapped,
        },
    ]
    # The copies are of orders 0, 1 and 2: an error, false, and true for even-orders.
    assert even == (
        {"events": 66, "let_through": 25, "fired": 25, "errors": 13}
        if ignore
        else {"events": 63, "let_through": 24, "fired": 24, "errors": 12}
    )
    assert big["let_through"] == 27 and mapped["fired"] == len(seen)
    assert found["link_failures"] == [
        {"target": "journey even-orders", "reason": "condition_error", "events": even["errors"]}
    ]
    named = sum(e["userId"] is not None for e in seen)
    assert found["requests"] == {
        "automation big-order": 27,
        "automation order-confirmation": named,
        "journey even-orders": even["fired"],
        "journey order-journey": len(seen),
    }


# --- expressions run as one program -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (("--data", ".properties"), lambda e: ("data", e["properties"])),
        (("--recipient", ".anonymousId // .userId"), lambda e: ("user_id", e["userId"])),
    ],
)
def test_a_condition_ending_in_a_comment_with_a_backslash_keeps_the_links_mappings(
    courier: FakeCourier,
    segment_events: list[Event],
    mapping: tuple[str, str],
    expected: Callable[[Event], tuple[str, Any]],
) -> None:
    """`--when '.properties.total > 50 # big orders \\'` is valid jq on its own (link accepts it); the
    link's mapping must still apply (it once did not: the comment swallowed the expressions after it in
    the link's one program, so a data mapping was dropped and a recipient mapping crashed the run)."""
    events = checkouts(segment_events)[:1]
    write_lines(events)
    link(CHECKOUT, "big-order", "--journey", "--when", ".properties.total > 50 # big orders \\", *mapping)
    result = send(courier, "events.jsonl")
    assert result.exit_code == 0, result.stderr
    (received,) = courier.received
    name, value = expected(events[0])
    assert received.json()[name] == value
