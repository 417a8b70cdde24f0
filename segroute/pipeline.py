"""Sources -> events -> routing -> requests: every record read ends in exactly one outcome."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, final

import msgspec

from segroute._json import dumps
from segroute.errors import ExitCode
from segroute.events import Event, Invalid, parse_event
from segroute.routing import Router
from segroute.selection import Selection, stable_hash
from segroute.sources import BadRecord, Item, Note, Record
from segroute.transform import Request, build_requests, rekeyed

DEDUPE_MEMORY = 20_000
"""messageIds held in memory for duplicate checks; older ones move to a temporary SQLite file."""
BLOOM_BYTES = 8 * 1024 * 1024
"""The filter in front of the spilled ids, a power of two: 64M bits with one probe each, 1.5% false
positives at 1M ids and 14% at 10M (each costs one SQLite lookup, never a wrong answer)."""

UNSENT_SKIPS = frozenset({"target_failing", "uncertain"})
"""Skip reasons for events that should have gone out and did not: they are kept in the failure file
and make the run exit 1."""
MAX_UNLINKED_NAMES = 1000
"""Unlinked track event names a summary counts one by one."""

NOT_JSON = object()
"""The value of a rejected record that was not JSON at all."""


@final
class Planned(msgspec.Struct):  # made per event: a Struct is built in C, in half a dataclass's time
    """An event routed to one or more requests."""

    event: Event
    requests: tuple[Request, ...]
    done: tuple[Request, ...] = ()
    """Requests of the event the ledger says Courier accepted in an earlier run: not sent again."""


@final
class Skipped(msgspec.Struct):  # made per event: a Struct is built in C, in half a dataclass's time
    """An event deliberately not sent; the reason is a key of `routing.SKIP_REASONS`."""

    origin: str
    reason: str
    message_id: str
    event: Event | None = None
    requests: tuple[Request, ...] = ()
    """For ``already_sent``: the requests Courier accepted before; for ``uncertain``: those an earlier
    run sent without learning what became of them."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that is not a valid Segment event, or could not be read."""

    origin: str
    reason: str
    detail: str
    value: Any = NOT_JSON


Outcome = Planned | Skipped | Rejected


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


class RequestResult(msgspec.Struct):  # made per event: a Struct is built in C, in half a dataclass's time
    """What became of one request that was to be sent."""

    request: Request
    event: Event
    outcome: Literal["sent", "failed", "not_attempted", "skipped"]
    reason: str
    """``""``, or ``duplicate`` for a 409 (accepted before); ``http_NNN``, ``network``, ``timeout``,
    ``deadline``, ``unauthorized`` when failed; ``stopped`` when not attempted; ``target_failing``
    when skipped because its target refuses every request alike."""
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


_OUTCOME_RANK = {"failed": 0, "not_attempted": 1, "skipped": 2, "sent": 3}


@final
class Delivered(msgspec.Struct):  # made per event: a Struct is built in C, in half a dataclass's time
    """An event whose requests have all ended: sent, failed, not attempted (the run stopped), or
    skipped (their target was failing)."""

    event: Event
    results: tuple[RequestResult, ...]
    done: tuple[Request, ...] = ()
    """Requests of the event accepted in an earlier run, which were not sent again."""

    @property
    def outcome(self) -> Literal["sent", "failed", "not_attempted", "skipped"]:
        """The worst of its requests': failed, then not_attempted, then skipped, then sent."""
        if len(self.results) == 1:  # the usual event: one request
            return self.results[0].outcome
        return min((result.outcome for result in self.results), key=_OUTCOME_RANK.__getitem__)

    @property
    def reason(self) -> str:
        """The reason of the first request with the event's outcome."""
        if len(self.results) == 1:
            return self.results[0].reason
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


class SeenIds:
    """Every messageId seen in a run, exactly, in bounded memory.

    The most recent ids are a set; when it fills, they move to a private temporary SQLite database
    (deleted when closed). From that first move on, a one-probe Bloom filter of BLOOM_BYTES holds
    every id seen, each marked as it is added. An id missing from the set is looked up in SQLite
    only when the filter says it may be there: for a new id, rarely.

    The move is one SQL statement (the ids as one JSON array, sorted by SQLite) run on a thread of
    its own: SQLite lets go of the GIL for the whole statement, so the insert costs the caller
    almost nothing. Until it is committed, the moving ids stay a set that lookups consult; the
    database is in WAL mode and read through a second connection, which never waits for the insert.
    """

    def __init__(self, memory: int | None = None) -> None:
        self._memory = memory or DEDUPE_MEMORY
        self._recent: set[str] = set()
        self._moving: set[str] | None = None
        """Ids being inserted on the thread; None once committed."""
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._inserts: ThreadPoolExecutor | None = None
        self._inserted: Future[None] | None = None
        """The insert last handed to the thread; its error is raised at the next spill."""
        self._bloom = bytearray()
        self._mask = 0

    def add(self, message_id: str) -> bool:
        """Remember an id; False when it was seen already."""
        if message_id in self._recent:
            return False
        if self._reader is not None:
            # One probe: Python's str hash, cached on the string and fixed for the process, as the
            # filter is. A false positive costs one lookup, never a wrong answer. The id's bit is set
            # now, while its byte is at hand: the filter holds the recent ids too, which only ever
            # costs a lookup, and a spill has nothing left to mark.
            bit = hash(message_id) & self._mask
            byte = self._bloom[bit >> 3]
            flag = 1 << (bit & 7)
            if byte & flag:
                moving = self._moving
                if moving is not None and message_id in moving:
                    return False
                found = self._reader.execute("SELECT 1 FROM seen WHERE id = ?", (message_id,)).fetchone()
                if found is not None:
                    return False
            else:
                self._bloom[bit >> 3] = byte | flag
        self._recent.add(message_id)
        if len(self._recent) >= self._memory:
            self._spill()
        return True

    def _spill(self) -> None:
        if self._reader is None:
            _sweep_stale_folders()
            self._folder = tempfile.TemporaryDirectory(prefix=f"{_SEEN_PREFIX}{os.getpid()}-")
            path = os.path.join(self._folder.name, "seen.sqlite3")
            # Used by one thread at a time, but not always the same one.
            self._writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._writer.executescript(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -2000;"
                "CREATE TABLE seen (id TEXT PRIMARY KEY) WITHOUT ROWID;"
            )
            self._reader = sqlite3.connect(path, check_same_thread=False)
            self._reader.execute("PRAGMA cache_size = -1000")
            self._bloom = bytearray(BLOOM_BYTES)
            self._mask = BLOOM_BYTES * 8 - 1
            self._inserts = ThreadPoolExecutor(1, thread_name_prefix="segroute-seen")
            # From now on, add marks each id as it comes; these came before the filter.
            bloom, mask = self._bloom, self._mask
            for message_id in self._recent:
                bit = hash(message_id) & mask
                bloom[bit >> 3] |= 1 << (bit & 7)
        self._wait()
        moving, self._recent = self._recent, set()
        self._moving = moving
        assert self._inserts is not None
        self._inserted = self._inserts.submit(self._insert, dumps(list(moving)).decode())

    def _insert(self, text: str) -> None:
        assert self._writer is not None
        # Sorted, the inserts walk the index in order instead of jumping about it.
        self._writer.execute(
            "INSERT OR IGNORE INTO seen SELECT value FROM json_each(?) ORDER BY value", (text,)
        )
        self._moving = None  # committed: SQLite answers for these ids now

    def _wait(self) -> None:
        inserted, self._inserted = self._inserted, None
        if inserted is not None:
            inserted.result()

    def close(self) -> None:
        """Drop the spilled ids; an insert still pending or running is cut short, as its ids are
        dropped too."""
        try:
            inserted = self._inserted
            if inserted is not None and not inserted.cancel() and self._writer is not None:
                self._writer.interrupt()
            if self._inserts is not None:
                self._inserts.shutdown()
        finally:
            for connection in (self._reader, self._writer):
                if connection is not None:
                    connection.close()
            self._reader = self._writer = None
            if self._folder is not None:
                self._folder.cleanup()
                self._folder = None


_SEEN_PREFIX = "segroute-seen-"


def _sweep_stale_folders() -> None:
    """Remove the spill folders of runs that were killed (SIGKILL, out of memory) before they could
    remove their own: this user's, whose process is gone. POSIX only, where signal 0 only asks."""
    if os.name != "posix":
        return
    for folder in Path(tempfile.gettempdir()).glob(f"{_SEEN_PREFIX}*-*"):
        try:
            pid = int(folder.name.removeprefix(_SEEN_PREFIX).split("-", 1)[0])
            found = folder.lstat()  # a link is never followed, nor anything not this user's
            if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):  # not one of ours, or a process that is still there
            continue


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
    if order == "input" and limit is None:  # the usual run: each event planned as it is selected
        stream = _select(items, selection, shard, planner.outcome)
        outcomes = cast(Iterator[Outcome | Note], stream)
    else:
        stream = _select(items, selection, shard)
        if order == "timestamp":
            from segroute.ordering import order_by_time

            stream = order_by_time(stream)
        outcomes = _route(stream, planner.outcome, limit, read_on=order == "timestamp")
    try:
        yield from outcomes
    finally:
        planner.close()
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _select(
    items: Iterable[Item],
    selection: Selection | None,
    shard: tuple[int, int] | None,
    outcome: Callable[[Event], Outcome] | None = None,
) -> Iterator[Event | Outcome | Note]:
    """Records -> events the shard and the selection keep, or their ``outcome`` when it is given;
    the rest as outcomes (rejected, skipped) or notes. A shard reports the records it rejects only
    when they fall to it by origin, so that N shards report each rejection once."""
    matches = selection.matches if selection is not None and selection.active else None
    for item in items:
        if type(item) is Record:  # the usual item first: a type test is the cheapest
            event = parse_event(item)
            if type(event) is Invalid:
                rejected = Rejected(event.origin, event.reason, event.detail, event.value)
            elif shard is not None and not in_shard(shard_key(event), shard):
                yield Skipped(event.origin, "other_shard", event.message_id, event)
                continue
            elif matches is None or matches(event):
                yield event if outcome is None else outcome(event)
                continue
            else:
                yield Skipped(event.origin, "filtered", event.message_id, event)
                continue
        elif type(item) is BadRecord:
            rejected = Rejected(item.origin, item.reason, item.detail)
        else:
            yield item
            continue
        if shard is None or in_shard(rejected.origin, shard):
            yield rejected
        else:
            yield Skipped(rejected.origin, "other_shard", "")


def _route(
    stream: Iterable[Event | Outcome | Note],
    outcome: Callable[[Event], Outcome],
    limit: int | None,
    *,
    read_on: bool,
) -> Iterator[Outcome | Note]:
    """Route each event; past the limit, stop, or (``read_on``) count the rest as skipped."""
    if limit == 0 and not read_on:
        return
    taken = 0
    for event in stream:
        if type(event) is not Event:
            yield event
        elif limit is None or taken < limit:
            taken += 1
            yield outcome(event)
            if taken == limit and not read_on:
                return
        elif read_on:
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

    def outcome(self, event: Event) -> Outcome:
        if not self._seen.add(event.message_id):
            return Skipped(event.origin, "duplicate", event.message_id, event)
        targets = self._route(event)
        if isinstance(targets, str):
            return Skipped(event.origin, targets, event.message_id, event)
        try:
            requests = build_requests(event, targets, self._base_url)
        except ValueError as exc:
            return Rejected(event.origin, "too_deep", str(exc), event.data)
        if self._prior is None:
            return Planned(event, requests)
        return self._resume(event, requests, self._prior)

    def _resume(
        self, event: Event, requests: tuple[Request, ...], prior: Callable[[str], Prior | None]
    ) -> Outcome:
        """Leave out what Courier accepted in an earlier run; send the rest under the key each may go
        out under; hold the whole event back when any of its requests is uncertain."""
        known = [prior(request.idempotency_key) for request in requests]
        if not any(known):  # the usual event: never sent before
            return Planned(event, requests)
        to_send: list[Request] = []
        done: list[Request] = []
        uncertain: list[Request] = []
        now = time.time()
        for request, earlier in zip(requests, known, strict=True):
            how = resume(earlier, now=now, resend_uncertain=self._resend_uncertain)
            if how == "accepted":
                done.append(request)
            elif how == "uncertain":
                uncertain.append(request)
            else:
                to_send.append(rekeyed(request, event.message_id, how))
        if uncertain:
            return Skipped(event.origin, "uncertain", event.message_id, event, tuple(uncertain))
        if not to_send:
            return Skipped(event.origin, "already_sent", event.message_id, event, tuple(done))
        return Planned(event, tuple(to_send), tuple(done))

    def close(self) -> None:
        self._seen.close()


def shard_key(event: Event) -> str:
    """What shards partition by: the user, so one user's events stay in order on one machine."""
    anonymous_id = event.data.get("anonymousId")
    if event.user_id is not None:
        return "u:" + event.user_id
    if isinstance(anonymous_id, str | int | float) and anonymous_id != "":
        return "a:" + str(anonymous_id)
    return "m:" + event.message_id


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Whether a key falls to shard K of N (K from 1), by a hash that is the same on every machine."""
    number, count = shard
    return count == 1 or stable_hash(key) % count == number - 1


class Summary:
    """What a run did: one outcome per record read, and what became of the requests per target.

    Counted in plain ints and dicts: Counter's += costs twice a dict's, on every event of a run.
    The properties hand out Counters, made when they are read.
    """

    def __init__(self) -> None:
        self._outcomes: dict[tuple[str, str], int] = {}
        self._targets: dict[tuple[str, str], int] = {}
        self._statuses: dict[int, int] = {}
        self._unlinked: dict[str, int] = {}
        self._planned = 0
        """Events planned, the usual outcome of a dry run: apart, as one int."""
        self._planned_to: dict[str, int] = {}
        """Target label -> requests planned."""
        self._skipped: dict[str, int] = {}
        """Reason -> events skipped, apart too: a plain key costs less than a tuple."""
        self.retries = 0

    @property
    def outcomes(self) -> Counter[tuple[str, str]]:
        """(outcome, reason) -> records; the reason is "" for records planned or sent as they are."""
        counts = Counter(self._outcomes)
        if self._planned:
            counts["planned", ""] += self._planned
        for reason, count in self._skipped.items():
            counts["skipped", reason] += count
        return counts

    @property
    def targets(self) -> Counter[tuple[str, str]]:
        """(target label, request outcome: planned, sent, failed, not_attempted, skipped, already_sent or
        uncertain) -> requests."""
        counts = Counter(self._targets)
        for label, count in self._planned_to.items():
            counts[label, "planned"] += count
        return counts

    @property
    def statuses(self) -> Counter[int]:
        """The last HTTP status of each request that got an answer -> requests."""
        return Counter(self._statuses)

    @property
    def unlinked(self) -> Counter[str]:
        """Track event names no link names -> events, for the first MAX_UNLINKED_NAMES names."""
        return Counter(self._unlinked)

    def add(self, outcome: Outcome | Delivered) -> None:
        """Count one outcome."""
        targets = self._targets
        key: tuple[str, str]
        if type(outcome) is Planned:  # the usual outcome first: a type test is the cheapest
            self._planned += 1
            planned_to = self._planned_to
            for request in outcome.requests:
                label = request.target.label
                planned_to[label] = planned_to.get(label, 0) + 1
            done = outcome.done
        elif type(outcome) is Delivered:
            key = outcome.outcome, outcome.reason  # one request: its own, without a set to make
            self._outcomes[key] = self._outcomes.get(key, 0) + 1
            statuses = self._statuses
            for result in outcome.results:
                key = result.request.target.label, result.outcome
                targets[key] = targets.get(key, 0) + 1
                status = result.status
                if status is not None:
                    statuses[status] = statuses.get(status, 0) + 1
                if result.attempts > 1:
                    self.retries += result.attempts - 1
            done = outcome.done
        elif type(outcome) is Skipped:
            reason = outcome.reason
            self._skipped[reason] = self._skipped.get(reason, 0) + 1
            if reason == "unlinked" and outcome.event is not None and outcome.event.name is not None:
                name = outcome.event.name
                unlinked = self._unlinked
                if name in unlinked:
                    unlinked[name] += 1
                elif len(unlinked) < MAX_UNLINKED_NAMES:
                    unlinked[name] = 1
            if reason == "uncertain":
                for request in outcome.requests:
                    key = request.target.label, "uncertain"
                    targets[key] = targets.get(key, 0) + 1
                return
            done = outcome.requests
        else:
            key = "rejected", outcome.reason
            self._outcomes[key] = self._outcomes.get(key, 0) + 1
            return
        for request in done:  # requests accepted in an earlier run
            key = request.target.label, "already_sent"
            targets[key] = targets.get(key, 0) + 1

    @property
    def read(self) -> int:
        """Records read: the sum of every outcome."""
        return sum(self.outcomes.values())

    def totals(self) -> dict[str, int]:
        """Records per outcome, whatever the reason."""
        return {outcome: self.count(outcome) for outcome in sorted({kind for kind, _ in self.outcomes})}

    def count(self, outcome: str) -> int:
        """Records that ended in one outcome, whatever the reason."""
        return sum(n for (kind, _), n in self.outcomes.items() if kind == outcome)

    @property
    def exit_code(self) -> ExitCode:
        """0 when all was planned, sent or deliberately skipped; 1 when anything was rejected or failed,
        or held back though it should go out (`UNSENT_SKIPS`)."""
        outcomes = self.outcomes
        unsent = any(kind == "skipped" and reason in UNSENT_SKIPS for kind, reason in outcomes)
        bad = any(kind in ("rejected", "failed") for kind, _ in outcomes)
        return ExitCode.FAILED if bad or unsent else ExitCode.OK
