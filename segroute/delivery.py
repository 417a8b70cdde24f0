"""Posting the planned requests to Courier: one aiohttp session, bounded concurrency, an optional rate
cap, per-recipient order, retries with backoff, and a clean stop that loses nothing."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
from yarl import URL

from segroute import __version__
from segroute.events import Event
from segroute.pipeline import Delivered, Outcome, Planned, RequestResult
from segroute.sources import Note
from segroute.transform import CONTENT_TYPE, Request

RETRY_STATUSES = frozenset({408, 429})
AUTH_STATUSES = frozenset({401, 403})
READ_BATCH = 256
"""Outcomes read from the inputs per trip to the reader thread."""

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True)
class DeliveryOptions:
    """The knobs of a send; the defaults are what ``segroute send`` uses."""

    concurrency: int = 8
    """Requests in flight at once."""
    rate: float | None = None
    """At most this many requests started per second; None for no cap."""
    max_retries: int = 5
    """Retries after the first attempt, for network errors, timeouts, 408, 429 and 5xx."""
    request_deadline: float = 120.0
    """Seconds one request may take, all attempts and waits included, before it is given up."""
    attempt_timeout: float = 30.0
    """Seconds one attempt may take."""
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    drain_timeout: float = 10.0
    """After a stop, seconds the requests in flight get to finish."""


@dataclass
class DeliveryStats:
    """Counters a progress display and the report read while a send runs."""

    read: int = 0
    requests_done: int = 0
    failed: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    stopped_by: Literal["signal", "unauthorized"] | None = None
    """Why the run stopped early: ``signal`` or ``unauthorized``; None when it ran to the end."""
    auth_detail: str = ""


def retry_after_seconds(headers: Any, *, now: float | None = None) -> float | None:
    """The wait a response asks for: ``Retry-After-Ms``, or ``Retry-After`` in seconds or as an HTTP date."""
    millis = headers.get("Retry-After-Ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of min(max, initial * 2^n)."""

    def __init__(self, initial: float, maximum: float, rng: Callable[[], float] = random.random) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (from 0)."""
        ceiling: float = min(self._maximum, self._initial * 2.0**retry)
        return ceiling * (0.5 + self._rng() / 2)


class RateLimiter:
    """Starts at most ``rate`` requests per second, evenly spaced."""

    def __init__(
        self, rate: float | None, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self._interval = 1 / rate if rate else 0.0
        self._next = 0.0
        self._clock = clock
        self._sleep = sleep

    async def acquire(self) -> None:
        """Wait for the next start time."""
        if not self._interval:
            return
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self._interval
        if start > now:
            await self._sleep(start - now)


def _accepted(request: Request, event: Event, status: int, attempts: int, body: bytes) -> RequestResult:
    """A sent request, with the ``runId`` and ``requestId`` Courier's answer holds, if any."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    ids = answer if isinstance(answer, dict) else {}
    run_id, request_id = (ids.get(key) for key in ("runId", "requestId"))
    return RequestResult(
        request,
        event,
        "sent",
        "duplicate" if status == 409 else "",
        status,
        attempts,
        run_id=run_id if isinstance(run_id, str) else None,
        request_id=request_id if isinstance(request_id, str) else None,
    )


def _error_message(status: int, body: bytes) -> str:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("message"), str):
        return f"HTTP {status}: {answer['message']}"
    return f"HTTP {status}"


class Sender:
    """Sends one request until it is accepted, refused, or out of retries."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        options: DeliveryOptions,
        stats: DeliveryStats,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self._options = options
        self._stats = stats
        self._clock = clock
        self._sleep = sleep
        self._backoff = Backoff(options.backoff_initial, options.backoff_max, rng)
        self._limiter = RateLimiter(options.rate, clock=clock, sleep=sleep)

    async def send(self, request: Request, event: Event, stop: asyncio.Event) -> RequestResult:
        """Post a request, retrying what may succeed later, every attempt with the same Idempotency-Key."""
        started = self._clock()
        url = URL(request.url, encoded=True)
        headers = {"Idempotency-Key": request.idempotency_key, "Content-Type": CONTENT_TYPE}
        attempt = 0
        while True:
            attempt += 1
            await self._limiter.acquire()
            retry_after: float | None = None
            status: int | None = None
            try:
                async with self._session.post(url, data=request.body, headers=headers) as response:
                    status = response.status
                    body = await response.read()
                    retry_after = retry_after_seconds(response.headers)
            except TimeoutError:
                reason, detail = "timeout", f"no answer within {self._options.attempt_timeout:g}s"
            except aiohttp.ClientError as exc:
                reason, detail = "network", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if 200 <= status < 300 or status == 409:
                    # 409: Courier has seen this key or messageId: it was accepted before.
                    return _accepted(request, event, status, attempt, body)
                reason, detail = f"http_{status}", _error_message(status, body)
                if status in AUTH_STATUSES:
                    return RequestResult(
                        request, event, "failed", "unauthorized", status, attempt, detail=detail
                    )
                if status not in RETRY_STATUSES and status < 500:
                    return RequestResult(request, event, "failed", reason, status, attempt, detail=detail)
            if attempt > self._options.max_retries:
                detail = f"{detail}; gave up after {attempt} attempts"
                return RequestResult(request, event, "failed", reason, status, attempt, detail=detail)
            delay = retry_after if retry_after is not None else self._backoff.delay(attempt - 1)
            if self._clock() + delay - started > self._options.request_deadline:
                detail = f"{detail}; the next retry would pass the {self._options.request_deadline:g}s limit"
                return RequestResult(request, event, "failed", reason, status, attempt, detail=detail)
            if stop.is_set():
                return RequestResult(
                    request, event, "not_attempted", "stopped", status, attempt, detail=detail
                )
            self._stats.retries += 1
            await self._sleep(delay)
            if stop.is_set():
                return RequestResult(
                    request, event, "not_attempted", "stopped", status, attempt, detail=detail
                )


def open_session(api_key: str, options: DeliveryOptions) -> aiohttp.ClientSession:
    """The run's one session: a connector sized to the concurrency, explicit timeouts, the key as a header."""
    connector = aiohttp.TCPConnector(limit=options.concurrency, limit_per_host=options.concurrency)
    timeout = aiohttp.ClientTimeout(total=options.attempt_timeout, connect=min(10.0, options.attempt_timeout))
    headers = {"Authorization": f"Bearer {api_key}", "User-Agent": f"segroute/{__version__}"}
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers, raise_for_status=False
    )


@dataclass
class _EventState:
    event: Event
    remaining: int
    results: list[RequestResult] = field(default_factory=list)


class Dispatcher:
    """Runs requests concurrently while one recipient's requests go out in input order."""

    def __init__(
        self,
        sender: Sender,
        options: DeliveryOptions,
        stats: DeliveryStats,
        stop: asyncio.Event,
        *,
        on_request: Callable[[RequestResult], None],
        on_event: Callable[[Delivered], None],
    ) -> None:
        self._sender = sender
        self._options = options
        self._stats = stats
        self._stop = stop
        self._on_request = on_request
        self._on_event = on_event
        self._slots = asyncio.Semaphore(options.concurrency)
        # Requests queued behind their recipient's earlier ones, plus those in flight: a bound on memory.
        self._window = asyncio.Semaphore(options.concurrency * 4)
        self._tails: dict[str, asyncio.Task[None]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def submit(self, planned: Planned) -> None:
        """Queue an event's requests behind any earlier request to the same recipient."""
        state = _EventState(planned.event, len(planned.requests))
        recipient = planned.event.user_id or ""
        for request in planned.requests:
            await self._window.acquire()
            task = asyncio.create_task(self._run(request, state, self._tails.get(recipient)))
            self._tails[recipient] = task
            self.tasks.add(task)
            task.add_done_callback(functools.partial(self._forget, recipient=recipient))

    def not_attempted(self, planned: Planned) -> None:
        """Record an event that was read but will not be sent, because the run is stopping."""
        state = _EventState(planned.event, len(planned.requests))
        for request in planned.requests:
            self._finish(state, RequestResult(request, planned.event, "not_attempted", "stopped"))

    def _forget(self, task: asyncio.Task[None], *, recipient: str) -> None:
        self.tasks.discard(task)
        self._window.release()
        if self._tails.get(recipient) is task:
            del self._tails[recipient]

    async def _run(self, request: Request, state: _EventState, previous: asyncio.Task[None] | None) -> None:
        event = state.event
        try:
            if previous is not None:
                await asyncio.wait({previous})
            result = RequestResult(request, event, "not_attempted", "stopped")
            if not self._stop.is_set():
                async with self._slots:
                    if not self._stop.is_set():
                        result = await self._sender.send(request, event, self._stop)
        except asyncio.CancelledError:
            # The drain timed out: whether Courier got it is unknown; a replay's same key makes that safe.
            result = RequestResult(request, event, "not_attempted", "stopped", detail="cut off by the stop")
        if result.reason == "unauthorized" and self._stats.stopped_by is None:
            self._stats.stopped_by = "unauthorized"
            self._stats.auth_detail = result.detail
            self._stop.set()
        self._finish(state, result)

    def _finish(self, state: _EventState, result: RequestResult) -> None:
        self._stats.requests_done += 1
        if result.outcome == "failed":
            self._stats.failed += 1
        self._on_request(result)
        state.results.append(result)
        state.remaining -= 1
        if state.remaining == 0:
            self._on_event(Delivered(state.event, tuple(state.results)))


def _take(items: Iterator[Outcome | Note], count: int) -> list[Outcome | Note]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == count:
            break
    return batch


async def deliver(
    outcomes: Iterable[Outcome | Note],
    *,
    session: aiohttp.ClientSession,
    options: DeliveryOptions,
    stop: asyncio.Event,
    on_outcome: Callable[[Outcome | Note | Delivered], None],
    on_request: Callable[[RequestResult], None],
    stats: DeliveryStats | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> DeliveryStats:
    """Send every planned event's requests; everything else goes straight to ``on_outcome``.

    Reading happens in a worker thread, a batch at a time, so a slow input never stalls the requests
    in flight. Setting ``stop`` ends reading; requests in flight get ``options.drain_timeout`` seconds,
    and everything read but not sent ends as ``not_attempted``.
    """
    stats = stats or DeliveryStats()
    sender = Sender(session, options, stats, clock=clock, sleep=sleep)
    dispatcher = Dispatcher(sender, options, stats, stop, on_request=on_request, on_event=on_outcome)
    watchdog = asyncio.create_task(_cut_off_after_stop(stop, dispatcher, options.drain_timeout))
    items = iter(outcomes)
    try:
        while not stop.is_set():
            batch = await asyncio.to_thread(_take, items, READ_BATCH)
            if not batch:
                break
            for item in batch:
                if not isinstance(item, Planned):
                    if not isinstance(item, Note):
                        stats.read += 1
                    on_outcome(item)
                    continue
                stats.read += 1
                if stop.is_set():
                    dispatcher.not_attempted(item)
                else:
                    await dispatcher.submit(item)
        while dispatcher.tasks:
            await asyncio.gather(*dispatcher.tasks, return_exceptions=True)
    finally:
        watchdog.cancel()
    return stats


async def _cut_off_after_stop(stop: asyncio.Event, dispatcher: Dispatcher, drain_timeout: float) -> None:
    await stop.wait()
    await asyncio.sleep(drain_timeout)
    for task in list(dispatcher.tasks):
        task.cancel()
