"""What a run did, counted: one outcome per record read, and the requests per target."""

from __future__ import annotations

from collections import Counter
from typing import Final

from segroute.errors import ExitCode
from segroute.models import Delivered, Outcome, Planned, Rejected, Request, Skipped, SkipReason

__all__ = ["MAX_UNLINKED_NAMES", "UNSENT_SKIPS", "Summary"]

UNSENT_SKIPS: Final[frozenset[SkipReason]] = frozenset(
    {"target_failing", "uncertain", "condition_error", "mapping_error"}
)
"""Skip reasons for events that should have gone out and did not: they are kept in the failure file
and make the run exit 1."""
MAX_UNLINKED_NAMES = 1000
"""Unlinked track event names a summary counts one by one."""


class Summary:
    """What a run did: one outcome per record read, and what became of the requests per target."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        """(outcome, reason) -> records; the reason is "" for records planned or sent as they are."""
        self.targets: Counter[tuple[str, str]] = Counter()
        """(target label, request outcome: planned, sent, failed, not_attempted, skipped, already_sent
        or uncertain) -> requests."""
        self.statuses: Counter[int] = Counter()
        """The last HTTP status of each request that got an answer -> requests."""
        self.unlinked: Counter[str] = Counter()
        """Track event names no link names -> events, for the first MAX_UNLINKED_NAMES names."""
        self.retries = 0
        self.missed: Counter[tuple[str, str]] = Counter()
        """(target label, `MissReason`) -> events a link to that target failed on."""

    def add(self, outcome: Outcome | Delivered) -> None:
        """Count one outcome."""
        if type(outcome) is not Rejected and outcome.missed:
            for missed in outcome.missed:
                self.missed[missed.target.label, missed.reason] += 1
        match outcome:
            case Planned():
                self.outcomes["planned", ""] += 1
                for request in outcome.requests:
                    self.targets[request.target.label, "planned"] += 1
                self._count_requests(outcome.sent_before, "already_sent")
            case Delivered():
                self.outcomes[outcome.outcome, outcome.reason] += 1
                for result in outcome.results:
                    self.targets[result.request.target.label, result.outcome] += 1
                    if result.status is not None:
                        self.statuses[result.status] += 1
                    self.retries += max(0, result.attempts - 1)
                self._count_requests(outcome.sent_before, "already_sent")
            case Skipped():
                self.outcomes["skipped", outcome.reason] += 1
                event = outcome.event
                if outcome.reason == "unlinked" and event is not None and event.name is not None:
                    if event.name in self.unlinked or len(self.unlinked) < MAX_UNLINKED_NAMES:
                        self.unlinked[event.name] += 1
                # Skipped.requests are those accepted before, or those whose fate is uncertain.
                kind = "uncertain" if outcome.reason == "uncertain" else "already_sent"
                self._count_requests(outcome.requests, kind)
            case Rejected():
                self.outcomes["rejected", outcome.reason] += 1

    def _count_requests(self, requests: tuple[Request, ...], kind: str) -> None:
        for request in requests:
            self.targets[request.target.label, kind] += 1

    @property
    def read(self) -> int:
        """Records read: the sum of every outcome."""
        return self.outcomes.total()

    def totals(self) -> dict[str, int]:
        """Records per outcome, whatever the reason."""
        totals: Counter[str] = Counter()
        for (kind, _), count in self.outcomes.items():
            totals[kind] += count
        return dict(sorted(totals.items()))

    def count(self, outcome: str) -> int:
        """Records that ended in one outcome, whatever the reason."""
        return self.totals().get(outcome, 0)

    @property
    def exit_code(self) -> ExitCode:
        """0 when all was planned, sent or deliberately skipped; 1 when anything was rejected or failed,
        or held back though it should go out (`UNSENT_SKIPS`), or a link failed on an event."""
        unsent = any(kind == "skipped" and reason in UNSENT_SKIPS for kind, reason in self.outcomes)
        bad = any(kind in ("rejected", "failed") for kind, _ in self.outcomes)
        return ExitCode.FAILED if bad or unsent or self.missed else ExitCode.OK
