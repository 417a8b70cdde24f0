"""How fast attempts go out: one gate for the whole API, and a pace that follows Courier's 429s.

A 429 is a speed, not a failure. It closes the gate for everyone (for its ``Retry-After``, else a
second), and lowers both the pace (requests started per second) and the number of requests in flight:
multiplicatively, once per burst of 429s. Every accepted request raises them again a little
(additive increase), up to what ``--rate`` and ``--concurrency`` allow. Against an API that takes R
requests a second, the pace settles just under R with a 429 now and then: AIMD, as TCP finds the
speed of a link.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable

__all__ = [
    "DECREASE",
    "DEFAULT_PAUSE",
    "MAX_SAMPLES",
    "MIN_RATE",
    "PROBE_PER_SECOND",
    "RATE_WINDOW",
    "RECOVER_PER_SECOND",
    "Clock",
    "Sleep",
    "Throttle",
    "sleep_unless_stopped",
]

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

DEFAULT_PAUSE = 1.0
"""Seconds the gate stays closed after a 429 that names no wait."""
DECREASE = 0.7
"""What a burst of 429s multiplies the pace and the concurrency by."""
RECOVER_PER_SECOND = 0.10
"""How much of itself the pace regains a second, while it holds requests back, below 90% of the pace
that last met a 429 (at least 1/s) ..."""
PROBE_PER_SECOND = 0.02
"""... and above it, where it probes slowly for a limit that moved."""
MIN_RATE = 0.5
"""The slowest pace, in requests a second."""
RATE_WINDOW = 2.0
"""Seconds over which the accepted rate is measured when a 429 comes."""
MAX_SAMPLES = 100_000
"""Times kept for measuring rates: enough for 50,000 requests a second."""


class Throttle:
    """The gate, the pace and the concurrency every attempt passes through.

    ``acquire`` waits for all three, ``release`` ends the attempt; ``accepted`` and ``throttled``
    say how Courier answered it. Time comes from ``clock`` and waits go through ``sleep``, so tests
    run without waiting.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        rate: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.max_concurrency = concurrency
        self.concurrency = concurrency
        """Attempts allowed in flight now: ``max_concurrency`` until Courier answers 429."""
        self.max_rate = rate
        self.rate = rate
        """Attempts started per second at most now; None for no limit (until a 429)."""
        self.throttled_count = 0
        """429s answered in the run."""
        self._clock = clock
        self._sleep = sleep
        self._in_flight = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._gate = 0.0
        """No attempt starts before this time."""
        self._next_start = 0.0
        self._decreased = -math.inf
        """When the last burst of 429s lowered the pace: a 429 to an attempt that started before it
        belongs to that burst."""
        self._held_back = False
        """Whether the pace has made an attempt wait since the last increase."""
        self._limit = math.inf
        """The pace at which Courier last answered 429."""
        self._opened = -math.inf
        """When the gate last opened after a 429."""
        self._since_increase = 0
        self._accepted: collections.deque[float] = collections.deque(maxlen=MAX_SAMPLES)
        """When recent attempts were accepted, for the last RATE_WINDOW seconds."""
        self._started: collections.deque[float] = collections.deque(maxlen=MAX_SAMPLES)
        """When recent attempts started."""

    def try_acquire(self) -> float | None:
        """The start time of an attempt that may start now, holding its slot; None when it must wait
        (then `acquire`)."""
        if self._in_flight < self.concurrency and not self.rate:
            now = self._clock()
            if now >= self._gate:
                self._in_flight += 1
                self._started.append(now)
                return now
        return None

    async def acquire(self, stop: asyncio.Event | None = None) -> float | None:
        """Wait until an attempt may start; the time it starts, or None when ``stop`` was set while
        waiting (the attempt does not start, and holds nothing)."""
        while self._in_flight >= self.concurrency:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass on the slot it was given
                raise
        self._in_flight += 1
        try:
            while True:
                now = self._clock()
                start = max(now, self._gate)
                if self.rate:
                    if self._next_start > start:
                        start = self._next_start
                        self._held_back = True
                    self._next_start = start + 1 / self.rate
                if start > now:
                    if stop is None:
                        await self._sleep(start - now)
                    elif await sleep_unless_stopped(self._sleep, start - now, stop):
                        self.release()
                        return None
                if self._gate <= start:
                    self._started.append(start)
                    return start
                # A 429 closed the gate while this one waited: wait for the gate too.
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """An attempt ended."""
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self._in_flight < self.concurrency:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def accepted(self) -> None:
        """Courier accepted an attempt: the pace and the concurrency grow back a little."""
        now = self._clock()
        self._accepted.append(now)
        self._since_increase += 1
        if self._since_increase >= self.concurrency and self.concurrency < self.max_concurrency:
            self.concurrency += 1
            self._since_increase = 0
            self._wake()
        if self.rate is not None and self._held_back:
            growth = RECOVER_PER_SECOND if self.rate < 0.9 * self._limit else PROBE_PER_SECOND
            step = max(1.0, self.rate * growth) / self.rate  # one request's share of a second's growth
            grown = self.rate + step
            self.rate = grown if self.max_rate is None else min(self.max_rate, grown)
            self._held_back = False

    def throttled(self, started: float, retry_after: float | None) -> None:
        """Courier answered an attempt that started at ``started`` with 429: close the gate for
        everyone, and slow down once for the burst."""
        self.throttled_count += 1
        now = self._clock()
        self._gate = max(self._gate, now + (DEFAULT_PAUSE if retry_after is None else retry_after))
        if started <= self._decreased:
            return  # already slowed down for the burst this attempt belongs to
        self._decreased = now
        # What went through since the gate last opened is the best guess of Courier's limit (what
        # went out, when nothing went through); the pace, when that is lower.
        since = max(now - RATE_WINDOW, self._opened)
        measured = _per_second(self._accepted, now, since) or _per_second(self._started, now, since)
        if self.rate is not None:
            measured = min(measured, self.rate) if measured else self.rate
        if measured:
            self._limit = measured
            self.rate = max(MIN_RATE, measured * DECREASE)
        self._opened = self._gate
        self.concurrency = max(1, math.floor(self.concurrency * DECREASE))
        self._since_increase = 0

    def gate_wait(self) -> float:
        """Seconds until the gate opens (0 when it is open)."""
        return max(0.0, self._gate - self._clock())


def _per_second(times: collections.deque[float], now: float, since: float) -> float:
    """Events a second from ``since`` to ``now``, from when they happened (over less time, when they
    began later)."""
    while times and times[0] < now - RATE_WINDOW:
        times.popleft()
    count = sum(1 for moment in times if moment >= since)
    if not count:
        return 0.0
    first = next(moment for moment in times if moment >= since)
    return count / max(now - first, 0.1)


async def sleep_unless_stopped(sleep: Sleep, seconds: float, stop: asyncio.Event) -> bool:
    """Sleep, but wake at once when ``stop`` is set; whether it was."""
    if stop.is_set():
        return True
    sleeping = asyncio.ensure_future(sleep(seconds))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeping.cancel()
        stopping.cancel()
    return stop.is_set()
