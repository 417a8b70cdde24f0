"""The values that flow through a run, from what is read to what became of it.

The sources yield items: a `Record` (one JSON value), a `Rejected` record (not JSON, or not
readable), or a `Note`. `events.parse_event` makes a record an `Event` or a `Rejected` one. The
planner gives each event one `Outcome`: `Planned` (its `Request`s), `Skipped` (with a reason), or
`Rejected`. Delivery turns a `Planned` event into a `Delivered` one, with one `RequestResult` per
request. Every record read ends in exactly one outcome.

The types made for every record are msgspec Structs, not dataclasses: msgspec builds them in C, in
about half a dataclass's time, which a dry run over millions of events feels (docs/benchmarks.md,
fifth pass). They are final, so the few hot loops that dispatch on them can test ``type(x) is C``.
`Target` and `Prior`, made once per link and per ledger hit, are plain frozen dataclasses.

This module imports nothing else from segroute, so every other module can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal, final

import msgspec

__all__ = [
    "NOT_JSON",
    "SKIP_REASONS",
    "DeliveryOutcome",
    "Delivered",
    "Event",
    "Item",
    "KeyState",
    "Mapped",
    "MissReason",
    "Missed",
    "Note",
    "Outcome",
    "Planned",
    "Prior",
    "Record",
    "RejectReason",
    "Rejected",
    "Request",
    "RequestResult",
    "SkipReason",
    "Skipped",
    "Target",
    "TargetKind",
]

NOT_JSON: Final = object()
"""The value of a rejected record that was not JSON at all."""

RejectReason = Literal[
    # what the sources could not read
    "invalid_json",
    "invalid_utf8",
    "binary",
    "too_large",
    "unreadable",
    "unsafe",
    # JSON that is not a Segment event that can be routed
    "not_object",
    "missing_type",
    "unknown_type",
    "missing_event",
    "invalid_traits",
    "invalid_user_id",
    "missing_user",
    "unsafe_id",
    "too_deep",
]
"""Why a record was rejected; ``unsafe`` is a bundle member or compressed stream refused as hostile,
``binary`` a whole input or member that is plainly not text."""

SkipReason = Literal[
    "not_routed",
    "opted_out",
    "anonymous",
    "unlinked",
    "condition_false",
    "condition_error",
    "mapping_error",
    "profiles_off",
    "no_traits",
    "duplicate",
    "filtered",
    "limit",
    "already_sent",
    "other_shard",
    "uncertain",
    "target_failing",
]
"""Why an event was deliberately not sent (described in `SKIP_REASONS`)."""

MissReason = Literal["condition_error", "mapping_error"]
"""Why a link that names an event did not fire for it through a fault: its condition or a mapping
failed on the event. (A condition that does not hold is no fault.)"""

SKIP_REASONS: Final[dict[SkipReason, str]] = {
    "not_routed": "a type that is not routed: page, screen, group and alias by links; page, screen and "
    "alias through Courier's Segment intake",
    "opted_out": "its integrations object turns Courier off, so Segment would not deliver it to Courier",
    "anonymous": "no userId: Courier addresses users by id",
    "unlinked": "a track event that no link names",
    "condition_false": "a track event whose every link has a condition that did not hold for it",
    "condition_error": "a link's condition failed on the event (a jq error); its other links still fire",
    "mapping_error": "a link's data, recipient or profile expression failed on the event, or gave a "
    "value of the wrong kind; its other links still fire",
    "profiles_off": "an identify, with update_profiles = false in the config",
    "no_traits": "an identify with no traits to merge",
    "duplicate": "a messageId already seen in this run",
    "filtered": "left out by --type, --event, --user, --since, --until or --sample",
    "limit": "past --limit, with --order timestamp (every event was read to sort them)",
    "already_sent": "every request of the event was accepted by Courier in an earlier run (the ledger)",
    "other_shard": "another shard's share (--shard K/N), partitioned by user",
    "uncertain": "an earlier run sent a request of it and was stopped before Courier's answer was "
    "recorded, and the request's Idempotency-Key may have expired: sent only with --resend-uncertain",
    "target_failing": "its target refused every request alike, so segroute stopped sending to it",
}

DeliveryOutcome = Literal["sent", "failed", "not_attempted", "skipped"]
"""What became of a request that was to be sent."""

KeyState = Literal["accepted", "unused", "unknown", "stored_failure"]
"""What Courier holds under a request's Idempotency-Key once the request ended:

- ``accepted``: it accepted the request (2xx, or 409: seen before).
- ``unused``: nothing that matters: the request never reached it, or it refused it (a 4xx) and
  stores no answer for that; sending again under the same key is safe at any time.
- ``unknown``: an attempt went out and no answer came that says what became of it (a timeout, a
  dropped connection, a gateway's 502 or 504): Courier may have acted on it. Only the same key,
  within its lifetime, makes sending again safe.
- ``stored_failure``: it answered 500, which it keeps for the key and gives back to every repeat.
"""


@final
class Record(msgspec.Struct):
    """One JSON value read from an input."""

    origin: str
    """Where it was read: ``file:line``, with ``[N]`` for item N of an array or a batch."""
    value: Any
    size: int
    """The length of its JSON text as read: bytes, or characters for a value inside a larger text."""
    text: bytes | None = None
    """The value's JSON text as read, without the whitespace around it, when the value is a whole
    NDJSON line that holds no carriage return (a line break to some readers); else None."""


@final
class Rejected(msgspec.Struct, frozen=True):
    """A record that could not be read, or is not a Segment event that can be routed."""

    origin: str
    reason: RejectReason
    detail: str
    value: Any = NOT_JSON
    """The JSON value, when the record was JSON."""


@final
class Note(msgspec.Struct, frozen=True):
    """Something about an input worth telling that is not a record (an empty file, say)."""

    origin: str
    message: str


Item = Record | Rejected | Note


@final
class Event(msgspec.Struct):
    """A valid Segment event."""

    origin: str
    data: dict[str, Any]
    """The event as read."""
    type: str
    message_id: str
    """The event's ``messageId``, or one derived from its canonical JSON when it has none."""
    user_id: str | None
    name: str | None
    """The track event's ``event``; None for other types."""
    text: bytes | None = None
    """The event's JSON text as read (`Record.text`): requests carry it as it is, unserialized."""


TargetKind = Literal["automation", "journey", "profile", "segment"]
"""An automation invoke, a journey invoke, a profile merge, or a post to Courier's Segment intake."""

_FIXED_LABELS: Final = {"profile": "profile merge", "segment": "segment intake"}


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: an automation (with the link's brand) or a journey, named by its template
    ID or alias; the user's profile; or Courier's Segment intake."""

    kind: TargetKind
    template: str | None = None
    brand: str | None = None
    label: str = field(init=False, compare=False, repr=False)
    """How summaries and reports name the target."""

    def __post_init__(self) -> None:
        label = _FIXED_LABELS.get(self.kind) or f"{self.kind} {self.template}"
        object.__setattr__(self, "label", label)


@final
class Mapped(msgspec.Struct, frozen=True):
    """A target with the body parts its link's mappings made for one event, as JSON text."""

    target: Target
    data: bytes | None
    """The body's ``data``; None for the whole event."""
    recipient: str
    profile: bytes | None
    """The body's ``profile``; None for none."""


@final
class Missed(msgspec.Struct, frozen=True):
    """A link that names an event and did not fire for it through a fault (`MissReason`)."""

    target: Target
    reason: MissReason
    detail: str


@final
class Request(msgspec.Struct):
    """One planned HTTP request, its body serialized once."""

    method: str
    url: str
    path: str
    body: bytes
    idempotency_key: str
    target: Target
    generation: int = 0
    """Which of the request's keys it carries: 0, unless Courier stored a failure (a 500) under an
    earlier one (see `transform.rekeyed`)."""
    first_key: str = ""
    """Its generation-0 key when it carries a later one; the ledger files it under that key."""

    @property
    def ledger_key(self) -> str:
        """The key the ledger knows the request by, whichever generation it carries."""
        return self.first_key or self.idempotency_key


@final
class Planned(msgspec.Struct):
    """An event routed to one or more requests."""

    event: Event
    requests: tuple[Request, ...]
    sent_before: tuple[Request, ...] = ()
    """Requests of the event the ledger says Courier accepted in an earlier run: not sent again."""
    missed: tuple[Missed, ...] = ()
    """The event's links that failed on it, while others fired."""


@final
class Skipped(msgspec.Struct):
    """An event deliberately not sent."""

    origin: str
    reason: SkipReason
    message_id: str
    event: Event | None = None
    requests: tuple[Request, ...] = ()
    """For ``already_sent``: the requests Courier accepted before; for ``uncertain``: those an earlier
    run sent without learning what became of them."""
    missed: tuple[Missed, ...] = ()
    """The event's links that failed on it (for ``condition_error`` and ``mapping_error``, and for
    ``already_sent`` and ``uncertain`` when others fired)."""


Outcome = Planned | Skipped | Rejected


@final
class RequestResult(msgspec.Struct):
    """What became of one request that was to be sent."""

    request: Request
    event: Event
    outcome: DeliveryOutcome
    reason: str
    """``""``, or ``duplicate`` for a 409 (accepted before); ``http_NNN`` (the status), ``network``,
    ``timeout``, ``deadline``, ``unauthorized`` when failed; ``stopped`` when not attempted;
    ``target_failing`` when skipped because its target refuses every request alike. A str, not a
    Literal, for the status it can carry."""
    status: int | None = None
    """The last HTTP status, if any answer came."""
    attempts: int = 0
    run_id: str | None = None
    """The ``runId`` Courier gave an accepted automation invoke."""
    request_id: str | None = None
    """The ``requestId`` Courier gave an accepted request, when it gives one."""
    detail: str = ""
    key_state: KeyState = "unused"
    """What Courier holds under the request's key now (see `KeyState`)."""


_OUTCOME_RANK: Final[dict[DeliveryOutcome, int]] = {"failed": 0, "not_attempted": 1, "skipped": 2, "sent": 3}


@final
class Delivered(msgspec.Struct):
    """An event whose requests have all ended: sent, failed, not attempted (the run stopped), or
    skipped (their target was failing)."""

    event: Event
    results: tuple[RequestResult, ...]
    sent_before: tuple[Request, ...] = ()
    """Requests of the event accepted in an earlier run, which were not sent again."""
    missed: tuple[Missed, ...] = ()
    """The event's links that failed on it (`Planned.missed`)."""

    @property
    def outcome(self) -> DeliveryOutcome:
        """The worst of its requests': failed, then not_attempted, then skipped, then sent."""
        return min((result.outcome for result in self.results), key=_OUTCOME_RANK.__getitem__)

    @property
    def reason(self) -> str:
        """The reason of the first request with the event's outcome."""
        outcome = self.outcome
        return next(result.reason for result in self.results if result.outcome == outcome)


@dataclass(frozen=True, slots=True)
class Prior:
    """What the ledger knows of a request from earlier runs."""

    accepted: bool = False
    """Courier accepted it."""
    generation: int = 0
    """Otherwise it was sent and did not end accepted: under the key of this generation, ..."""
    expires_at: float = 0.0
    """... which Courier may forget from this time on (seconds since the epoch) ..."""
    stored_failure: bool = False
    """... and which holds a 500, when True; else what became of it is unknown."""
