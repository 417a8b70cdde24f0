"""Which Courier targets an event goes to, or why it goes nowhere."""

from __future__ import annotations

from typing import Any

import pytest

from segroute.config import Config, Link
from segroute.events import parse_event
from segroute.models import SKIP_REASONS, Event, Mapped, Record, Target
from segroute.routing import PROFILE, Router

CONFIG = Config(
    links=[
        Link(event="Signed Up", automation="welcome-flow"),
        Link(event="Checkout Complete", automation="order-confirmation"),
        Link(event="Password Reset Requested", automation="password-reset"),
        Link(event="Checkout Complete", automation="loyalty-points", brand="storefront-brand"),
    ]
)


def make_event(value: dict[str, Any]) -> Event:
    """A parsed event, as the pipeline hands it over."""
    event = parse_event(Record("test.jsonl:1", value, 100))
    assert isinstance(event, Event)
    return event


def route(value: dict[str, Any], config: Config = CONFIG) -> tuple[Target | Mapped, ...] | str:
    """Route one event with a fresh router: its targets (no link failing on it), or the skip reason."""
    result = Router(config).route(make_event(value))
    if isinstance(result, str):
        assert result in SKIP_REASONS
        return result
    targets, missed = result
    assert missed == ()
    return targets


def test_linked_track_goes_to_its_automation() -> None:
    assert route({"type": "track", "event": "Signed Up", "userId": "u1"}) == (
        Target("automation", "welcome-flow", None),
    )


def test_linked_track_goes_to_every_automation_in_config_order_with_brand() -> None:
    targets = route({"type": "track", "event": "Checkout Complete", "userId": "u1"})
    assert targets == (
        Target("automation", "order-confirmation", None),
        Target("automation", "loyalty-points", "storefront-brand"),
    )


def test_config_order_decides_target_order() -> None:
    config = Config(
        links=[
            Link(event="E", automation="z"),
            Link(event="E", automation="a", brand="b"),
            Link(event="E", automation="m"),
        ]
    )
    assert route({"type": "track", "event": "E", "userId": "u"}, config) == (
        Target("automation", "z"),
        Target("automation", "a", "b"),
        Target("automation", "m"),
    )


def test_numeric_user_id_track_is_routed() -> None:
    assert route({"type": "track", "event": "Signed Up", "userId": 7}) == (
        Target("automation", "welcome-flow"),
    )


def test_unlinked_track() -> None:
    assert route({"type": "track", "event": "Product Viewed", "userId": "u1"}) == "unlinked"


def test_event_names_match_exactly() -> None:
    assert route({"type": "track", "event": "signed up", "userId": "u1"}) == "unlinked"
    assert route({"type": "track", "event": "Signed Up ", "userId": "u1"}) == "unlinked"


def test_track_without_links_is_unlinked() -> None:
    assert route({"type": "track", "event": "Signed Up", "userId": "u1"}, Config()) == "unlinked"


def test_anonymous_track() -> None:
    assert route({"type": "track", "event": "Signed Up", "anonymousId": "anon-1"}) == "anonymous"
    assert route({"type": "track", "event": "Signed Up", "userId": None, "anonymousId": "a"}) == "anonymous"
    assert route({"type": "track", "event": "Signed Up", "userId": "", "anonymousId": "a"}) == "anonymous"


def test_an_anonymous_track_event_nothing_links_is_unlinked() -> None:
    # What --fail-on unlinked catches: a renamed event, whoever sent it.
    assert route({"type": "track", "event": "Signed Up!", "anonymousId": "anon-1"}) == "unlinked"


def test_identify_merges_profile() -> None:
    assert route({"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}}) == (PROFILE,)
    assert PROFILE == Target("profile")


def test_identify_with_profiles_off() -> None:
    config = Config(update_profiles=False, links=list(CONFIG.links))
    assert route({"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}}, config) == (
        "profiles_off"
    )


def test_profiles_off_leaves_tracks_alone() -> None:
    config = Config(update_profiles=False, links=list(CONFIG.links))
    assert route({"type": "track", "event": "Signed Up", "userId": "u1"}, config) == (
        Target("automation", "welcome-flow"),
    )


@pytest.mark.parametrize(
    "extra",
    [{}, {"traits": None}, {"traits": {}}],
    ids=["absent", "null", "empty"],
)
def test_identify_without_traits(extra: dict[str, Any]) -> None:
    assert route({"type": "identify", "userId": "u1", **extra}) == "no_traits"


@pytest.mark.parametrize("extra", [{}, {"traits": {}}], ids=["absent", "empty"])
def test_an_identify_with_only_context_traits_has_no_traits_to_merge(extra: dict[str, Any]) -> None:
    value = {"type": "identify", "userId": "u1", "context": {"traits": {"email": "u1@example.com"}}}
    assert route({**value, **extra}) == "no_traits"


def test_anonymous_identify() -> None:
    assert route({"type": "identify", "anonymousId": "anon-1", "traits": {"a": 1}}) == "anonymous"


@pytest.mark.parametrize("kind", ["page", "screen", "group", "alias"])
def test_other_types_are_not_routed(kind: str) -> None:
    assert route({"type": kind, "userId": "u1", "event": "Signed Up", "traits": {"a": 1}}) == "not_routed"


def test_reasons_are_documented() -> None:
    assert set(SKIP_REASONS) >= {"not_routed", "anonymous", "unlinked", "profiles_off", "no_traits"}
    assert all(isinstance(text, str) and text for text in SKIP_REASONS.values())


def test_target_labels() -> None:
    assert Target("automation", "welcome-flow", "b").label == "automation welcome-flow"
    assert PROFILE.label == "profile merge"


def test_every_event_the_official_client_sends_routes_or_skips_for_a_known_reason(
    segment_events: list[dict[str, Any]],
) -> None:
    router = Router(CONFIG)
    outcomes: dict[str, str] = {}
    for value in segment_events:
        result = router.route(make_event(value))
        if isinstance(result, str):
            assert result in SKIP_REASONS
            outcomes.setdefault(value["type"], result)
        else:
            assert result
            outcomes.setdefault(value["type"], "routed")
    assert outcomes["page"] == outcomes["screen"] == outcomes["group"] == outcomes["alias"] == "not_routed"
    assert outcomes["identify"] == "routed"
