"""The pipeline: one outcome per record read, in input order, duplicates caught in a bounded window."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from segroute.config import Config, Link
from segroute.models import (
    NOT_JSON,
    Note,
    Planned,
    Prior,
    Rejected,
    Request,
    Skipped,
)
from segroute.pipeline import plan
from segroute.routing import Router
from segroute.selection import Selection, parse_bound
from segroute.sources import iter_stream
from segroute.summary import Summary

BASE = "https://api.courier.com"
CONFIG = Config(links=[Link(event="Checkout Complete", automation="order-confirmation")])


def run(data: bytes, config: Config = CONFIG, **options: Any) -> list[Any]:
    return list(plan(iter_stream(io.BytesIO(data), "in.jsonl"), Router(config), base_url=BASE, **options))


def origin(outcome: Planned | Skipped | Rejected) -> str:
    """Where the record an outcome is about was read."""
    return outcome.event.origin if isinstance(outcome, Planned) else outcome.origin


def kinds(outcomes: list[Any]) -> list[tuple[str, str, str]]:
    """(origin, outcome, reason) of each outcome, in input order."""
    found = [
        (origin(o), type(o).__name__, getattr(o, "reason", "")) for o in outcomes if not isinstance(o, Note)
    ]
    return sorted(found, key=lambda kind: int(kind[0].rsplit(":", 1)[1]))


def lines(*events: Any) -> bytes:
    return b"".join((e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n" for e in events)


def track(message_id: str, user: str | None = "u1", name: str = "Checkout Complete") -> dict[str, Any]:
    return {"type": "track", "event": name, "userId": user, "anonymousId": "a1", "messageId": message_id}


def test_each_record_ends_in_one_outcome_in_input_order() -> None:
    outcomes = run(
        lines(
            track("m1"),
            b"{oops",
            track("m1"),
            track("m2", name="Unlinked"),
            track("m3", user=None),
            {"type": "page", "userId": "u1"},
            {"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}},
            [1, 2],
        )
    )
    kinds = [(type(o).__name__, getattr(o, "reason", "")) for o in outcomes]
    assert kinds == [
        ("Planned", ""),
        ("Rejected", "invalid_json"),
        ("Skipped", "duplicate"),
        ("Skipped", "unlinked"),
        ("Skipped", "anonymous"),
        ("Skipped", "not_routed"),
        ("Planned", ""),
        ("Rejected", "not_object"),
    ]
    assert [o.origin for o in outcomes if not isinstance(o, Planned)] == [
        "in.jsonl:2",
        "in.jsonl:3",
        "in.jsonl:4",
        "in.jsonl:5",
        "in.jsonl:6",
        "in.jsonl:8",
    ]
    rejected = [o for o in outcomes if isinstance(o, Rejected)]
    assert rejected[0].value is NOT_JSON
    assert rejected[1].value == [1, 2]


def test_notes_pass_through_and_are_not_outcomes() -> None:
    assert run(b"") == [Note("in.jsonl", "empty: holds no events")]


def test_duplicates_are_by_message_id_even_across_types() -> None:
    outcomes = run(
        lines(track("same"), {"type": "identify", "userId": "u", "traits": {"a": 1}, "messageId": "same"})
    )
    assert isinstance(outcomes[1], Skipped) and outcomes[1].reason == "duplicate"


def test_events_without_message_id_dedupe_on_their_content() -> None:
    event = {"type": "track", "event": "Checkout Complete", "userId": "u1"}
    outcomes = run(lines(event, event, dict(event, userId="u2")))
    assert [type(o).__name__ for o in outcomes] == ["Planned", "Skipped", "Planned"]


def test_an_event_skipped_by_routing_is_remembered_so_a_later_copy_is_a_duplicate() -> None:
    outcomes = run(
        lines(
            track("m1", name="Unlinked"),
            track("m1"),
            track("m2", user=None),
            track("m2"),
            {"type": "identify", "userId": "u1", "messageId": "m3"},
            {"type": "identify", "userId": "u1", "messageId": "m3", "traits": {"a": 1}},
        )
    )
    assert kinds(outcomes) == [
        ("in.jsonl:1", "Skipped", "unlinked"),
        ("in.jsonl:2", "Skipped", "duplicate"),
        ("in.jsonl:3", "Skipped", "anonymous"),
        ("in.jsonl:4", "Skipped", "duplicate"),
        ("in.jsonl:5", "Skipped", "no_traits"),
        ("in.jsonl:6", "Skipped", "duplicate"),
    ]


@pytest.mark.parametrize("order", ["input", "timestamp"])
def test_an_event_the_selection_leaves_out_is_not_remembered_so_a_later_copy_goes_out(order: str) -> None:
    # Only what is selected is checked for duplicates: a copy left out was never going to be sent.
    old, new = "2026-01-30T23:00:00Z", "2026-01-31T08:00:00Z"
    outcomes = run(
        lines(
            dict(track("m1"), timestamp=old),
            dict(track("m1"), timestamp=new),
            dict(track("m1"), timestamp=new),
        ),
        selection=Selection(since=parse_bound("2026-01-31", end=False)),
        order=order,
    )
    assert kinds(outcomes) == [
        ("in.jsonl:1", "Skipped", "filtered"),
        ("in.jsonl:2", "Planned", ""),
        ("in.jsonl:3", "Skipped", "duplicate"),
    ]


def test_an_event_of_another_shard_is_not_remembered_so_a_copy_that_falls_to_this_shard_goes_out() -> None:
    # user-1 falls to shard 1 of 3 and user-0 to shard 2 (BLAKE2b of "u:<userId>", by b2sum).
    data = lines(track("m1", user="user-1"), track("m1", user="user-0"), track("m1", user="user-0"))
    assert kinds(run(data, shard=(2, 3))) == [
        ("in.jsonl:1", "Skipped", "other_shard"),
        ("in.jsonl:2", "Planned", ""),
        ("in.jsonl:3", "Skipped", "duplicate"),
    ]
    assert kinds(run(data, shard=(1, 3))) == [
        ("in.jsonl:1", "Planned", ""),
        ("in.jsonl:2", "Skipped", "other_shard"),
        ("in.jsonl:3", "Skipped", "other_shard"),
    ]


def test_a_duplicate_counts_toward_the_limit_and_a_copy_past_the_limit_is_skipped_as_limit() -> None:
    # --limit counts selected events in replay order, duplicates too; with --order timestamp every
    # event past it is skipped as `limit`, a copy of one planned too.
    def at(message_id: str, hour: int) -> dict[str, Any]:
        return dict(track(message_id), timestamp=f"2026-01-31T{hour:02d}:00:00Z")

    outcomes = run(lines(at("m1", 13), at("m2", 12), at("m1", 10), at("m1", 11)), order="timestamp", limit=2)
    assert kinds(outcomes) == [
        ("in.jsonl:1", "Skipped", "limit"),
        ("in.jsonl:2", "Skipped", "limit"),
        ("in.jsonl:3", "Planned", ""),
        ("in.jsonl:4", "Skipped", "duplicate"),
    ]


# BLAKE2b-64 of "u:<userId>" or "a:<anonymousId>" (by b2sum -l 64) modulo 3, plus 1.
SHARD_OF = {
    "u:user-0": 2,
    "u:user-1": 1,
    "u:user-2": 1,
    "u:user-3": 1,
    "u:user-4": 2,
    "u:user-5": 3,
    "u:user-6": 2,
    "u:user-7": 1,
    "u:user-8": 1,
    "u:user-9": 2,
    "a:anon-0": 2,
    "a:anon-1": 3,
    "a:anon-2": 2,
    "a:anon-3": 3,
    "a:anon-4": 3,
}


def test_shards_partition_the_records_by_user_each_record_in_exactly_one_shard() -> None:
    records: list[Any] = []
    owners: list[str] = []
    for n in range(60):
        user, visitor = f"user-{n % 10}", f"anon-{n % 5}"
        records += [
            track(f"t{n}", user=user),  # every one with anonymousId a1 as well: the userId decides
            {"type": "identify", "userId": user, "messageId": f"i{n}", "traits": {"n": n}},
            {"type": "track", "event": "Checkout Complete", "anonymousId": visitor, "messageId": f"a{n}"},
        ]
        owners += [f"u:{user}", f"u:{user}", f"a:{visitor}"]
    data = lines(*records)
    taken: dict[int, set[str]] = {}
    for k in (1, 2, 3):
        outcomes = [o for o in run(data, shard=(k, 3)) if not isinstance(o, Note)]
        assert len(outcomes) == len(records)  # each shard accounts for every record it reads
        taken[k] = {origin(o) for o in outcomes if not (isinstance(o, Skipped) and o.reason == "other_shard")}
    everything = {f"in.jsonl:{n + 1}" for n in range(len(records))}
    assert taken[1] | taken[2] | taken[3] == everything
    assert taken[1].isdisjoint(taken[2]) and taken[1].isdisjoint(taken[3]) and taken[2].isdisjoint(taken[3])
    for n, owner in enumerate(owners):
        assert f"in.jsonl:{n + 1}" in taken[SHARD_OF[owner]], (n, owner)


def test_resume_picks_the_key_a_request_goes_out_under_again() -> None:
    from segroute.models import Prior
    from segroute.pipeline import KEY_LIFETIME_MARGIN, resume

    now = 1_800_000_000.0
    day = 86_400.0
    assert resume(None, now=now, resend_uncertain=False) == 0
    assert resume(Prior(accepted=True), now=now, resend_uncertain=True) == "accepted"
    # Courier stored a 500 under the key: the next generation's, however long ago.
    assert (
        resume(
            Prior(generation=2, expires_at=now + day, stored_failure=True), now=now, resend_uncertain=False
        )
        == 3
    )
    # Unknown, and Courier still holds the key: the same key, which it answers from its store.
    assert resume(Prior(generation=1, expires_at=now + day), now=now, resend_uncertain=False) == 1
    # Unknown, and the key may be gone (past it, or within the safety margin before it): held back.
    for expires in (now - day, now + KEY_LIFETIME_MARGIN - 1):
        assert resume(Prior(expires_at=expires), now=now, resend_uncertain=False) == "uncertain"
        assert resume(Prior(expires_at=expires), now=now, resend_uncertain=True) == 0


TWO_LINKS = Config(
    links=[
        Link(event="Checkout Complete", automation="order-confirmation"),
        Link(event="Checkout Complete", automation="loyalty-points"),
    ]
)
# "sr1-" + SHA-256 over "m1\nPOST <path>" (and "\n1" for generation 1), by sha256sum.
ORDER_KEY = "sr1-b64fe1c845d025ecdae17d532c6e031f"
LOYALTY_KEY = "sr1-6d457fe209ada093ff32bb53b4f0018a"
LOYALTY_KEY_1 = "sr1-85f322c2e4ee1dcfc8156b8be68e36b5"


def paths_and_keys(requests: tuple[Request, ...]) -> list[tuple[str, str]]:
    return [(request.path, request.idempotency_key) for request in requests]


def test_an_event_with_a_request_accepted_before_sends_only_the_rest() -> None:
    known = {ORDER_KEY: Prior(accepted=True)}
    [outcome] = run(lines(track("m1")), TWO_LINKS, prior=known.get)
    assert isinstance(outcome, Planned)
    assert paths_and_keys(outcome.requests) == [("/automations/loyalty-points/invoke", LOYALTY_KEY)]
    assert paths_and_keys(outcome.sent_before) == [("/automations/order-confirmation/invoke", ORDER_KEY)]
    summary = Summary()
    summary.add(outcome)
    assert summary.outcomes == {("planned", ""): 1}
    assert summary.targets == {
        ("automation order-confirmation", "already_sent"): 1,
        ("automation loyalty-points", "planned"): 1,
    }


def test_the_rest_of_an_event_accepted_in_part_goes_under_the_key_resume_picks() -> None:
    # The other request got a 500 Courier keeps for its key: it goes again under generation 1's.
    known = {ORDER_KEY: Prior(accepted=True), LOYALTY_KEY: Prior(stored_failure=True, expires_at=1.0)}
    [outcome] = run(lines(track("m1")), TWO_LINKS, prior=known.get)
    assert isinstance(outcome, Planned)
    [rest] = outcome.requests
    assert (rest.path, rest.idempotency_key, rest.generation, rest.ledger_key) == (
        "/automations/loyalty-points/invoke",
        LOYALTY_KEY_1,
        1,
        LOYALTY_KEY,
    )
    assert paths_and_keys(outcome.sent_before) == [("/automations/order-confirmation/invoke", ORDER_KEY)]


def test_an_event_with_every_request_accepted_before_is_skipped_as_already_sent() -> None:
    known = {ORDER_KEY: Prior(accepted=True), LOYALTY_KEY: Prior(accepted=True)}
    [outcome] = run(lines(track("m1")), TWO_LINKS, prior=known.get)
    assert isinstance(outcome, Skipped)
    assert (outcome.origin, outcome.reason, outcome.message_id) == ("in.jsonl:1", "already_sent", "m1")
    assert paths_and_keys(outcome.requests) == [
        ("/automations/order-confirmation/invoke", ORDER_KEY),
        ("/automations/loyalty-points/invoke", LOYALTY_KEY),
    ]
