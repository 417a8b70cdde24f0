"""The duplicate check: every messageId seen in a run, exactly, in bounded memory."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from segroute._json import dumps
from segroute.errors import TempStorageError

__all__ = ["DEDUPE_MEMORY", "SeenIds"]

DEDUPE_MEMORY = 20_000
"""messageIds held in memory for duplicate checks; older ones move to a temporary SQLite file."""
BLOOM_BYTES = 8 * 1024 * 1024
"""The filter in front of the spilled ids, a power of two: 64M bits with one probe each, 1.5% false
positives at 1M ids and 14% at 10M (each costs one SQLite lookup, never a wrong answer)."""


class SeenIds:
    """Every messageId seen in a run, exactly, in bounded memory.

    The most recent ids are a set; when it fills, they move to a private temporary SQLite database
    (deleted when closed). From that first move on, a Bloom filter of BLOOM_BYTES holds every id
    seen. An id missing from the set is looked up in SQLite only when the filter says it may be
    there: for a new id, rarely.
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
            # Bloom filter, one probe (str's hash, fixed for the process): a clear bit means never
            # seen; a set bit may be a false positive, so SQLite confirms it. The bit is marked now,
            # so a spill has nothing left to mark.
            bit = hash(message_id) & self._mask
            byte = self._bloom[bit >> 3]
            flag = 1 << (bit & 7)
            if byte & flag:
                moving = self._moving
                if moving is not None and message_id in moving:
                    return False
                try:
                    found = self._reader.execute("SELECT 1 FROM seen WHERE id = ?", (message_id,)).fetchone()
                except sqlite3.Error as exc:
                    raise _storage_error(exc) from exc
                if found is not None:
                    return False
            else:
                self._bloom[bit >> 3] = byte | flag
        self._recent.add(message_id)
        if len(self._recent) >= self._memory:
            try:
                self._spill()
            except (sqlite3.Error, OSError) as exc:
                raise _storage_error(exc) from exc
        return True

    def _spill(self) -> None:
        # The move is one SQL statement (the ids as one JSON array) on a thread of its own, which
        # SQLite runs without the GIL. Until it is committed, the moving ids stay a set that lookups
        # consult; the database is in WAL mode and read through a second connection, which never
        # waits for the insert.
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


def _storage_error(exc: Exception) -> TempStorageError:
    return TempStorageError(
        f"the duplicate check cannot write its temporary file in {tempfile.gettempdir()}: {exc}; "
        "free some space there, or point TMPDIR at a folder with room"
    )


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
