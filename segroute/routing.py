"""Which Courier targets an event goes to. Pure, but for the jq expressions of links, which it runs.

Two ways to route (`Via`):

- ``links``: as Courier's Segment integration does with the links of segroute.toml. A track event
  invokes every automation or journey linked to its name whose condition holds for it, with the
  link's mappings; an identify merges its traits into the profile; other types are not routed.
- ``segment``: every track, identify and group event goes to Courier's Segment intake as it is, and
  Courier routes it by the links in its own UI; page, screen and alias are not routed.

Either way, an event Segment itself would not deliver to Courier (its ``integrations`` turn Courier
off) is skipped as ``opted_out``, unless that is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from segroute._json import dumps
from segroute.events import UNSAFE_IDS, json_kind
from segroute.expressions import NOTHING, ExpressionError, Expressions, truthy
from segroute.models import Event, Mapped, Missed, SkipReason, Target

if TYPE_CHECKING:
    from segroute.config import Config, Link

__all__ = [
    "COURIER_DESTINATIONS",
    "INTAKE_TYPES",
    "PROFILE",
    "SEGMENT_INTAKE",
    "LinkCounts",
    "Routed",
    "Router",
    "Via",
    "opted_out",
]

Via = Literal["links", "segment"]

PROFILE = Target("profile")
SEGMENT_INTAKE = Target("segment")
COURIER_DESTINATIONS = ("Courier", "Courier (Actions)")
"""The names Courier's destination has in Segment workspaces: its classic one, and its Actions one."""
INTAKE_TYPES = frozenset({"track", "identify", "group"})
"""What Segment's Courier (Actions) destination posts to Courier's Segment intake."""

Routed = tuple[tuple[Target | Mapped, ...], tuple[Missed, ...]]
"""The targets an event goes to (with the body parts a link's mappings made), and the links of its
name that failed on it."""

_NONE: Final[tuple[Missed, ...]] = ()
_TO_PROFILE: Final[Routed] = ((PROFILE,), _NONE)
_TO_INTAKE: Final[Routed] = ((SEGMENT_INTAKE,), _NONE)


def opted_out(event: dict[str, Any]) -> bool:
    """Whether Segment would keep the event from Courier: its ``integrations`` say ``false`` for Courier
    (under either of its names), or ``"All": false`` without naming Courier ``true`` (or with
    options, which also turn a destination on). A ``false`` under one name wins over the other."""
    integrations = event.get("integrations")
    if not integrations or type(integrations) is not dict:
        return False
    named = [integrations[name] for name in COURIER_DESTINATIONS if name in integrations]
    if any(value is False for value in named):
        return True
    return integrations.get("All") is False and not any(value not in (None, False) for value in named)


@dataclass
class LinkCounts:
    """What a link with a condition or a mapping did with the events of its name."""

    events: int = 0
    """Events of its name that came to it: selected, not duplicates, not opted out."""
    let_through: int = 0
    """Of those, the ones its condition let through (all, without one)."""
    fired: int = 0
    """The ones it made a request for."""
    errors: int = 0
    """The ones its condition or a mapping failed on."""


class _Link:
    """A link with a condition or a mapping, its expressions compiled into one program."""

    def __init__(self, link: Link, target: Target) -> None:
        self.target = target
        self.texts = link.expressions
        self.expressions = Expressions(self.texts)
        self.counts = LinkCounts()

    def apply(self, event: Event) -> Target | Mapped | Missed | Literal["anonymous", "condition_false"]:
        """The link's target for the event with its body parts, or why it does not fire."""
        counts = self.counts
        counts.events += 1
        mapped_recipient = "recipient" in self.texts
        if not mapped_recipient and event.user_id is None:
            return "anonymous"
        found = self.expressions.run(event)
        when = found.get("when", True)
        if isinstance(when, ExpressionError):
            counts.errors += 1
            return Missed(self.target, "condition_error", f"condition failed: {when}")
        if not truthy(when):
            return "condition_false"
        counts.let_through += 1
        try:
            data = self._object("data", found)
            profile = self._object("profile", found, null=True)
            recipient = self._recipient(found) if mapped_recipient else event.user_id
        except _MappingError as exc:
            counts.errors += 1
            return Missed(self.target, "mapping_error", str(exc))
        if recipient is None:
            return "anonymous"
        counts.fired += 1
        if data is None and profile is None and not mapped_recipient:
            return self.target
        return Mapped(self.target, data, recipient, profile)

    def _value(self, key: str, found: dict[str, Any]) -> Any:
        """An expression's output; `_MappingError` when it failed."""
        value = found[key]
        if isinstance(value, ExpressionError):
            raise _MappingError(f"{key} ({self.texts[key]}) failed: {value}")
        return value

    def _object(self, key: str, found: dict[str, Any], *, null: bool = False) -> bytes | None:
        """A mapping's object as JSON text; None when there is no such mapping, or (``null``) when it
        gives null or nothing."""
        if key not in found:
            return None
        value = self._value(key, found)
        if null and (value is None or value is NOTHING):
            return None
        if type(value) is not dict:
            raise _MappingError(f"{key} ({self.texts[key]}) gave {_kind(value)}, not an object")
        return dumps(value)

    def _recipient(self, found: dict[str, Any]) -> str | None:
        value = self._value("recipient", found)
        if value is None or value is NOTHING or value == "":
            return None
        text = self.texts["recipient"]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _MappingError(f"recipient ({text}) gave {_kind(value)}, not a string")
        if str(value) in UNSAFE_IDS:
            raise _MappingError(f"recipient ({text}) gave {str(value)!r}, which is no user id")
        return str(value)


class _MappingError(Exception):
    """A mapping failed on an event, or gave a value of the wrong kind."""


def _kind(value: Any) -> str:
    return "no output" if value is NOTHING else json_kind(value)


class Router:
    """Routes events by the config's links, or to Courier's Segment intake (`Via`)."""

    def __init__(self, config: Config, *, via: Via = "links", ignore_integrations: bool = False) -> None:
        self._via = via
        self._check_opt_outs = not ignore_integrations
        self._update_profiles = config.update_profiles
        self._plain: dict[str, tuple[Target, ...]] = {}
        """Event name -> its targets, for names whose links have no expressions: the usual case."""
        self._mapped: dict[str, tuple[Target | _Link, ...]] = {}
        """Event name -> its links, for names with a link with an expression."""
        self.link_counts: list[tuple[Link, LinkCounts]] = []
        """The links with a condition or a mapping, and what each did (none when routing via segment)."""
        if via == "links":
            self._compile(config)

    def _compile(self, config: Config) -> None:
        for event, links in config.links_by_event().items():
            routes: list[Target | _Link] = []
            for link in links:
                target = Target(link.kind, link.template, link.brand)
                if link.mapped:
                    compiled = _Link(link, target)
                    self.link_counts.append((link, compiled.counts))
                    routes.append(compiled)
                else:
                    routes.append(target)
            if all(type(route) is Target for route in routes):
                self._plain[event] = tuple(route for route in routes if type(route) is Target)
            else:
                self._mapped[event] = tuple(routes)

    def route(self, event: Event) -> Routed | SkipReason:
        """The event's targets and the links that failed on it, or the reason it goes nowhere."""
        if self._check_opt_outs and opted_out(event.data):
            return "opted_out"
        if self._via == "segment":
            return self._to_intake(event)
        if event.type == "track":
            name = event.name or ""
            # Unlinked first: an event nothing is linked to is the thing to fix, whoever sent it.
            targets = self._plain.get(name)
            if targets is not None:
                return "anonymous" if event.user_id is None else (targets, _NONE)
            links = self._mapped.get(name)
            return "unlinked" if links is None else self._fire(event, links)
        if event.type == "identify":
            return self._to_profile(event)
        return "not_routed"

    def _to_profile(self, event: Event) -> Routed | SkipReason:
        if event.user_id is None:
            return "anonymous"
        if not self._update_profiles:
            return "profiles_off"
        return _TO_PROFILE if event.data.get("traits") else "no_traits"

    def _to_intake(self, event: Event) -> Routed | SkipReason:
        """What Segment's Courier (Actions) destination posts: track, identify and group, whoever
        sent them (Courier resolves anonymous users itself)."""
        if event.type not in INTAKE_TYPES:
            return "not_routed"
        if event.type == "identify" and not self._update_profiles:
            return "profiles_off"
        return _TO_INTAKE

    def _fire(self, event: Event, links: tuple[Target | _Link, ...]) -> Routed | SkipReason:
        """Each link of the event's name that fires, with its body parts; else why none did, a fault
        first, then ``anonymous``, then ``condition_false``."""
        fired: list[Target | Mapped] = []
        missed: list[Missed] = []
        anonymous = False
        for link in links:
            if type(link) is Target:
                if event.user_id is None:
                    anonymous = True
                else:
                    fired.append(link)
                continue
            assert type(link) is _Link
            result = link.apply(event)
            if type(result) is Missed:
                missed.append(result)
            elif result == "anonymous":
                anonymous = True
            elif result != "condition_false":
                assert type(result) is Target or type(result) is Mapped
                fired.append(result)
        if fired or missed:
            return tuple(fired), tuple(missed)
        return "anonymous" if anonymous else "condition_false"
