"""Records -> events -> routing -> requests: every record read ends in exactly one outcome.

`plan` is the flow: each record is parsed into an event (`events.parse_event`), kept or skipped by
the shard and the selection, put in event-time order if asked (`ordering`), cut at the limit, then
checked for duplicates (`dedupe`), routed (`routing`), built into requests (`transform`), and
checked against what earlier runs did (the ledger, through ``prior``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Literal

from segroute.dedupe import SeenIds
from segroute.events import parse_event
from segroute.models import (
    Event,
    Item,
    Missed,
    Note,
    Outcome,
    Planned,
    Prior,
    Record,
    Rejected,
    Request,
    Skipped,
)
from segroute.routing import Router
from segroute.selection import Selection, in_shard, shard_key
from segroute.transform import build_requests, rekeyed

__all__ = ["KEY_LIFETIME_MARGIN", "plan", "resume"]

KEY_LIFETIME_MARGIN = 3600.0
"""Seconds before a key's expiry after which sending under it again no longer counts as safe."""


def resume(
    prior: Prior | None, *, now: float, resend_uncertain: bool
) -> int | Literal["accepted", "uncertain"]:
    """How to send a request again given what the ledger knows of it: the key generation to send it
    under, or ``accepted`` (never again), or ``uncertain`` (an earlier run sent it and never learned
    what Courier did, and its key may have expired: sending it again could notify twice)."""
    if prior is None:
        return 0
    if prior.accepted:
        return "accepted"
    if prior.stored_failure:
        return prior.generation + 1  # the old key would only give back Courier's stored 500
    if now < prior.expires_at - KEY_LIFETIME_MARGIN or resend_uncertain:
        return prior.generation  # the same key: Courier acts on it once, or answers from its store
    return "uncertain"


def plan(
    items: Iterable[Item],
    router: Router,
    *,
    base_url: str,
    selection: Selection | None = None,
    order: Literal["input", "timestamp"] = "input",
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    prior: Callable[[str], Prior | None] | None = None,
    resend_uncertain: bool = False,
) -> Iterator[Outcome | Note]:
    """Turn what the sources read into outcomes, one per record; notes pass through.

    Events the selection leaves out are skipped as ``filtered``. Events go on in input order, or in
    event time (`ordering.order_by_time`); ``limit`` stops after that many selected events: in
    input order the rest is never read, in event time (where everything was read to sort it) the
    rest is skipped as ``limit``. Duplicates are caught after ordering: the first in replay order is
    the one that goes.

    ``shard`` (K, N) keeps the K-th of N shares (from 1), partitioned by user, and skips the rest as
    ``other_shard``. ``prior(key)`` tells what an earlier run did with a request (the ledger): what
    Courier accepted is not sent again (an event with nothing left is skipped as ``already_sent``),
    and the rest goes out under the key `resume` picks. An event with a request an earlier run sent
    without learning what Courier did with it, under a key Courier may have forgotten, is skipped as
    ``uncertain`` unless ``resend_uncertain``.
    """
    planner = _Planner(router, base_url, prior, resend_uncertain)
    selected = _select(items, selection, shard)
    if order == "timestamp":
        from segroute.ordering import order_by_time

        selected = order_by_time(selected)
    try:
        yield from _take(selected, planner.decide, limit, count_rest=order == "timestamp")
    finally:
        planner.close()
        selected.close()


def _select(
    items: Iterable[Item], selection: Selection | None, shard: tuple[int, int] | None
) -> Generator[Event | Outcome | Note, None, None]:
    """Records -> the events the shard and the selection keep; the rest as outcomes (rejected,
    skipped) or notes. A shard reports the records it rejects only when they fall to it by origin,
    so that N shards report each rejection once."""
    matches = selection.matches if selection is not None and selection.active else None
    for item in items:
        if type(item) is Record:  # the usual item, tested first
            event = parse_event(item)
            if type(event) is Rejected:
                yield _rejected_in_shard(event, shard)
            elif shard is not None and not in_shard(shard_key(event), shard):
                yield Skipped(event.origin, "other_shard", event.message_id, event)
            elif matches is None or matches(event):
                yield event
            else:
                yield Skipped(event.origin, "filtered", event.message_id, event)
        elif type(item) is Rejected:
            yield _rejected_in_shard(item, shard)
        else:
            yield item


def _rejected_in_shard(rejected: Rejected, shard: tuple[int, int] | None) -> Rejected | Skipped:
    if shard is None or in_shard(rejected.origin, shard):
        return rejected
    return Skipped(rejected.origin, "other_shard", "")


def _take(
    stream: Iterable[Event | Outcome | Note],
    decide: Callable[[Event], Outcome],
    limit: int | None,
    *,
    count_rest: bool,
) -> Iterator[Outcome | Note]:
    """Decide each event's outcome, up to ``limit`` events; then stop, or (``count_rest``) skip the
    rest as ``limit``."""
    if limit == 0 and not count_rest:
        return
    taken = 0
    for event in stream:
        if type(event) is not Event:
            yield event
        elif limit is None or taken < limit:
            taken += 1
            yield decide(event)
            if taken == limit and not count_rest:
                return
        elif count_rest:
            yield Skipped(event.origin, "limit", event.message_id, event)


class _Planner:
    """Each event's outcome: dedupe, route, build the requests, and resume from what the ledger holds."""

    def __init__(
        self,
        router: Router,
        base_url: str,
        prior: Callable[[str], Prior | None] | None,
        resend_uncertain: bool,
    ) -> None:
        self._route = router.route
        self._base_url = base_url
        self._seen = SeenIds()
        self._prior = prior
        self._resend_uncertain = resend_uncertain

    def decide(self, event: Event) -> Outcome:
        """The outcome of one selected event."""
        if not self._seen.add(event.message_id):
            return Skipped(event.origin, "duplicate", event.message_id, event)
        routed = self._route(event)
        if isinstance(routed, str):
            return Skipped(event.origin, routed, event.message_id, event)
        targets, missed = routed
        if not targets:  # every link of its name failed on it
            return Skipped(event.origin, missed[0].reason, event.message_id, event, missed=missed)
        try:
            requests = build_requests(event, targets, self._base_url)
        except ValueError as exc:
            return Rejected(event.origin, "too_deep", str(exc), event.data)
        if self._prior is None:
            return Planned(event, requests, missed=missed)
        return self._resume(event, requests, missed, self._prior)

    def _resume(
        self,
        event: Event,
        requests: tuple[Request, ...],
        missed: tuple[Missed, ...],
        prior: Callable[[str], Prior | None],
    ) -> Outcome:
        """Leave out what Courier accepted in an earlier run; send the rest under the key each may go
        out under; hold the whole event back when any of its requests is uncertain."""
        known = [prior(request.idempotency_key) for request in requests]
        if not any(known):  # the usual event: never sent before
            return Planned(event, requests, missed=missed)
        to_send: list[Request] = []
        sent_before: list[Request] = []
        uncertain: list[Request] = []
        now = time.time()
        for request, earlier in zip(requests, known, strict=True):
            how = resume(earlier, now=now, resend_uncertain=self._resend_uncertain)
            if how == "accepted":
                sent_before.append(request)
            elif how == "uncertain":
                uncertain.append(request)
            else:
                to_send.append(rekeyed(request, event.message_id, how))
        origin, message_id = event.origin, event.message_id
        if uncertain:
            return Skipped(origin, "uncertain", message_id, event, tuple(uncertain), missed)
        if not to_send:
            return Skipped(origin, "already_sent", message_id, event, tuple(sent_before), missed)
        return Planned(event, tuple(to_send), tuple(sent_before), missed)

    def close(self) -> None:
        self._seen.close()
