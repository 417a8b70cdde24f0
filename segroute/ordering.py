"""Events in the order they happened, however many: an external merge sort on temporary files.

The order is (event time, received time, messageId, input position), a missing time after every
present one at its level. The input position makes the order total, so the sort is stable.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import tempfile
from collections.abc import Generator, Iterable, Iterator
from contextlib import ExitStack
from typing import BinaryIO, TypeVar, cast

from segroute import _json
from segroute.errors import TempStorageError
from segroute.models import Event
from segroute.selection import event_time, received_time

__all__ = [
    "ENTRY_OVERHEAD",
    "Key",
    "order_by_time",
    "sort_key",
]

T = TypeVar("T")
Key = tuple[int, int, int, int, str, int]
"""(no event time, event time, no received time, received time, messageId, input position)."""
_Item = tuple[Key, bytes | Event]
"""A sort key with its run line (``key<TAB>event\\n``), or with an event that has no JSON line."""

ENTRY_OVERHEAD = 256
"""Bytes a buffered event costs beyond its line (the key and the objects that hold it), for the estimate."""
_READ_BUFFER = 64 * 1024


def order_by_time(
    items: Iterable[Event | T],
    *,
    run_bytes: int = 64 * 1024 * 1024,
    fan_in: int = 64,
    tmpdir: str | None = None,
) -> Generator[Event | T, None, None]:
    """The events sorted by (event time, received time, messageId), stable; missing times sort last.

    Anything that is not an event passes through at once, as it is read; the sorted events follow.

    Memory holds about ``run_bytes`` of events as compact JSON lines plus one line from each of at most
    ``fan_in`` runs being merged; everything beyond spills to sorted runs in a temporary directory
    under ``tmpdir``, removed when the iterator ends, fails or is closed. Nothing touches the disk when
    all the events fit in ``run_bytes``. Runs that cannot be written or read back (a full disk) raise
    `TempStorageError`.
    """
    if run_bytes < 1:
        raise ValueError(f"run_bytes must be positive, not {run_bytes}")
    if fan_in < 2:
        raise ValueError(f"fan_in must be at least 2, not {fan_in}")
    return _order(items, run_bytes, fan_in, tmpdir)


def sort_key(event: Event, position: int) -> Key:
    """The key `order_by_time` sorts by, for an event at a position in the input."""
    occurred = event_time(event.data)
    received = received_time(event.data)
    return (
        occurred is None,
        occurred or 0,
        received is None,
        received or 0,
        event.message_id,
        position,
    )


def _order(
    items: Iterable[Event | T], run_bytes: int, fan_in: int, tmpdir: str | None
) -> Generator[Event | T, None, None]:
    runs = _Runs(tmpdir)
    try:
        buffer: list[_Item] = []
        # Events whose data cannot be written as JSON (a lone surrogate, say) stay in memory: rare,
        # and better than failing a replay.
        pinned: list[_Item] = []
        size = 0
        for position, event in enumerate(items):
            if not isinstance(event, Event):
                yield event
                continue
            key = sort_key(event, position)
            try:
                line = _encode(key, event)
            except ValueError:
                pinned.append((key, event))
                continue
            cost = len(line) + ENTRY_OVERHEAD
            if buffer and size + cost > run_bytes:
                buffer.sort()
                runs.write(buffer)
                buffer = []
                size = 0
            buffer.append((key, line))
            size += cost
        buffer.sort()
        pinned.sort()
        runs.reduce(fan_in)
        with ExitStack() as stack, runs.storage():
            streams = _open_runs(stack, runs)
            # Keys are unique (the input position), so tuples never compare the lines or events.
            for key, item in heapq.merge(*streams, buffer, pinned):
                yield item if isinstance(item, Event) else _decode(key, item)
    finally:
        runs.close()


class _Runs:
    """Sorted runs as files in a temporary directory made on the first write, in the order written."""

    def __init__(self, tmpdir: str | None) -> None:
        self._tmpdir = tmpdir
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._paths: list[str] = []
        self._made = 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def _new_path(self) -> str:
        if self._directory is None:
            self._directory = tempfile.TemporaryDirectory(prefix="segroute-order-", dir=self._tmpdir)
        self._made += 1
        return os.path.join(self._directory.name, f"run-{self._made:06d}.ndjson")

    @contextlib.contextmanager
    def storage(self) -> Iterator[None]:
        """Make a failure to write or read the runs a `TempStorageError`."""
        try:
            yield
        except OSError as exc:
            folder = self._tmpdir or tempfile.gettempdir()
            raise TempStorageError(
                f"sorting by event time: cannot use temporary files in {folder}: {exc.strerror or exc}; "
                "free some space there, or point TMPDIR at a folder with room"
            ) from exc

    def write(self, items: Iterable[_Item]) -> None:
        """Write a run of sorted items that all have lines."""
        with self.storage():
            path = self._new_path()
            self._paths.append(path)
            with open(path, "wb") as file:
                file.writelines(cast(bytes, line) for _, line in items)

    def reduce(self, fan_in: int) -> None:
        """Merge runs fan_in at a time until at most fan_in remain, so that many files are open at once."""
        while len(self._paths) > fan_in:
            groups = [self._paths[i : i + fan_in] for i in range(0, len(self._paths), fan_in)]
            self._paths = []
            for group in groups:
                if len(group) == 1:
                    self._paths.append(group[0])
                    continue
                with ExitStack() as stack, self.storage():
                    self.write(heapq.merge(*_open_runs(stack, group)))
                    for path in group:
                        os.remove(path)

    def close(self) -> None:
        """Remove the directory and every run in it."""
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None
        self._paths = []


def _encode(key: Key, event: Event) -> bytes:
    """``key<TAB>[origin, type, userId, name, as read]<TAB>event\n``: the event's text as read when it
    has one (so its requests carry the same bytes in either order), else its compact JSON.

    Compact JSON holds no tab (one in a string is escaped), so the first two tabs split the line;
    the event's text, which may hold tabs, comes last.
    """
    text = event.text
    head = _json.dumps([event.origin, event.type, event.user_id, event.name, text is not None])
    data = text if text is not None else _json.dumps(event.data)
    return b"".join((_json.dumps(key), b"\t", head, b"\t", data, b"\n"))


def _decode(key: Key, line: bytes) -> Event:
    _, head, data = line.split(b"\t", 2)
    origin, kind, user_id, name, as_read = _json.loads(head)
    text = data[:-1]
    return Event(origin, _json.loads(text), kind, key[4], user_id, name, text if as_read else None)


def _open_runs(stack: ExitStack, paths: Iterable[str]) -> list[Iterator[_Item]]:
    return [_read(stack.enter_context(open(path, "rb", buffering=_READ_BUFFER))) for path in paths]


def _read(file: BinaryIO) -> Iterator[_Item]:
    loads = _json.loads
    for line in file:
        yield cast(Key, tuple(loads(line[: line.index(b"\t")]))), line
