"""Throttling is a speed: one gate for the whole API, a pace and a concurrency that follow Courier's
429s (`segroute.throttle`), without a server and then against a token-bucket rate limit on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from segroute.throttle import DECREASE, Throttle
from tests.courier_server import FakeCourier, TokenBucket

# _isolated: the delivery tests' autouse fixture (a tmp folder with their config and API key).
from tests.test_delivery import _isolated, identify, send, write_events  # noqa: F401


class FakeTime:
    """A clock that moves only when something sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        self.now += seconds


def test_a_429_closes_the_gate_for_every_attempt_for_its_retry_after() -> None:
    time = FakeTime()
    throttle = Throttle(concurrency=4, clock=time.clock, sleep=time.sleep)

    async def main() -> list[float | None]:
        started = await throttle.acquire()
        assert started == 1000.0
        throttle.release()
        throttle.throttled(started, retry_after=7.0)
        # Two attempts that were not the one refused wait for the gate too.
        first = await throttle.acquire()
        throttle.release()
        second = await throttle.acquire()
        throttle.release()
        return [first, second]

    starts = asyncio.run(main())
    assert starts[0] == 1007.0
    assert time.waits[0] == 7.0
    assert throttle.gate_wait() == 0.0


def test_a_burst_of_429s_slows_down_once() -> None:
    time = FakeTime()
    throttle = Throttle(concurrency=10, clock=time.clock, sleep=time.sleep)

    async def main() -> None:
        starts: list[float] = []
        for _ in range(10):
            started = await throttle.acquire()
            assert started is not None
            starts.append(started)
        for _ in range(10):
            throttle.release()
        for started in starts:  # every attempt of the burst started before the first 429 came
            throttle.throttled(started, retry_after=1.0)

    asyncio.run(main())
    assert throttle.throttled_count == 10
    assert throttle.concurrency == 7  # 10 * DECREASE, once
    assert throttle.rate is not None  # a pace now, where there was none


def test_acceptances_grow_the_concurrency_back_one_at_a_time() -> None:
    time = FakeTime()
    throttle = Throttle(concurrency=8, clock=time.clock, sleep=time.sleep)

    async def main() -> None:
        started = await throttle.acquire()
        assert started is not None
        throttle.release()
        throttle.throttled(started, retry_after=0.0)

    asyncio.run(main())
    assert throttle.concurrency == int(8 * DECREASE)
    for _ in range(throttle.concurrency):  # a round of acceptances: one more in flight
        throttle.accepted()
    assert throttle.concurrency == int(8 * DECREASE) + 1
    for _ in range(100):
        throttle.accepted()
    assert throttle.concurrency == 8  # never past what was asked for


def test_the_concurrency_limit_holds_attempts_back() -> None:
    time = FakeTime()
    throttle = Throttle(concurrency=2, clock=time.clock, sleep=time.sleep)
    order: list[str] = []

    async def attempt(name: str, hold: asyncio.Event) -> None:
        await throttle.acquire()
        order.append(f"{name} starts")
        await hold.wait()
        order.append(f"{name} ends")
        throttle.release()

    async def main() -> None:
        holds = [asyncio.Event() for _ in range(3)]
        tasks = [asyncio.create_task(attempt(name, hold)) for name, hold in zip("abc", holds, strict=True)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert order == ["a starts", "b starts"]  # c waits for a slot
        holds[0].set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert order == ["a starts", "b starts", "a ends", "c starts"]
        holds[1].set()
        holds[2].set()
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_a_stop_wakes_an_attempt_waiting_at_the_gate() -> None:
    throttle = Throttle(concurrency=1)

    async def main() -> float | None:
        started = await throttle.acquire()
        assert started is not None
        throttle.release()
        throttle.throttled(started, retry_after=3600.0)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await throttle.acquire(stop)

    assert asyncio.run(asyncio.wait_for(main(), timeout=10)) is None


def test_against_a_token_bucket_every_request_goes_once_with_few_429s(courier: FakeCourier) -> None:
    """The issue's case: an API that takes 300 requests a second and answers 429 with Retry-After: 1
    above it, and a send at --concurrency 64."""
    courier.limit = TokenBucket(rate=300, burst=30)
    count = 1500
    write_events([identify(n, f"u{n}") for n in range(count)])
    result = send(courier, "events.jsonl", "--concurrency", "64", "--max-retries", "0", "--report", "r.json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(Path("r.json").read_text())
    assert report["totals"] == {"sent": count}
    assert courier.throttled >= 1  # the limit was met, and was a speed: nothing failed
    assert report["throttled"] == courier.throttled
    assert len(courier.received) <= 1.2 * count
    assert len(courier.acted) == count and set(courier.acted.values()) == {1}
    assert report["http_statuses"] == {"200": count}
