"""Feeds: where a send takes the outcomes to deliver from, a batch at a time.

The pipeline is a plain iterator; reading it may block (stdin) or take long (a sort, day folders
skipped wholesale). `ThreadFeed` reads it on a thread of its own and hands batches to the event loop;
`InlineFeed` reads a few items a turn on the loop's thread, for inputs where no item takes long,
which spares passing the GIL to and fro.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterable
from typing import Final, Protocol

from segroute.models import Note, Outcome

__all__ = ["INLINE_BATCH", "READ_BATCH", "Feed", "InlineFeed", "ThreadFeed", "make_feed"]

READ_BATCH = 256
"""Outcomes read from the inputs per trip to the reader thread."""
READ_AHEAD_BATCHES = 8
"""Batches the reader thread may read ahead of the loop: a bound on memory."""
INLINE_BATCH = 16
"""Outcomes read per turn on the loop's thread: well under a millisecond of work."""
STOP_WAIT = 1.0
"""Seconds a stop waits for the reader thread to hand over the batch it holds."""


class Feed(Protocol):
    """Where `deliver` takes the outcomes from, a batch at a time."""

    finished: bool
    """Whether the outcomes were read to their end."""

    async def next_batch(self, stop: asyncio.Event) -> list[Outcome | Note] | None:
        """The next batch; None at the end, or at a stop."""

    async def stop(self) -> list[Outcome | Note]:
        """Stop reading; what was read and not taken yet."""


def make_feed(outcomes: Iterable[Outcome | Note], *, streaming: bool, read_inline: bool) -> Feed:
    """A feed on the loop's own thread when items never take long to read, else on a thread."""
    if read_inline and not streaming:
        return InlineFeed(outcomes, size=INLINE_BATCH)
    return ThreadFeed(outcomes, streaming=streaming)


_END: Final[list[Outcome | Note]] = []
"""What the reader thread hands over after the last batch of the input."""
_STOPPED: Final[list[Outcome | Note]] = []
"""What it hands over after its last batch when it was asked to stop before the end."""


class ThreadFeed:
    """Reads on one thread of its own and hands batches to the event loop.

    One thread, so state the pipeline keeps (the duplicate check's SQLite file) stays on it. With
    ``streaming`` (stdin), every item is handed over as it is read, so events piped in a few at a time
    go out at once and a stop need not wait for a read that blocks; otherwise items go in batches.
    """

    def __init__(self, outcomes: Iterable[Outcome | Note], *, streaming: bool) -> None:
        self._items = iter(outcomes)
        self._size = 1 if streaming else READ_BATCH
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[list[Outcome | Note]] = asyncio.Queue()
        self._room = threading.Semaphore(READ_AHEAD_BATCHES)
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self.finished = False
        self._ended = False
        """Whether the thread's last hand-over was taken: nothing more will come."""
        self._thread = threading.Thread(target=self._run, name="segroute-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        batch: list[Outcome | Note] = []
        last = _STOPPED
        try:
            for item in self._items:
                batch.append(item)
                if len(batch) >= self._size:
                    self._hand_over(batch)
                    batch = []
                if self._stopping.is_set():
                    break
            else:
                last = _END
        except BaseException as exc:  # handed to the loop, which raises it
            self._error = exc
            last = _END
        if batch:
            self._hand_over(batch)
        self._hand_over(last)

    def _hand_over(self, batch: list[Outcome | Note]) -> None:
        self._room.acquire()
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, batch)
        except RuntimeError:  # the loop is closed: the run gave up waiting for this thread
            pass

    async def next_batch(self, stop: asyncio.Event) -> list[Outcome | Note] | None:
        """The next batch; None at the end of the input, or at a stop while the reader is still busy."""
        get = asyncio.ensure_future(self._queue.get())
        if not get.done():
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({get, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not get.done():
                get.cancel()
                return None
        batch = get.result()
        self._room.release()
        if batch is _END:
            self._ended = True
            if self._error is not None:
                raise self._error
            self.finished = True
            return None
        return batch

    async def stop(self) -> list[Outcome | Note]:
        """Ask the thread to stop; what it read and has not been taken: what it handed over, and
        the batch it hands over as it stops. A thread still blocked in a read after STOP_WAIT
        seconds (stdin, say) has read nothing more, and is left."""
        self._stopping.set()
        left: list[Outcome | Note] = []
        deadline = self._loop.time() + STOP_WAIT
        while not self._ended:
            try:
                batch = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - self._loop.time()))
            except TimeoutError:
                return left
            self._room.release()
            if batch is _END or batch is _STOPPED:
                self._ended = True
                self.finished = batch is _END and self._error is None
            else:
                left.extend(batch)
        return left


class InlineFeed:
    """Reads on the event loop's own thread, a few items a turn: no second thread to pass the GIL
    to and fro with. Only for inputs where one item never takes long to read (see `deliver`)."""

    def __init__(self, outcomes: Iterable[Outcome | Note], *, size: int) -> None:
        self._items = iter(outcomes)
        self._size = size
        self.finished = False

    async def next_batch(self, stop: asyncio.Event) -> list[Outcome | Note] | None:
        """The next few items; None at the end."""
        await asyncio.sleep(0)  # answers that came in are handled first
        batch = list(itertools.islice(self._items, self._size))
        self.finished = not batch
        return batch or None

    async def stop(self) -> list[Outcome | Note]:
        """Nothing is read ahead."""
        return []
