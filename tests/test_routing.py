"""Which Courier targets an event goes to, or why it goes nowhere."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from segroute.config import Config, Link
from segroute.events import parse_event
from segroute.models import SKIP_REASONS, Event, Mapped, Missed, Record, Target
from segroute.routing import PROFILE, SEGMENT_INTAKE, LinkCounts, Router, opted_out

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


# --- journeys, conditions and mappings -----------------------------------------------------------

ORDER = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "messageId": "m1",
    "properties": {"revenue": 150, "items": [{"sku": "a"}]},
    "context": {"traits": {"email": "u1@example.com"}},
}


def routed(value: dict[str, Any], *links: Link, **options: Any) -> Any:
    """Route one event by these links: (targets, missed), or the skip reason."""
    result = Router(Config(links=list(links)), **options).route(make_event(value))
    if isinstance(result, str):
        assert result in SKIP_REASONS
    return result


def test_a_journey_link_goes_to_the_journey() -> None:
    link = Link(event="Order Completed", journey="order-journey")
    assert routed(ORDER, link) == ((Target("journey", "order-journey"),), ())
    assert routed({**ORDER, "userId": None, "anonymousId": "a"}, link) == "anonymous"


def test_a_condition_lets_through_what_it_holds_for() -> None:
    big = Link(event="Order Completed", automation="big-order", when=".properties.revenue > 100")
    assert routed(ORDER, big) == ((Target("automation", "big-order"),), ())
    small = {**ORDER, "properties": {"revenue": 50}}
    assert routed(small, big) == "condition_false"
    # jq truthiness: only false and null (and no output at all) hold the link back.
    for when, fires in [("0", True), ('""', True), ("[]", True), ("null", False), ("empty", False)]:
        link = Link(event="Order Completed", automation="a", when=when)
        assert (routed(ORDER, link) != "condition_false") is fires, when


def test_a_condition_that_fails_misses_its_link_and_the_others_still_fire() -> None:
    failing = Link(event="Order Completed", automation="big-order", when=".properties.revenue.x")
    plain = Link(event="Order Completed", journey="order-journey")
    targets, [missed] = routed(ORDER, failing, plain)
    assert targets == (Target("journey", "order-journey"),)
    assert missed == Missed(
        Target("automation", "big-order"),
        "condition_error",
        'condition failed: Cannot index number with string ("x")',
    )
    # Alone, the event goes nowhere, and says why.
    assert routed(ORDER, failing)[0] == ()
    assert routed(ORDER, failing)[1][0].reason == "condition_error"


def test_a_data_mapping_gives_the_body_data_or_misses_when_it_is_no_object() -> None:
    link = Link(event="Order Completed", automation="a", data=".properties")
    assert routed(ORDER, link) == (
        (Mapped(Target("automation", "a"), b'{"revenue":150,"items":[{"sku":"a"}]}', "u1", None),),
        (),
    )
    for data, kind in [(".properties.items", "an array"), (".nope", "null"), ("empty", "no output")]:
        bad = Link(event="Order Completed", automation="a", data=data)
        ((), [missed]) = routed(ORDER, bad)
        assert (missed.reason, missed.detail) == (
            "mapping_error",
            f"data ({data}) gave {kind}, not an object",
        )


def test_a_recipient_mapping_lets_an_anonymous_event_through() -> None:
    link = Link(event="Order Completed", journey="j", recipient=".userId // .anonymousId")
    anonymous = {**ORDER, "userId": None, "anonymousId": "anon-7"}
    assert routed(anonymous, link) == ((Mapped(Target("journey", "j"), None, "anon-7", None),), ())
    numeric = Link(event="Order Completed", journey="j", recipient=".properties.revenue")
    assert routed(ORDER, numeric) == ((Mapped(Target("journey", "j"), None, "150", None),), ())
    nobody = Link(event="Order Completed", journey="j", recipient=".properties.owner")
    assert routed(ORDER, nobody) == "anonymous"
    wrong = Link(event="Order Completed", journey="j", recipient=".properties.items")
    ((), [missed]) = routed(ORDER, wrong)
    assert missed.detail == "recipient (.properties.items) gave an array, not a string"


def test_a_profile_mapping_gives_an_object_or_none() -> None:
    link = Link(event="Order Completed", automation="a", profile="{email: .context.traits.email}")
    assert routed(ORDER, link) == (
        (Mapped(Target("automation", "a"), None, "u1", b'{"email":"u1@example.com"}'),),
        (),
    )
    none = Link(event="Order Completed", automation="a", profile=".context.nothing")
    assert routed(ORDER, none) == ((Target("automation", "a"),), ())  # null: the body's profile is null
    text = Link(event="Order Completed", automation="a", profile=".context.traits.email")
    ((), [missed]) = routed(ORDER, text)
    assert (missed.reason, missed.detail) == (
        "mapping_error",
        "profile (.context.traits.email) gave a string, not an object",
    )


def test_the_router_counts_what_each_condition_let_through() -> None:
    big = Link(event="Order Completed", automation="big-order", when=".properties.revenue > 100")
    plain = Link(event="Order Completed", automation="receipt")
    router = Router(Config(links=[big, plain]))
    for revenue in (150, 50, 500, "x"):
        router.route(make_event({**ORDER, "properties": {"revenue": revenue}}))
    router.route(make_event({**ORDER, "userId": None, "anonymousId": "a"}))
    [(link, counts)] = router.link_counts
    assert link == big  # a plain link is not counted: inspect counts its events by name
    # "x" > 100 holds in jq (strings sort after numbers): counted as let through, not as an error.
    assert counts == LinkCounts(events=5, let_through=3, fired=3, errors=0)


def test_every_official_client_event_routes_through_conditions_without_a_crash(
    segment_events: list[dict[str, Any]],
) -> None:
    links = [
        Link(event="Checkout Complete", automation="big", when=".properties.total > 40"),
        Link(
            event="Checkout Complete", journey="all", data=".properties", profile="{n: .properties.order_id}"
        ),
    ]
    router = Router(Config(links=links))
    fired: Counter[str] = Counter()
    for value in segment_events:
        result = router.route(make_event(value))
        if not isinstance(result, str):
            targets, missed = result
            assert missed == ()
            for target in targets:
                label = target.target.label if isinstance(target, Mapped) else target.label
                fired[label] += 1
    checkouts = [
        v
        for v in segment_events
        if v["type"] == "track" and v["event"] == "Checkout Complete" and v["userId"]
    ]
    assert fired["journey all"] == len(checkouts)
    assert fired["automation big"] == sum(1 for v in checkouts if v["properties"]["total"] > 40)
    assert 0 < fired["automation big"] < len(checkouts)


# --- opt-outs, and the Segment intake --------------------------------------------------------------


@pytest.mark.parametrize(
    ("integrations", "out"),
    [
        ({}, False),
        ({"Courier": False}, True),
        ({"Courier (Actions)": False}, True),
        ({"All": False}, True),
        ({"All": False, "Courier": True}, False),
        ({"All": False, "Courier (Actions)": True}, False),
        ({"All": False, "Courier": {"option": 1}}, False),
        ({"All": False, "Courier": None}, True),
        ({"All": True, "Courier": False}, True),
        ({"Courier": True, "Courier (Actions)": False}, True),
        ({"courier": False}, False),  # Segment's destination names are case-sensitive
        ({"Mixpanel": False}, False),
    ],
)
def test_opt_outs_are_what_segment_would_not_deliver_to_courier(
    integrations: dict[str, Any], out: bool
) -> None:
    assert opted_out({"integrations": integrations}) is out
    value = {**ORDER, "integrations": integrations}
    link = Link(event="Order Completed", automation="a")
    assert (routed(value, link) == "opted_out") is out
    assert routed(value, link, ignore_integrations=True) == ((Target("automation", "a"),), ())


def test_integrations_that_are_not_an_object_opt_nothing_out() -> None:
    assert not opted_out({"integrations": ["Courier"]})
    assert not opted_out({"integrations": None})


def test_via_segment_posts_track_identify_and_group_and_ignores_the_links() -> None:
    link = Link(event="Order Completed", automation="a", when="false")
    via = {"via": "segment"}
    assert routed(ORDER, link, **via) == ((SEGMENT_INTAKE,), ())
    assert routed({**ORDER, "event": "Unlinked"}, **via) == ((SEGMENT_INTAKE,), ())
    anonymous = {**ORDER, "userId": None, "anonymousId": "a"}
    assert routed(anonymous, **via) == ((SEGMENT_INTAKE,), ())  # Courier resolves it itself
    identify = {"type": "identify", "userId": "u1", "traits": {}}
    assert routed(identify, **via) == ((SEGMENT_INTAKE,), ())
    group = {"type": "group", "userId": "u1", "groupId": "g1"}
    assert routed(group, **via) == ((SEGMENT_INTAKE,), ())
    for kind in ("page", "screen", "alias"):
        assert routed({"type": kind, "userId": "u1", "previousId": "p"}, **via) == "not_routed"
    assert routed({**ORDER, "integrations": {"Courier": False}}, **via) == "opted_out"
    off = Router(Config(update_profiles=False), via="segment")
    assert off.route(make_event(identify)) == "profiles_off"
    assert Router(Config(links=[link]), via="segment").link_counts == []


def test_the_router_counts_the_events_a_link_failed_on() -> None:
    failing = Link(event="Order Completed", automation="a", when=".properties.revenue + 1 > 10")
    mapping = Link(event="Order Completed", journey="j", data=".properties.revenue > 1")
    router = Router(Config(links=[failing, mapping]))
    for revenue in (150, "x"):
        router.route(make_event({**ORDER, "properties": {"revenue": revenue}}))
    counts = {link.label: counts for link, counts in router.link_counts}
    # "x" + 1 fails; the data mapping gives a boolean each time.
    assert counts["automation a"] == LinkCounts(events=2, let_through=1, fired=1, errors=1)
    assert counts["journey j"] == LinkCounts(events=2, let_through=2, fired=0, errors=2)
    ((_, [missed]),) = [routed(ORDER, mapping)]
    assert missed.detail == "data (.properties.revenue > 1) gave a boolean, not an object"


def test_an_anonymous_event_whose_plain_link_cannot_address_it_is_anonymous_not_condition_false() -> None:
    plain = Link(event="Order Completed", automation="receipt")
    # It could address the anonymous event (by its anonymousId), but its condition holds it back.
    conditional = Link(event="Order Completed", journey="j", when="false", recipient=".anonymousId")
    anonymous = {**ORDER, "userId": None, "anonymousId": "a"}
    assert routed(anonymous, conditional) == "condition_false"
    # Beside a plain link, which cannot address it, the event is anonymous: the thing to fix first.
    assert routed(anonymous, plain, conditional) == "anonymous"
