"""The delivery ledger: what Courier accepted, and what was sent without an answer, so a replay
resumes and never notifies anyone twice.

An SQLite database in WAL mode, written on a thread of its own in batched transactions:

- Before a request's first attempt, its *intent* is committed (`intend`): the key it goes out under,
  and when Courier may forget that key. Requests wait for it; requests starting together share one
  commit.
- When the request ends, its row is settled (`record`): an acceptance (2xx, or 409: seen before) moves
  to ``requests``; a request Courier never got, or refused, is forgotten; one Courier answered 500
  keeps its row, marked, because Courier stores that answer under the key and the next run must use
  another key; one whose answer is unknown (a timeout, a dropped connection) keeps its row as it is.

So after a ``kill -9`` the ledger holds every acceptance committed up to FLUSH_SECONDS before, and
names exactly the requests that were in flight or whose acceptance was not committed: a resume sends
them again under the same key while Courier still holds it, and holds them back after that.
Entries are scoped by API base URL (in `config.check_api_url`'s spelling), so the US and EU regions,
or a test server, never stand in for one another.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segroute._json import dumps
from segroute.errors import LedgerError, UsageError
from segroute.events import Event
from segroute.pipeline import Prior, RequestResult
from segroute.transform import Request

DEFAULT_NAME = "segroute-ledger.sqlite3"
"""The ledger's file name, beside the config file unless --ledger or $SEGROUTE_LEDGER says otherwise."""
SCHEMA_VERSION = 2
FLUSH_ROWS = 500
FLUSH_SECONDS = 0.02
"""Settled requests are committed when FLUSH_ROWS of them wait or the oldest has waited this long,
whichever comes first, and at once with an intent that a request waits for."""
DEFAULT_KEY_LIFETIME = 24 * 3600.0
"""How long Courier keeps an Idempotency-Key unless asked for longer (x-idempotency-expiration)."""
NO_TARGET = "(profile)"
"""How the ``target`` column names a profile merge."""

_REQUESTS = """
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
) WITHOUT ROWID
"""
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    api_url TEXT NOT NULL,
    inputs TEXT NOT NULL,
    shard TEXT,
    stopped_by TEXT,
    counts TEXT
)""",
    _REQUESTS,
)
_VERSION_2 = (
    # The key a request went out under, when it is not its first (`transform.rekeyed`).
    "ALTER TABLE requests ADD COLUMN sent_key TEXT",
    # Requests sent whose end is not known to be an acceptance or nothing: in flight, unanswered,
    # or answered 500. `key` is the request's first key, as in `requests`.
    """
CREATE TABLE pending (
    api_url TEXT NOT NULL,
    key TEXT NOT NULL,
    sent_key TEXT NOT NULL,
    generation INTEGER NOT NULL,
    target TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient TEXT,
    sent_at TEXT NOT NULL,
    expires_at REAL NOT NULL,
    stored_failure INTEGER NOT NULL DEFAULT 0,
    run INTEGER,
    PRIMARY KEY (api_url, key)
) WITHOUT ROWID""",
)


def default_path(config_path: Path, env: dict[str, str] | os._Environ[str]) -> Path:
    """$SEGROUTE_LEDGER, else segroute-ledger.sqlite3 in the config file's folder."""
    named = env.get("SEGROUTE_LEDGER")
    if named:
        return Path(named)
    return config_path.parent / DEFAULT_NAME


def _from_json(columns: int) -> str:
    """The columns of rows given as one JSON array of arrays: one statement, one parameter, so
    SQLite holds no GIL from the first row to the last."""
    return ", ".join(f"json_extract(value, '$[{n}]')" for n in range(columns)) + " FROM json_each(?)"


_ISO = "strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(value, '$[{n}]'), 'unixepoch')"
"""A time given as seconds since the epoch, written as `_now` writes it."""
_KEYS_IN = "(api_url, key) IN (SELECT " + _from_json(2) + ")"
_WRITES = {
    "intend": "INSERT OR REPLACE INTO pending SELECT "
    + _from_json(7).replace(" FROM json_each(?)", ", ")
    + _ISO.format(n=7)
    + ", json_extract(value, '$[8]'), 0, json_extract(value, '$[9]') FROM json_each(?)",
    "fail": "UPDATE pending SET stored_failure = 1 WHERE " + _KEYS_IN,
    "accept": "INSERT OR IGNORE INTO requests (api_url, key, target, message_id, recipient, status, "
    "courier_run_id, courier_request_id, accepted_at, run, sent_key) SELECT "
    + _from_json(8).replace(" FROM json_each(?)", ", ")
    + _ISO.format(n=8)
    + ", json_extract(value, '$[9]'), json_extract(value, '$[10]') FROM json_each(?)",
    "forget": "DELETE FROM pending WHERE " + _KEYS_IN,
}
"""One statement per kind of write; a batch runs them in this order, which is the order a request's
own writes come in (its intent first, its end last)."""


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


def _target(request: Request) -> str:
    return request.target.automation or "" if request.target.kind == "automation" else NO_TARGET


@dataclass
class _Batch:
    """Writes committed together, and the future of their commit."""

    writes: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {kind: [] for kind in _WRITES})
    size: int = 0
    """Writes."""
    ended: int = 0
    """Requests whose end it records."""
    since: float = 0.0
    urgent: bool = False
    """A request waits for it: commit it as soon as the thread is free."""
    done: Future[None] = field(default_factory=Future)

    def add(self, kind: str, row: tuple[Any, ...]) -> None:
        if not self.size:
            self.since = time.monotonic()
        self.writes[kind].append(row)
        self.size += 1


class Ledger:
    """One ledger file: lookups from the thread that reads events; writes from the one that sends,
    committed in batches, in order, on a thread of the ledger's own.

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
            _open_schema(self._writer, path, create=create)
        except sqlite3.DatabaseError as exc:
            self._writer.close()
            raise UsageError(f"ledger {path}: not a segroute ledger ({exc})") from exc
        except UsageError:
            self._writer.close()
            raise
        self._lock = threading.Lock()
        """Guards the connection."""
        self._filter: tuple[str, bytearray, int] | None = None
        self._closed = False
        self._batches = threading.Condition()
        """Guards the batches below, and wakes the writing thread."""
        self._open = _Batch()
        self._sealed: list[_Batch] = []
        self._tail: Future[None] | None = None
        """The commit of the last batch sealed: once it is done, so is every one before it."""
        self._writing = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._broken: LedgerError | None = None
        """Why a batch could not be written; no later batch is written after it."""
        self.run: int | None = None
        self.recorded = 0
        """Acceptances written by this process."""

    # Lookups: the pipeline's thread.

    def accepted(self, api_url: str, key: str) -> bool:
        """Whether Courier accepted this request in an earlier run."""
        found = self.prior(api_url, key)
        return found is not None and found.accepted

    def prior(self, api_url: str, key: str) -> Prior | None:
        """What an earlier run did with this request (by its first key), if anything: accepted, or sent
        and not known to be accepted. (Repeats within one run are the duplicate check's to catch: what
        this run writes is not looked at here.)

        A filter of the keys the ledger held when the run began answers first, in memory: only a
        key it may hold costs a query. Every query lets go of the GIL and waits to get it back, so
        one per event would hold the reader to a couple of thousand events a second while sending.
        """
        if self._filter is None or self._filter[0] != api_url:
            self._filter = (api_url, *self._load_filter(api_url))
        _, bits, mask = self._filter
        if mask == 0:
            return None
        value = hash(key)
        first, second = value & mask, (value >> 32) & mask
        if not (bits[first >> 3] & (1 << (first & 7)) and bits[second >> 3] & (1 << (second & 7))):
            return None
        where = "WHERE api_url = ? AND key = ?"
        with self._lock:
            accepted = self._writer.execute(f"SELECT 1 FROM requests {where}", (api_url, key)).fetchone()
            pending = None
            if accepted is None:
                pending = self._writer.execute(
                    f"SELECT generation, expires_at, stored_failure FROM pending {where}", (api_url, key)
                ).fetchone()
        if accepted is not None:
            return Prior(accepted=True)
        if pending is not None:
            return Prior(generation=pending[0], expires_at=pending[1], stored_failure=bool(pending[2]))
        return None

    def _load_filter(self, api_url: str) -> tuple[bytearray, int]:
        """A two-probe Bloom filter of the keys held for an API (16 bits a key: 1.4% false positives),
        and its bit mask; an empty one (mask 0) when there are none."""
        with self._lock:
            keys = [
                row[0]
                for row in self._writer.execute(
                    "SELECT key FROM requests WHERE api_url = ?1 UNION ALL "
                    "SELECT key FROM pending WHERE api_url = ?1",
                    (api_url,),
                )
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

    # Writes: from the sending thread, committed on the ledger's.

    def start_run(self, *, api_url: str, inputs: list[str], shard: str | None) -> None:
        """Record that a run began."""
        with self._lock, self._writing_to(), _transaction(self._writer):
            cursor = self._writer.execute(
                "INSERT INTO runs (started_at, api_url, inputs, shard) VALUES (?, ?, ?, ?)",
                (_now(), api_url, json.dumps(inputs), shard),
            )
        self.run = cursor.lastrowid

    def intend(self, api_url: str, request: Request, event: Event, *, key_lifetime: float) -> Future[None]:
        """Note that a request is about to go out under its key, which Courier keeps ``key_lifetime``
        seconds; the future is done once that is committed (or failed, with a `LedgerError`)."""
        now = time.time()
        row = (
            api_url,
            request.ledger_key,
            request.idempotency_key,
            request.generation,
            _target(request),
            event.message_id,
            event.user_id,
            now,  # formatted by SQLite, in C, when the batch is written
            now + key_lifetime,
            self.run,
        )
        with self._batches:
            self._raise_if_broken()
            batch = self._open
            batch.add("intend", row)
            batch.urgent = True
            if not self._writing:
                self._seal()
            self._start_thread()
            self._batches.notify()
            return batch.done

    def record(self, api_url: str, result: RequestResult) -> None:
        """Note how a request ended: an acceptance is kept, a 500 marks its key as spent, a request
        Courier never got or refused is forgotten, one whose answer is unknown stays as it was
        intended. Committed with its batch."""
        request = result.request
        key = (api_url, request.ledger_key)
        writes: list[tuple[str, tuple[Any, ...]]]
        if result.outcome == "sent":
            accepted = (
                *key,
                _target(request),
                result.event.message_id,
                result.event.user_id,
                result.status,
                result.run_id,
                result.request_id,
                time.time(),  # formatted by SQLite, in C, when the batch is written
                self.run,
                request.idempotency_key if request.first_key else None,
            )
            writes = [("accept", accepted), ("forget", key)]
        elif result.key_state == "stored_failure":
            writes = [("fail", key)]
        elif result.key_state == "unused":
            writes = [("forget", key)]
        else:
            return
        with self._batches:
            self._raise_if_broken()
            batch = self._open
            if not batch.size:
                self._start_thread()
                self._batches.notify()  # the thread times the new batch
            for kind, row in writes:
                batch.add(kind, row)
            batch.ended += 1
            if batch.ended >= FLUSH_ROWS:
                self._seal()
                self._batches.notify()

    def _seal(self) -> None:
        """Hand the open batch to the thread (the caller holds ``_batches``)."""
        if self._open.size:
            self._sealed.append(self._open)
            self._tail = self._open.done
            self._open = _Batch()

    def _raise_if_broken(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_batches, name="segroute-ledger", daemon=True)
            self._thread.start()

    def _write_batches(self) -> None:
        """The ledger's thread: commit sealed batches in order; seal the open one when it is urgent or
        old enough; stop after the last one once the ledger closes."""
        while True:
            with self._batches:
                while not self._sealed:
                    batch = self._open
                    if batch.size and (batch.urgent or time.monotonic() - batch.since >= FLUSH_SECONDS):
                        self._seal()
                        break
                    if self._stopping and not batch.size:
                        return
                    self._batches.wait(FLUSH_SECONDS if batch.size else None)
                batches, self._sealed = self._sealed, []
                self._writing = True
            error = self._commit(batches)
            with self._batches:
                self._writing = False
                if error is not None and self._broken is None:
                    self._broken = error
            for batch in batches:
                if error is None:
                    batch.done.set_result(None)
                else:
                    batch.done.set_exception(error)

    def _commit(self, batches: list[_Batch]) -> LedgerError | None:
        """Write the batches in one transaction; the error that stopped them, if one did."""
        if self._broken is not None:
            return self._broken
        try:
            with self._lock, self._writing_to(), _transaction(self._writer):
                for kind, statement in _WRITES.items():
                    rows = [row for batch in batches for row in batch.writes[kind]]
                    if rows:
                        # Serialized here, in one C call: the statement reads them in C too.
                        self._writer.execute(statement, (dumps(rows).decode(),))
        except LedgerError as exc:
            return exc
        self.recorded += sum(len(batch.writes["accept"]) for batch in batches)
        return None

    @contextlib.contextmanager
    def _writing_to(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: cannot write: {exc}; the run stops") from exc

    def flush(self, *, wait: bool = True) -> None:
        """Commit what was noted. With ``wait``, until it is committed. A batch that could not be
        written raises LedgerError here, or at the next write after it."""
        with self._batches:
            self._raise_if_broken()
            self._seal()
            tail = self._tail
            if self._sealed:
                self._start_thread()
                self._batches.notify()
        if wait and tail is not None:
            tail.result()

    def end_run(self, *, counts: dict[str, int], stopped_by: str | None) -> None:
        """Commit what is left and record how the run ended."""
        self.flush()
        if self.run is None:
            return
        with self._lock, self._writing_to(), _transaction(self._writer):
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
            with self._batches:
                self._stopping = True
                self._batches.notify()
            if self._thread is not None:
                self._thread.join()
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
            "SELECT api_url, coalesce(sent_key, key), target, message_id, recipient, status, "
            "courier_run_id, courier_request_id, accepted_at, run FROM requests ORDER BY accepted_at, key"
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

    def unsettled(self) -> Iterator[dict[str, Any]]:
        """Every request sent and not known to be accepted, oldest first: those whose answer was never
        recorded (``uncertain``), and those Courier answered 500 (``stored_failure``)."""
        cursor = self._writer.execute(
            "SELECT api_url, sent_key, key, generation, target, message_id, recipient, sent_at, "
            "strftime('%Y-%m-%dT%H:%M:%SZ', expires_at, 'unixepoch'), stored_failure, run FROM pending "
            "ORDER BY sent_at, key"
        )
        for (
            api_url,
            sent_key,
            key,
            generation,
            target,
            message_id,
            recipient,
            sent,
            expires,
            failed,
            run,
        ) in cursor:
            yield {
                "api_url": api_url,
                "idempotency_key": sent_key,
                "first_key": key,
                "generation": generation,
                "automation": target,
                "messageId": message_id,
                "recipient": recipient,
                "sent_at": sent,
                "key_expires_at": expires,
                "state": "stored_failure" if failed else "uncertain",
                "run": run,
            }


def _open_schema(connection: sqlite3.Connection, path: Path, *, create: bool) -> None:
    """Check the file is a ledger of this version, creating it or bringing an older one up to date."""
    # Looked at before anything is changed: another program's database is left as it is.
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    if tables and not {"meta", "runs", "requests"} <= tables:
        raise UsageError(f"ledger {path}: an SQLite file, but not a segroute ledger; left alone")
    if not tables and not create:
        raise UsageError(f"ledger {path}: empty, not a segroute ledger")
    _tune(connection)
    with _transaction(connection):
        if not tables:
            for statement in (*_SCHEMA, *_VERSION_2):
                connection.execute(statement)
            connection.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        found = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        version = "none" if found is None else found[0]
        if version == "1":
            _upgrade_from_1(connection)
        elif version != str(SCHEMA_VERSION):
            raise UsageError(f"ledger {path}: schema version {version}; this segroute reads {SCHEMA_VERSION}")


def _upgrade_from_1(connection: sqlite3.Connection) -> None:
    """Version 1 to 2: the tables of intents and re-sent keys, and API URLs in one spelling (version
    1 kept them as typed, less a trailing slash)."""
    from segroute.config import check_api_url  # pydantic, which config loads, only for this

    for statement in _VERSION_2:
        connection.execute(statement)
    for table in ("requests", "runs"):
        for (typed,) in connection.execute(f"SELECT DISTINCT api_url FROM {table}").fetchall():
            try:
                canonical = check_api_url(typed)
            except ValueError:
                continue
            if canonical != typed:
                # Rows held under both spellings keep the canonical one's.
                connection.execute(
                    f"UPDATE OR IGNORE {table} SET api_url = ? WHERE api_url = ?", (canonical, typed)
                )
                connection.execute(f"DELETE FROM {table} WHERE api_url = ?", (typed,))
    connection.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))


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
                        "recipient, status, courier_run_id, courier_request_id, accepted_at, run + ?, "
                        "sent_key FROM source.requests",
                        (offset,),
                    )
                    added_requests += cursor.rowcount  # rows inserted; those already held are ignored
                    connection.execute(
                        "INSERT OR IGNORE INTO main.pending SELECT api_url, key, sent_key, generation, "
                        "target, message_id, recipient, sent_at, expires_at, stored_failure, run + ? "
                        "FROM source.pending",
                        (offset,),
                    )
                    # A shard's unanswered request another shard saw accepted is settled.
                    connection.execute(
                        "DELETE FROM main.pending WHERE (api_url, key) IN "
                        "(SELECT api_url, key FROM main.requests)"
                    )
            finally:
                connection.execute("DETACH DATABASE source")
    return added_requests, added_runs
