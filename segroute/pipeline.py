"""Sources -> events -> routing -> requests: every record read ends in exactly one outcome."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from segroute.errors import ExitCode
from segroute.events import Event, Invalid, parse_event
from segroute.routing import Router
from segroute.sources import BadRecord, Item, Note
from segroute.transform import Request, build_requests

DEDUPE_WINDOW = 250_000
"""Distinct messageIds remembered for duplicate checks: at least this many of the most recent.

Segment itself dedupes within a window (about a day of ids), not forever; a bounded window keeps
memory flat however long the input.
"""

NOT_JSON = object()
"""The value of a rejected record that was not JSON at all."""


@dataclass(frozen=True, slots=True)
class Planned:
    """An event routed to one or more requests."""

    event: Event
    requests: tuple[Request, ...]


@dataclass(frozen=True, slots=True)
class Skipped:
    """An event deliberately not sent; the reason is a key of `routing.SKIP_REASONS`."""

    origin: str
    reason: str
    message_id: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that is not a valid Segment event, or could not be read."""

    origin: str
    reason: str
    detail: str
    value: Any = NOT_JSON


Outcome = Planned | Skipped | Rejected


class SeenIds:
    """Recently seen messageIds in two generations, so memory stays bounded."""

    def __init__(self, window: int = DEDUPE_WINDOW) -> None:
        self._window = window
        self._current: set[str] = set()
        self._previous: set[str] = set()

    def add(self, message_id: str) -> bool:
        """Remember an id; False when it was seen already."""
        if message_id in self._current or message_id in self._previous:
            return False
        if len(self._current) >= self._window:
            self._previous, self._current = self._current, set()
        self._current.add(message_id)
        return True


def plan(items: Iterable[Item], router: Router, *, base_url: str) -> Iterator[Outcome | Note]:
    """Turn what the sources read into outcomes, one per record, in input order; notes pass through."""
    seen = SeenIds()
    route = router.route
    for item in items:
        if isinstance(item, Note):
            yield item
            continue
        if isinstance(item, BadRecord):
            yield Rejected(item.origin, item.reason, item.detail)
            continue
        event = parse_event(item)
        if isinstance(event, Invalid):
            yield Rejected(event.origin, event.reason, event.detail, event.value)
            continue
        if not seen.add(event.message_id):
            yield Skipped(event.origin, "duplicate", event.message_id)
            continue
        targets = route(event)
        if isinstance(targets, str):
            yield Skipped(event.origin, targets, event.message_id)
            continue
        yield Planned(event, build_requests(event, targets, base_url))


@dataclass
class Summary:
    """What a run did: one outcome per record read, and the requests per target."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(outcome, reason) -> records; the reason is "" for planned records."""
    requests: Counter[str] = field(default_factory=Counter)
    """Target label -> requests."""

    def add(self, outcome: Outcome) -> None:
        """Count one outcome."""
        if isinstance(outcome, Planned):
            self.outcomes["planned", ""] += 1
            for request in outcome.requests:
                self.requests[request.target.label] += 1
        elif isinstance(outcome, Skipped):
            self.outcomes["skipped", outcome.reason] += 1
        else:
            self.outcomes["rejected", outcome.reason] += 1

    @property
    def read(self) -> int:
        """Records read: the sum of every outcome."""
        return sum(self.outcomes.values())

    def count(self, outcome: str) -> int:
        """Records that ended in one outcome, whatever the reason."""
        return sum(n for (kind, _), n in self.outcomes.items() if kind == outcome)

    @property
    def exit_code(self) -> ExitCode:
        """0 when everything was planned or deliberately skipped, 1 when anything was rejected."""
        return ExitCode.FAILED if self.count("rejected") else ExitCode.OK
