"""Posting the planned requests to Courier: one aiohttp session, bounded concurrency, an optional rate
cap, per-recipient order, retries (`retry`), and a clean stop that loses nothing."""

from __future__ import annotations

import asyncio
import collections
import datetime
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
from yarl import URL

from segroute import __version__
from segroute.errors import AuthError
from segroute.feeds import make_feed
from segroute.health import DEFAULT_GIVE_UP_AFTER, ApiHealth, TargetWatch
from segroute.models import (
    Delivered,
    Event,
    KeyState,
    Missed,
    Note,
    Outcome,
    Planned,
    Request,
    RequestResult,
    Skipped,
)
from segroute.retry import Attempt, Backoff, answered, decide, unanswered
from segroute.throttle import Sleep, Throttle, sleep_unless_stopped
from segroute.transform import CONTENT_TYPE

__all__ = ["DeliveryOptions", "DeliveryStats", "KeyRefusedError", "deliver", "open_session"]

EXPIRATION_HEADER = "x-idempotency-expiration"
URL_CACHE = 4096
"""Parsed URLs kept; a profile merge's is its user's."""
WINDOW_PER_WORKER = 4
"""Requests open per worker: enough queued that no worker waits for the reader."""

Clock = Callable[[], float]
BeforeSend = Callable[[Request, Event], None]


@dataclass(frozen=True)
class DeliveryOptions:
    """The knobs of a send; the defaults are what ``segroute send`` uses."""

    concurrency: int = 8
    """Requests in flight at once, at most: fewer while Courier answers 429."""
    rate: float | None = None
    """At most this many requests started per second; None for no cap but Courier's 429s."""
    max_retries: int = 5
    """Retries after the first attempt, for network errors, timeouts, 408 and 5xx while other requests
    get answers. A 429 is not counted (it slows the run down instead), nor are failures while the
    whole API is down (`health.ApiHealth`)."""
    request_deadline: float = 120.0
    """Seconds one request may take, all attempts and waits included, before it is given up."""
    attempt_timeout: float = 30.0
    """Seconds one attempt may take."""
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    drain_timeout: float = 10.0
    """After a stop, seconds the requests in flight get to finish."""
    idempotency_ttl: float | None = None
    """Seconds Courier should keep each Idempotency-Key (sent as ``x-idempotency-expiration``); None
    leaves Courier's default, 24 hours."""
    give_up_after: float = DEFAULT_GIVE_UP_AFTER
    """Seconds of failures with no answer from Courier after which the run stops (exit 75)."""


StopReason = Literal["SIGINT", "SIGTERM", "unavailable"]


class KeyRefusedError(AuthError):
    """Courier refused the API key (401 or 403): the run stopped, as every request would be refused."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"Courier refused the API key ({detail}); check COURIER_API_KEY. "
            "The run stopped: what was not sent is counted as not attempted."
        )
        self.detail = detail


@dataclass
class DeliveryStats:
    """Counters the progress display reads while a send runs, and why it stopped early, if it did."""

    read: int = 0
    already_sent: int = 0
    """Events read and skipped as accepted in an earlier run."""
    requests_done: int = 0
    failed: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    stopped_by: StopReason | None = None
    """Why the run stopped early; None when it ran to the end or Courier refused the key (then
    `deliver` raises `KeyRefusedError`)."""
    stop_detail: str = ""
    """What Courier did that stopped it."""
    input_read: bool = False
    """Whether every input was read to its end."""
    throttle: Throttle | None = None
    """The run's throttle, for the progress line: its pace and concurrency."""
    failing_targets: dict[str, str] = field(default_factory=dict)
    """Targets given up in the run, and why: the run's `health.TargetWatch.failing`."""

    def stop(self, reason: StopReason, detail: str = "") -> bool:
        """Note the first reason the run stops; whether this was it."""
        if self.stopped_by is not None:
            return False
        self.stopped_by = reason
        self.stop_detail = detail
        return True


def _accepted(request: Request, event: Event, attempt: Attempt, attempts: int) -> RequestResult:
    """A sent request, with the ``runId`` and ``requestId`` Courier's answer holds, if any."""
    try:
        answer = orjson.loads(attempt.body)
    except orjson.JSONDecodeError:
        answer = None
    ids = answer if isinstance(answer, dict) else {}
    run_id, request_id = ids.get("runId"), ids.get("requestId")
    return RequestResult(
        request,
        event,
        "sent",
        "duplicate" if attempt.status == 409 else "",
        attempt.status,
        attempts,
        run_id=run_id if isinstance(run_id, str) else None,
        request_id=request_id if isinstance(request_id, str) else None,
        key_state="accepted",
    )


class SendAbort(Exception):
    """What must happen before a request goes out could not (the ledger could not note it)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Sending:
    """Where one request is while it is being sent, so that a cut-off can still say what Courier may
    hold under its key."""

    __slots__ = ("attempts", "key_state", "in_flight")

    def __init__(self) -> None:
        self.attempts = 0
        self.key_state: KeyState = "unused"
        self.in_flight = False

    def cut_off(self) -> KeyState:
        """What Courier may hold under the key when the request is cut off where it is."""
        if self.in_flight and self.key_state == "unused":
            return "unknown"
        return self.key_state


class Sender:
    """Sends one request until it is accepted, refused, or out of retries, through the run's throttle,
    and tells the run's health watches how each attempt ended."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        options: DeliveryOptions,
        stats: DeliveryStats,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        before_send: BeforeSend | None = None,
    ) -> None:
        self._session = session
        self._options = options
        self._stats = stats
        self._before_send = before_send
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._backoff = Backoff(options.backoff_initial, options.backoff_max, rng)
        self.throttle = Throttle(concurrency=options.concurrency, rate=options.rate, clock=clock, sleep=sleep)
        self.health = ApiHealth(options.give_up_after, clock=clock)
        self.targets = TargetWatch()
        self.key_refused: KeyRefusedError | None = None
        """Set when Courier refused the API key; the run stops, and `deliver` raises it."""
        self._full_attempt = _attempt_timeout(options)
        self._expires = (0, "")
        self._urls: dict[str, URL] = {}
        """Parsed URLs: an automation's is the same for every request it gets."""

    async def send(
        self, request: Request, event: Event, stop: asyncio.Event, sending: Sending | None = None
    ) -> RequestResult:
        """Post a request, retrying what may succeed later, every attempt with the same Idempotency-Key."""
        options = self._options
        sending = sending or Sending()
        label = request.target.label
        failing = self.targets.failing.get(label)
        if failing is not None:
            detail = f"{label} refuses every request: {failing}"
            return RequestResult(request, event, "skipped", "target_failing", detail=detail)
        if self._before_send is not None:
            try:
                self._before_send(request, event)
            except Exception as exc:
                raise SendAbort(exc) from exc
        started = self._clock()
        url, headers = self._url(request), self._headers(request)
        retries = 0
        last: Attempt | None = None

        def ended(outcome: Literal["failed", "not_attempted"], reason: str, detail: str) -> RequestResult:
            status = None if last is None else last.status
            return RequestResult(
                request,
                event,
                outcome,
                reason,
                status,
                sending.attempts,
                detail=detail,
                key_state=sending.key_state,
            )

        while True:
            begun = self.throttle.try_acquire()
            if begun is None:
                begun = await self.throttle.acquire(stop)
            if begun is None:
                return ended("not_attempted", "stopped", "" if last is None else last.detail)
            left = options.request_deadline - (begun - started)
            if left <= 0:
                self.throttle.release()
                detail = "" if last is None else last.detail
                return ended(
                    "failed",
                    "deadline",
                    f"{detail}; past the {options.request_deadline:g}s limit per request",
                )
            last = await self._attempt(url, headers, request.body, sending, left)
            self._watch(last, label, event.user_id, begun, stop)
            match decide(last, retries=retries, max_retries=options.max_retries, api_down=self.health.down):
                case "accept":
                    return _accepted(request, event, last, sending.attempts)
                case "stop":
                    return ended("failed", "unauthorized", last.detail)
                case "fail" if last.verdict == "refused":
                    return ended("failed", last.reason, last.detail)
                case "fail":
                    return ended(
                        "failed", last.reason, f"{last.detail}; gave up after {sending.attempts} attempts"
                    )
                case "wait":
                    delay = 0.0  # the throttle's gate holds the next attempt
                case "retry":
                    if not self.health.down:
                        retries += 1
                    delay = (
                        last.retry_after
                        if last.retry_after is not None
                        else self._backoff.delay(sending.attempts - 1)
                    )
            if self._clock() + delay - started > options.request_deadline:
                detail = f"{last.detail}; the next retry would pass the {options.request_deadline:g}s limit"
                return ended("failed", last.reason, detail)
            self._stats.retries += 1
            if delay > 0 and await sleep_unless_stopped(self._sleep, delay, stop):
                return ended("not_attempted", "stopped", last.detail)

    async def _attempt(
        self, url: URL, headers: dict[str, str], body: bytes, sending: Sending, left: float
    ) -> Attempt:
        """One POST, within the seconds ``left`` of the request's deadline; the throttle's slot it
        holds is released when it ends."""
        sending.attempts += 1
        sending.in_flight = True
        timeout = (
            self._full_attempt if left >= self._options.attempt_timeout else aiohttp.ClientTimeout(total=left)
        )
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False, timeout=timeout
            ) as response:
                attempt = answered(response.status, await response.read(), response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            attempt = unanswered(exc, timeout)
        finally:
            self.throttle.release()
        # Not on a cancellation (the drain's cut-off): then the request is still in flight, and
        # `Sending.cut_off` says Courier may hold it.
        sending.in_flight = False
        sending.key_state = attempt.key_state(sending.key_state)
        return attempt

    def _watch(
        self, attempt: Attempt, label: str, user_id: str | None, begun: float, stop: asyncio.Event
    ) -> None:
        """Tell the run's watches how an attempt ended: the API's health, the throttle, the target."""
        match attempt.verdict:
            case "accepted":
                self.health.answered()
                self.throttle.accepted()
                self.targets.accepted(label)
            case "unauthorized":
                self.health.answered()
                if self.key_refused is None:
                    self.key_refused = KeyRefusedError(attempt.detail)
                    stop.set()
            case "refused":
                self.health.answered()
                if attempt.status is not None:
                    self.targets.refused(label, user_id or "", attempt.status, attempt.detail)
            case "throttled":
                self.health.failed(user_id, begun, attempt.detail)
                self.throttle.throttled(begun, attempt.retry_after)
                if self.throttle.gate_wait() > self._options.give_up_after:
                    self.give_up(stop, f"Courier asked to wait {self.throttle.gate_wait():.0f}s (429)")
            case "retry":
                # `_watch_health` stops the run once Courier has failed long enough.
                self.health.failed(user_id, begun, attempt.detail)

    def give_up(self, stop: asyncio.Event, failure: str) -> None:
        """Stop the run: Courier has failed too long with no answer (exit 75, to be resumed later)."""
        seconds = self.health.failing_for()
        if self._stats.stop("unavailable", f"for {seconds:.0f}s; the last: {failure}"):
            stop.set()

    def _url(self, request: Request) -> URL:
        url = self._urls.get(request.url)
        if url is None:
            if len(self._urls) >= URL_CACHE:
                self._urls.clear()
            # Sent as built: yarl must not re-encode it, nor resolve an id of '..' as a step up.
            url = self._urls[request.url] = URL(request.url, encoded=True)
        return url

    def _headers(self, request: Request) -> dict[str, str]:
        headers = {"Idempotency-Key": request.idempotency_key}
        if self._options.idempotency_ttl is not None:
            headers[EXPIRATION_HEADER] = self._expiration(self._options.idempotency_ttl)
        return headers

    def _expiration(self, ttl: float) -> str:
        """When the key may expire, ISO-8601 UTC, from this second; formatted once a second."""
        second = int(self._wall_clock())
        if self._expires[0] != second:
            moment = datetime.datetime.fromtimestamp(second + ttl, datetime.UTC)
            self._expires = (second, moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return self._expires[1]


def _attempt_timeout(options: DeliveryOptions) -> aiohttp.ClientTimeout:
    """One whole attempt's timeout, connecting included."""
    return aiohttp.ClientTimeout(total=options.attempt_timeout, connect=min(10.0, options.attempt_timeout))


def open_session(api_key: str, options: DeliveryOptions) -> aiohttp.ClientSession:
    """The run's one session: a connector sized to the concurrency, explicit timeouts, the key as a header."""
    connector = aiohttp.TCPConnector(limit=options.concurrency, limit_per_host=options.concurrency)
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": CONTENT_TYPE,
        "User-Agent": f"segroute/{__version__}",
    }
    return aiohttp.ClientSession(
        connector=connector, timeout=_attempt_timeout(options), headers=headers, raise_for_status=False
    )


@dataclass(slots=True)
class _EventState:
    event: Event
    remaining: int
    sent_before: tuple[Request, ...]
    missed: tuple[Missed, ...]
    results: list[RequestResult] = field(default_factory=list)


@dataclass(slots=True)
class _Job:
    request: Request
    state: _EventState
    recipient: str


class Dispatcher:
    """Runs requests on ``concurrency`` long-lived workers while one recipient's requests go out in
    input order: a recipient's next request waits beside the queue until its previous one ended."""

    def __init__(
        self,
        sender: Sender,
        stats: DeliveryStats,
        stop: asyncio.Event,
        *,
        options: DeliveryOptions,
        on_request: Callable[[RequestResult], None],
        on_event: Callable[[Delivered], None],
    ) -> None:
        self._sender = sender
        self._stats = stats
        self._stop = stop
        self._on_request = on_request
        self._on_event = on_event
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue()
        """Requests any worker may start; None lets a worker go."""
        self._behind: dict[str, collections.deque[_Job]] = {}
        """Per recipient, the requests waiting for the one in flight to end."""
        self._busy: set[str] = set()
        """Recipients with a request queued or in flight."""
        self._room = asyncio.Semaphore(options.concurrency * WINDOW_PER_WORKER)
        """Requests that may be open (queued, waiting behind their recipient's, or in flight) at
        once: a bound on memory."""
        self._open = 0
        self._closed = False
        self._aborted = False
        self._in_flight: set[asyncio.Task[Any]] = set()
        self.tasks: set[asyncio.Task[None]] = {
            asyncio.create_task(self._work()) for _ in range(options.concurrency)
        }
        """The workers: `deliver` awaits them, the drain timeout cancels them."""
        self.output_error: Exception | None = None
        """An error an output callback raised; the run stops, and `deliver` raises it at the end."""

    async def submit(self, planned: Planned) -> None:
        """Queue an event's requests behind any earlier request to the same recipient."""
        state = _EventState(planned.event, len(planned.requests), planned.sent_before, planned.missed)
        recipient = planned.event.user_id
        if recipient is None:  # an anonymous event, for Courier's Segment intake: unordered
            recipient = "\0" + planned.event.message_id
        for request in planned.requests:
            await self._room.acquire()
            self._open += 1
            job = _Job(request, state, recipient)
            if recipient in self._busy:
                self._behind.setdefault(recipient, collections.deque()).append(job)
            else:
                self._busy.add(recipient)
                self._jobs.put_nowait(job)

    async def join(self) -> None:
        """Wait until every request submitted has ended, then let the workers go."""
        self._closed = True
        if self._open == 0:
            self._release_workers()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _release_workers(self) -> None:
        for _ in self.tasks:
            self._jobs.put_nowait(None)

    def cut_off(self) -> None:
        """The drain timed out: end the requests in flight now (they end as not attempted)."""
        for task in list(self._in_flight):
            task.cancel()

    def abort(self) -> None:
        """Stop the workers where they are (delivery failed and is being unwound)."""
        self._aborted = True
        for task in self.tasks:
            task.cancel()

    async def _work(self) -> None:
        while not self._aborted and (job := await self._jobs.get()) is not None:
            if self._stop.is_set():
                result = RequestResult(job.request, job.state.event, "not_attempted", "stopped")
            else:
                result = await self._send(job)
            self._end(job, result)

    async def _send(self, job: _Job) -> RequestResult:
        """Send a job's request; whatever happens, it ends in a result, never lost."""
        request, event = job.request, job.state.event
        task = asyncio.current_task()
        assert task is not None
        sending = Sending()
        self._in_flight.add(task)
        try:
            return await self._sender.send(request, event, self._stop, sending)
        except asyncio.CancelledError:
            if self._aborted:
                raise
            # The drain timed out: whether Courier got a request in flight is unknown; the ledger
            # keeps it as such, and a resume sends it again under the same key.
            return RequestResult(
                request,
                event,
                "not_attempted",
                "stopped",
                attempts=sending.attempts,
                detail="cut off by the stop",
                key_state=sending.cut_off(),
            )
        except SendAbort as exc:  # the ledger could not note the request: it is not sent
            self._fail_output(exc.error)
            return RequestResult(request, event, "not_attempted", "stopped", detail=str(exc.error))
        except Exception as exc:  # anything else ends this request as failed
            detail = f"{type(exc).__name__}: {exc}"
            return RequestResult(
                request, event, "failed", "error", detail=detail, key_state=sending.cut_off()
            )
        finally:
            self._in_flight.discard(task)

    def _fail_output(self, error: Exception) -> None:
        """An output failed (stdout closed, the ledger unwritable): stop, keep what was read, then raise."""
        if self.output_error is None:
            self.output_error = error
        self._stop.set()

    def _end(self, job: _Job, result: RequestResult) -> None:
        behind = self._behind.get(job.recipient)
        if behind:
            self._jobs.put_nowait(behind.popleft())
            if not behind:
                del self._behind[job.recipient]
        else:
            self._busy.discard(job.recipient)
        try:
            self._finish(job.state, result)
        except Exception as exc:
            self._fail_output(exc)
        self._open -= 1
        self._room.release()
        if self._closed and self._open == 0:
            self._release_workers()

    def _finish(self, state: _EventState, result: RequestResult) -> None:
        self._stats.requests_done += 1
        if result.outcome == "failed":
            self._stats.failed += 1
        state.results.append(result)
        state.remaining -= 1
        if state.remaining == 0:
            self._on_event(Delivered(state.event, tuple(state.results), state.sent_before, state.missed))
        self._on_request(result)


async def deliver(
    outcomes: Iterable[Outcome | Note],
    *,
    session: aiohttp.ClientSession,
    options: DeliveryOptions,
    stop: asyncio.Event,
    on_outcome: Callable[[Outcome | Note | Delivered], None],
    on_request: Callable[[RequestResult], None],
    stats: DeliveryStats | None = None,
    streaming: bool = False,
    read_inline: bool = False,
    before_send: BeforeSend | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> DeliveryStats:
    """Send every planned event's requests; everything else goes straight to ``on_outcome``.

    Reading happens on a thread of its own, so a slow input never stalls the requests in flight; or,
    with ``read_inline``, on the loop's thread a few items a turn, for inputs where no item can take
    long (files read in order: not stdin, not a sort, not day folders skipped wholesale).
    Setting ``stop`` ends reading; requests in flight get ``options.drain_timeout`` seconds, and
    everything read but not sent ends as ``not_attempted``. An error from an output callback (stdout
    closed, say) stops the run the same way, then is raised; so does `KeyRefusedError` when Courier
    refuses the API key. Courier failing with no answer for ``options.give_up_after`` seconds stops
    it too (``stats.stopped_by`` is then ``unavailable``).
    ``before_send(request, event)`` runs before a request's first attempt (the ledger notes it there).
    """
    stats = stats or DeliveryStats()
    sender = Sender(session, options, stats, clock=clock, sleep=sleep, before_send=before_send)
    stats.throttle, stats.failing_targets = sender.throttle, sender.targets.failing
    dispatcher = Dispatcher(sender, stats, stop, options=options, on_request=on_request, on_event=on_outcome)
    watchdogs = (
        asyncio.create_task(_cut_off_after_stop(stop, dispatcher, options.drain_timeout)),
        asyncio.create_task(_watch_health(sender, stop)),
    )
    feed = make_feed(outcomes, streaming=streaming, read_inline=read_inline)

    async def take(items: Iterable[Outcome | Note]) -> None:
        for item in items:
            if type(item) is Planned:  # after a stop, it ends as not_attempted behind its recipient
                stats.read += 1
                await dispatcher.submit(item)
            else:
                if not isinstance(item, Note):
                    stats.read += 1
                    if isinstance(item, Skipped) and item.reason == "already_sent":
                        stats.already_sent += 1
                on_outcome(item)

    try:
        while not stop.is_set() and (batch := await feed.next_batch(stop)) is not None:
            await take(batch)
        await take(await feed.stop())
        stats.input_read = feed.finished
        await dispatcher.join()
    finally:
        for watchdog in watchdogs:
            watchdog.cancel()
        dispatcher.abort()  # only workers still running, when something above raised
    if dispatcher.output_error is not None:
        raise dispatcher.output_error
    if sender.key_refused is not None:
        raise sender.key_refused
    return stats


# The two watchdogs keep the loop's own time, not the injected sleep and clock: those pace the
# attempts, and a test's instant sleep would spin a watchdog without end.


async def _cut_off_after_stop(stop: asyncio.Event, dispatcher: Dispatcher, drain_timeout: float) -> None:
    await stop.wait()
    await asyncio.sleep(drain_timeout)
    dispatcher.cut_off()


HEALTH_CHECK_EVERY = 0.5
"""Seconds between looks at the API's health while attempts hang or wait."""


async def _watch_health(sender: Sender, stop: asyncio.Event) -> None:
    """Give up on an API that stays down even while no attempt ends (they hang, or wait to retry)."""
    while not stop.is_set():
        await asyncio.sleep(HEALTH_CHECK_EVERY)
        if sender.health.gave_up:
            sender.give_up(stop, sender.health.last_failure)
