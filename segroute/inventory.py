"""What inputs hold, for ``segroute inspect``: events by type and name, users, time ranges, rejected
records, and how the config's links cover the track events. Built from the pipeline's outcomes in
one pass, in memory bounded by the number of distinct event names (capped), not of events."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from segroute.dedupe import SeenIds
from segroute.models import Event, Note, Outcome, Rejected, Skipped
from segroute.selection import event_time, format_time, received_time
from segroute.summary import Summary

if TYPE_CHECKING:
    from segroute.config import Config, Link
    from segroute.routing import LinkCounts

__all__ = [
    "FIRST_ORIGINS",
    "MAX_DAYS",
    "MAX_NAMES",
    "Inventory",
]

MAX_NAMES = 10_000
"""Distinct track event names counted one by one; any more are counted together."""
FIRST_ORIGINS = 5
"""Origins listed per rejection reason."""
MAX_DAYS = 400
"""Days of event time counted one by one; events on any more are counted together."""


@dataclass
class _Range:
    """The earliest and latest of a time field, in epoch microseconds, and how many events lack it."""

    first: int | None = None
    last: int | None = None
    missing: int = 0

    def add(self, micros: int | None) -> None:
        if micros is None:
            self.missing += 1
            return
        if self.first is None or micros < self.first:
            self.first = micros
        if self.last is None or micros > self.last:
            self.last = micros

    def as_dict(self) -> dict[str, Any]:
        return {
            "first": None if self.first is None else format_time(self.first),
            "last": None if self.last is None else format_time(self.last),
            "missing": self.missing,
        }


@dataclass
class Inventory:
    """Counts over every outcome of a run that sends nothing."""

    links: list[tuple[Link, LinkCounts]] = field(default_factory=list)
    """The links with a condition or a mapping, and what each did (the router counts)."""
    summary: Summary = field(default_factory=Summary)
    types: Counter[str] = field(default_factory=Counter)
    names: Counter[str] = field(default_factory=Counter)
    """Track events by name, for the first MAX_NAMES names."""
    other_names: int = 0
    """Track events whose name came after MAX_NAMES others."""
    anonymous: int = 0
    """Events with an anonymousId and no userId."""
    timestamps: _Range = field(default_factory=_Range)
    received: _Range = field(default_factory=_Range)
    rejected: dict[str, list[str]] = field(default_factory=dict)
    """Rejection reason -> the first few origins."""
    rejected_detail: dict[str, str] = field(default_factory=dict)
    """Rejection reason -> what was wrong with the first record rejected for it."""
    days: Counter[str] = field(default_factory=Counter)
    """Events per day of their event time (UTC), for the first MAX_DAYS days met."""
    other_days: int = 0
    notes: int = 0
    _users: SeenIds = field(default_factory=SeenIds)
    distinct_users: int = 0

    def add(self, outcome: Outcome | Note) -> None:
        """Count one outcome, or a note about an input."""
        if isinstance(outcome, Note):
            self.notes += 1
            return
        self.summary.add(outcome)
        if isinstance(outcome, Rejected):
            origins = self.rejected.setdefault(outcome.reason, [])
            if len(origins) < FIRST_ORIGINS:
                origins.append(outcome.origin)
            self.rejected_detail.setdefault(outcome.reason, outcome.detail)
            return
        if isinstance(outcome, Skipped) and outcome.reason == "filtered":
            return
        if outcome.event is not None:
            self._add_event(outcome.event)

    def _add_event(self, event: Event) -> None:
        self.types[event.type] += 1
        if event.name is not None:
            if event.name in self.names or len(self.names) < MAX_NAMES:
                self.names[event.name] += 1
            else:
                self.other_names += 1
        if event.user_id is None:
            self.anonymous += 1
        elif self._users.add(event.user_id):
            self.distinct_users += 1
        occurred = event_time(event.data)
        self.timestamps.add(occurred)
        self.received.add(received_time(event.data))
        if occurred is not None:
            day = format_time(occurred)[:10]
            if day in self.days or len(self.days) < MAX_DAYS:
                self.days[day] += 1
            else:
                self.other_days += 1

    def close(self) -> None:
        """Drop the set of users seen."""
        self._users.close()

    @property
    def events(self) -> int:
        """Valid events counted (filtered ones are not)."""
        return sum(self.types.values())

    def as_dict(self, config: Config) -> dict[str, Any]:
        """Everything, as JSON-ready data; link coverage is judged against ``config``."""
        by_event = config.links_by_event()
        outcomes: dict[str, dict[str, int]] = {}
        for (outcome, reason), count in sorted(self.summary.outcomes.items()):
            outcomes.setdefault(outcome, {})[reason or "ok"] = count
        names = [
            {
                "event": name,
                "count": count,
                "automations": [link.automation for link in by_event.get(name, ()) if link.automation],
                "journeys": [link.journey for link in by_event.get(name, ()) if link.journey],
            }
            for name, count in sorted(self.names.items(), key=lambda item: (-item[1], item[0]))
        ]
        requests = {
            label: count for (label, kind), count in sorted(self.summary.targets.items()) if kind == "planned"
        }
        sent_before = {
            label: count
            for (label, kind), count in sorted(self.summary.targets.items())
            if kind == "already_sent"
        }
        return {
            "read": self.summary.read,
            "events": self.events,
            "outcomes": outcomes,
            "types": dict(sorted(self.types.items(), key=lambda item: (-item[1], item[0]))),
            "track_events": names,
            "track_events_not_listed": self.other_names,
            "users": {"distinct": self.distinct_users, "anonymous_events": self.anonymous},
            "timestamp": self.timestamps.as_dict(),
            "received_at": self.received.as_dict(),
            "days": dict(sorted(self.days.items())),
            "days_not_listed": self.other_days,
            "rejected": {
                reason: {
                    "count": self.summary.outcomes["rejected", reason],
                    "first": origins,
                    "detail": self.rejected_detail[reason],
                }
                for reason, origins in sorted(self.rejected.items())
            },
            "links": {
                "linked": [entry["event"] for entry in names if entry["event"] in by_event],
                "unlinked": [entry["event"] for entry in names if entry["event"] not in by_event],
                "never_seen": sorted(name for name in by_event if name not in self.names),
                "conditions_and_mappings": [
                    link.model_dump(exclude_none=True) | dataclasses.asdict(counts)
                    for link, counts in self.links
                ],
            },
            "link_failures": [
                {"target": label, "reason": reason, "events": count}
                for (label, reason), count in sorted(self.summary.missed.items())
            ],
            "requests": requests,
            "requests_sent_before": sent_before,
            "notes": self.notes,
        }
