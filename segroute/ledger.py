"""The delivery ledger: every request Courier accepted, so a replay resumes and never notifies twice.

An SQLite database in WAL mode. A request is written only after Courier accepted it (2xx, or 409:
seen before), in batched transactions, so the ledger is never ahead of Courier: a ``kill -9`` loses
at most the last batch, whose requests go out again on resume with the same Idempotency-Key, and
Courier dedupes them. Entries are scoped by API base URL, so the US and EU regions, or a test server,
never stand in for one another.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segroute._json import dumps
from segroute.errors import LedgerError, UsageError
from segroute.pipeline import RequestResult

DEFAULT_NAME = "segroute-ledger.sqlite3"
"""The ledger's file name, beside the config file unless --ledger or $SEGROUTE_LEDGER says otherwise."""
SCHEMA_VERSION = 1
FLUSH_ROWS = 500
FLUSH_SECONDS = 0.5
"""A batch is committed when it holds FLUSH_ROWS requests or is this old, whichever comes first."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    api_url TEXT NOT NULL,
    inputs TEXT NOT NULL,
    shard TEXT,
    stopped_by TEXT,
    counts TEXT
);
CREATE TABLE IF NOT EXISTS requests (
    api_url TEXT NOT NULL,
    key TEXT NOT NULL,
    target TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient TEXT,
    status INTEGER NOT NULL,
    courier_run_id TEXT,
    courier_request_id TEXT,
    accepted_at TEXT NOT NULL,
    run INTEGER,
    PRIMARY KEY (api_url, key)
) WITHOUT ROWID;
"""


def default_path(config_path: Path, env: dict[str, str] | os._Environ[str]) -> Path:
    """$SEGROUTE_LEDGER, else segroute-ledger.sqlite3 in the config file's folder."""
    named = env.get("SEGROUTE_LEDGER")
    if named:
        return Path(named)
    return config_path.parent / DEFAULT_NAME


_INSERT_BATCH = (
    "INSERT OR IGNORE INTO requests SELECT "
    + "".join(f"json_extract(value, '$[{n}]'), " for n in range(8))
    + "strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(value, '$[8]'), 'unixepoch'), json_extract(value, '$[9]') "
    + "FROM json_each(?)"
)
"""A batch of request rows, given as one JSON array of arrays: one statement, one parameter, so
SQLite holds no GIL from the first row to the last. accepted_at comes as seconds since the epoch,
written as `_now` writes it."""


def _now() -> str:
    """The time as ISO-8601 UTC to the millisecond, for a run's start and end."""
    now = time.time()
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1000):03d}Z"


def _connect(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise UsageError(f"ledger {path}: cannot open: {exc}") from exc


def _tune(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a commit survives the process being killed; only a power cut can lose
    # the last few, and then the requests are sent again under the same keys.
    connection.execute("PRAGMA synchronous = NORMAL")


class Ledger:
    """One ledger file: lookups from the thread that reads events; rows recorded by the one that
    sends, and written in batches, in order, on a thread of the ledger's own.

    One connection behind a lock serves them all, so closing it can never race a lookup in flight.
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not create and not path.exists():
            raise UsageError(f"ledger {path}: no such file (a send creates it; --ledger names another)")
        if create and not path.parent.is_dir():
            raise UsageError(f"ledger {path}: the folder {path.parent} does not exist")
        self._writer = _connect(path)
        try:
            # Looked at before anything is changed: another program's database is left as it is.
            tables = {row[0] for row in self._writer.execute("SELECT name FROM sqlite_master")}
            if tables and not {"meta", "runs", "requests"} <= tables:
                raise UsageError(f"ledger {path}: an SQLite file, but not a segroute ledger; left alone")
            if not tables and not create:
                raise UsageError(f"ledger {path}: empty, not a segroute ledger")
            _tune(self._writer)
            with _transaction(self._writer):
                if not tables:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._writer.execute(statement)
                    self._writer.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                found = self._writer.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if found is None or found[0] != str(SCHEMA_VERSION):
                    version = "none" if found is None else found[0]
                    raise UsageError(
                        f"ledger {path}: schema version {version}; this segroute reads {SCHEMA_VERSION}"
                    )
        except sqlite3.DatabaseError as exc:
            self._writer.close()
            raise UsageError(f"ledger {path}: not a segroute ledger ({exc})") from exc
        except UsageError:
            self._writer.close()
            raise
        self._lock = threading.Lock()
        self._filter: tuple[str, bytearray, int] | None = None
        self._closed = False
        self._pending: list[tuple[Any, ...]] = []
        self._pending_since = 0.0
        self._writes: ThreadPoolExecutor | None = None
        """The thread batches are written on, in order."""
        self._written: Future[None] | None = None
        """The last batch handed to it."""
        self._broken: LedgerError | None = None
        """Why a batch could not be written; no later batch is written after it."""
        self.run: int | None = None
        self.recorded = 0
        """Requests written by this process."""

    # Lookups: the pipeline's thread.

    def accepted(self, api_url: str, key: str) -> bool:
        """Whether Courier accepted this request in an earlier run. (Repeats within one run are the
        duplicate check's to catch: what this run records is not looked at here.)

        A filter of the keys the ledger held when the run began answers first, in memory: only a
        key it may hold costs a query. Every query lets go of the GIL and waits to get it back, so
        one per event would hold the reader to a couple of thousand events a second while sending.
        """
        if self._filter is None or self._filter[0] != api_url:
            self._filter = (api_url, *self._load_filter(api_url))
        _, bits, mask = self._filter
        if mask == 0:
            return False
        value = hash(key)
        first, second = value & mask, (value >> 32) & mask
        if not (bits[first >> 3] & (1 << (first & 7)) and bits[second >> 3] & (1 << (second & 7))):
            return False
        with self._lock:
            found = self._writer.execute(
                "SELECT 1 FROM requests WHERE api_url = ? AND key = ?", (api_url, key)
            ).fetchone()
        return found is not None

    def _load_filter(self, api_url: str) -> tuple[bytearray, int]:
        """A two-probe Bloom filter of the keys held for an API (16 bits a key: 1.4% false positives),
        and its bit mask; an empty one (mask 0) when there are none."""
        with self._lock:
            keys = [
                row[0]
                for row in self._writer.execute("SELECT key FROM requests WHERE api_url = ?", (api_url,))
            ]
        if not keys:
            return bytearray(), 0
        size = 1 << max(16, (len(keys) * 16 - 1).bit_length())
        bits, mask = bytearray(size // 8), size - 1
        for key in keys:
            value = hash(key)
            for bit in (value & mask, (value >> 32) & mask):
                bits[bit >> 3] |= 1 << (bit & 7)
        return bits, mask

    # Writes: recorded by the sending thread, committed on the ledger's.

    def start_run(self, *, api_url: str, inputs: list[str], shard: str | None) -> None:
        """Record that a run began."""
        with self._lock, self._writing(), _transaction(self._writer):
            cursor = self._writer.execute(
                "INSERT INTO runs (started_at, api_url, inputs, shard) VALUES (?, ?, ?, ?)",
                (_now(), api_url, json.dumps(inputs), shard),
            )
        self.run = cursor.lastrowid

    def record(self, api_url: str, result: RequestResult) -> None:
        """Note an accepted request; committed with its batch."""
        request = result.request
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(
            (
                api_url,
                request.idempotency_key,
                request.target.automation if request.target.kind == "automation" else "(profile)",
                result.event.message_id,
                result.event.user_id,
                result.status,
                result.run_id,
                result.request_id,
                time.time(),  # formatted by SQLite, in C, when the batch is written
                self.run,
            )
        )
        if len(self._pending) >= FLUSH_ROWS:
            self.flush(wait=False)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: cannot write: {exc}; the run stops") from exc

    def flush_if_due(self) -> None:
        """Commit the batch if it has waited FLUSH_SECONDS."""
        if self._pending and time.monotonic() - self._pending_since >= FLUSH_SECONDS:
            self.flush(wait=False)

    def flush(self, *, wait: bool = True) -> None:
        """Commit the batch, on a thread of the ledger's own: SQLite lets go of the GIL while it
        writes, so the writing runs beside the sending (about 7% of a send's work on its thread).
        With ``wait``, until every batch handed over is committed. A batch that could not be written
        raises LedgerError at the next flush."""
        written = self._written
        if written is not None and written.done():
            written.result()
        if self._pending:
            pending, self._pending = self._pending, []
            if self._writes is None:
                self._writes = ThreadPoolExecutor(1, thread_name_prefix="segroute-ledger")
            # Serialized here, in one C call: on the ledger's thread it would hold the GIL as long.
            self._written = self._writes.submit(self._write, dumps(pending).decode(), len(pending))
        if wait and self._written is not None:
            self._written.result()

    def _write(self, rows: str, count: int) -> None:
        if self._broken is not None:
            raise self._broken
        try:
            with self._lock, self._writing(), _transaction(self._writer):
                self._writer.execute(_INSERT_BATCH, (rows,))
        except LedgerError as exc:
            self._broken = exc
            raise
        self.recorded += count

    def end_run(self, *, counts: dict[str, int], stopped_by: str | None) -> None:
        """Commit what is left and record how the run ended."""
        self.flush()
        if self.run is None:
            return
        with self._lock, self._writing(), _transaction(self._writer):
            self._writer.execute(
                "UPDATE runs SET ended_at = ?, stopped_by = ?, counts = ? WHERE id = ?",
                (_now(), stopped_by, json.dumps(counts, sort_keys=True), self.run),
            )

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit what is left and close."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            if self._writes is not None:
                self._writes.shutdown()
            with self._lock:
                self._closed = True
                self._writer.close()

    # Reading it back: `segroute ledger`.

    def summary(self) -> LedgerSummary:
        """What the ledger holds: requests per target and UTC day, and the last run."""
        rows = self._writer.execute(
            "SELECT api_url, target, substr(accepted_at, 1, 10), count(*) FROM requests "
            "GROUP BY 1, 2, 3 ORDER BY 1, 3, 2"
        ).fetchall()
        runs = self._writer.execute("SELECT count(*) FROM runs").fetchone()[0]
        last = self._writer.execute(
            "SELECT id, started_at, ended_at, api_url, inputs, shard, stopped_by, counts FROM runs "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return LedgerSummary(
            path=str(self.path),
            requests=sum(row[3] for row in rows),
            per_target_day=[(str(a), str(t), str(d), int(n)) for a, t, d, n in rows],
            runs=int(runs),
            last_run=_run_dict(last) if last is not None else None,
        )

    def export(self) -> Iterator[dict[str, Any]]:
        """Every accepted request, oldest first."""
        cursor = self._writer.execute(
            "SELECT api_url, key, target, message_id, recipient, status, courier_run_id, "
            "courier_request_id, accepted_at, run FROM requests ORDER BY accepted_at, key"
        )
        names = (
            "api_url",
            "idempotency_key",
            "automation",
            "messageId",
            "recipient",
            "status",
            "runId",
            "requestId",
            "accepted_at",
            "run",
        )
        for row in cursor:
            yield dict(zip(names, row, strict=True))


@dataclass
class LedgerSummary:
    """What `Ledger.summary` found."""

    path: str
    requests: int
    per_target_day: list[tuple[str, str, str, int]]
    """(api_url, automation or "(profile)", UTC day, requests)."""
    runs: int
    last_run: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "ledger": self.path,
            "requests": self.requests,
            "per_target_day": [
                {"api_url": a, "automation": t, "day": d, "requests": n} for a, t, d, n in self.per_target_day
            ],
            "runs": self.runs,
            "last_run": self.last_run,
        }


def _run_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    run, started, ended, api_url, inputs, shard, stopped_by, counts = row
    return {
        "run": run,
        "started_at": started,
        "ended_at": ended,
        "api_url": api_url,
        "inputs": json.loads(inputs),
        "shard": shard,
        "stopped_by": stopped_by if ended else "did not finish (killed, or still running)",
        "counts": json.loads(counts) if counts else None,
    }


class _transaction:  # noqa: N801 - used as a statement, like `with`
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an error (the connection is in autocommit mode)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self._connection.execute("COMMIT")
        elif self._connection.in_transaction:
            self._connection.execute("ROLLBACK")


def merge(output: Path, inputs: Iterable[Path]) -> tuple[int, int]:
    """Combine ledgers (one per shard, say) into ``output``: (requests added, runs added)."""
    sources = list(inputs)
    for source in sources:
        if source.resolve() == output.resolve():
            raise UsageError(f"ledger merge: {source} is the output too")
        Ledger(source, create=False).close()  # checks it is a ledger of this version, before any change
    added_requests = added_runs = 0
    with Ledger(output) as target:
        connection = target._writer
        for source in sources:
            connection.execute("ATTACH DATABASE ? AS source", (str(source),))
            try:
                with _transaction(connection):
                    offset = connection.execute("SELECT coalesce(max(id), 0) FROM main.runs").fetchone()[0]
                    cursor = connection.execute(
                        "INSERT INTO main.runs SELECT id + ?, started_at, ended_at, api_url, inputs, shard, "
                        "stopped_by, counts FROM source.runs",
                        (offset,),
                    )
                    added_runs += cursor.rowcount
                    cursor = connection.execute(
                        "INSERT OR IGNORE INTO main.requests SELECT api_url, key, target, message_id, "
                        "recipient, status, courier_run_id, courier_request_id, accepted_at, run + ? "
                        "FROM source.requests",
                        (offset,),
                    )
                    added_requests += cursor.rowcount  # rows inserted; those already held are ignored
            finally:
                connection.execute("DETACH DATABASE source")
    return added_requests, added_runs
