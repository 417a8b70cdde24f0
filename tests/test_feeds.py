"""Feeds: a stop ends every outcome the pipeline read in exactly one outcome, and says whether the
input was read to its end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from segroute import feeds
from segroute.feeds import READ_AHEAD_BATCHES, READ_BATCH, InlineFeed, ThreadFeed
from segroute.models import Note, Outcome, Skipped


def skipped(count: int, produced: list[int]) -> Iterator[Outcome | Note]:
    """``count`` outcomes, counting in ``produced`` how many the pipeline has handed out."""
    for n in range(count):
        produced[0] += 1
        yield Skipped(f"in.jsonl:{n + 1}", "filtered", f"m{n}")


def test_a_stop_takes_every_batch_the_reader_read_even_the_one_it_was_handing_over() -> None:
    # Far more than the reader may read ahead, so that it is blocked holding a full batch.
    count = READ_BATCH * (READ_AHEAD_BATCHES + 10)
    produced = [0]

    async def run() -> tuple[list[Outcome | Note], bool]:
        feed = ThreadFeed(skipped(count, produced), streaming=False)
        taken = await feed.next_batch(asyncio.Event()) or []
        while produced[0] < READ_BATCH * (READ_AHEAD_BATCHES + 1):  # the read-ahead is full
            await asyncio.sleep(0.01)
        taken += await feed.stop()
        return taken, feed.finished

    taken, finished = asyncio.run(run())
    assert len(taken) == produced[0] < count
    origins = [item.origin for item in taken if isinstance(item, Skipped)]
    assert origins == [f"in.jsonl:{n + 1}" for n in range(produced[0])]
    assert finished is False  # stopped before the end: the input was not read whole


def test_a_feed_read_to_its_end_says_so_and_a_stop_after_it_has_nothing_left() -> None:
    async def run(feed: ThreadFeed | InlineFeed) -> tuple[int, bool, int]:
        taken = 0
        while (batch := await feed.next_batch(asyncio.Event())) is not None:
            taken += len(batch)
        return taken, feed.finished, len(await feed.stop())

    async def thread_feed() -> tuple[int, bool, int]:
        return await run(ThreadFeed(skipped(1000, [0]), streaming=False))

    async def inline_feed() -> tuple[int, bool, int]:
        return await run(InlineFeed(skipped(1000, [0]), size=16))

    assert asyncio.run(thread_feed()) == (1000, True, 0)
    assert asyncio.run(inline_feed()) == (1000, True, 0)


def test_a_stop_after_the_end_returns_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every send calls stop() when its input is done; with the end already taken there is nothing to
    wait for. (Waiting STOP_WAIT here would hit the test's time-out.)"""
    monkeypatch.setattr(feeds, "STOP_WAIT", 3600.0)

    async def run() -> tuple[int, bool, list[Outcome | Note]]:
        feed = ThreadFeed(skipped(300, [0]), streaming=False)
        taken = 0
        while (batch := await feed.next_batch(asyncio.Event())) is not None:
            taken += len(batch)
        return taken, feed.finished, await feed.stop()

    assert asyncio.run(run()) == (300, True, [])
