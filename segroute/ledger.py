"""The delivery ledger: what Courier accepted, and what was sent without an answer, so a replay
resumes and never notifies anyone twice.

Two files. The ledger proper, an SQLite database in WAL mode, keeps every request Courier accepted
(2xx, or 409: seen before), committed in batches on a thread of its own within FLUSH_SECONDS; and the
requests earlier runs sent without seeing them accepted (``pending``). Beside it, while a run sends,
its journal (`journal`): one line before each request's first attempt, and one more when Courier
refused it, never got it, or answered 500.

When the run ends, or when the ledger is next opened after a ``kill -9``, the journal is folded in:
its requests that are neither accepted nor forgotten become ``pending``, and the journal goes. So a
resume knows exactly which requests are uncertain (sent, answer never recorded): it sends them again
under the same key while Courier still holds it, and holds them back after that. A kill loses at most
the acceptances of the last FLUSH_SECONDS, which are then among the uncertain.

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
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segroute._json import dumps
from segroute.errors import LedgerError, LedgerOpenError, LedgerWriteError
from segroute.journal import ISO_FROM_EPOCH, JOURNAL_SUFFIX, Journal, json_columns, transaction
from segroute.models import Event, Prior, Request, RequestResult

__all__ = [
    "DEFAULT_KEY_LIFETIME",
    "DEFAULT_NAME",
    "FLUSH_ROWS",
    "FLUSH_SECONDS",
    "INTAKE_TARGET",
    "NO_TARGET",
    "SCHEMA_VERSION",
    "Ledger",
    "LedgerSummary",
    "default_path",
]

DEFAULT_NAME = "segroute-ledger.sqlite3"
"""The ledger's file name, beside the config file unless --ledger or $SEGROUTE_LEDGER says otherwise."""
SCHEMA_VERSION = 2
FLUSH_ROWS = 500
FLUSH_SECONDS = 0.02
"""Acceptances are committed when FLUSH_ROWS of them wait or the oldest has waited this long,
whichever comes first."""
DEFAULT_KEY_LIFETIME = 24 * 3600.0
"""How long Courier keeps an Idempotency-Key unless asked for longer (x-idempotency-expiration)."""
NO_TARGET = "(profile)"
INTAKE_TARGET = "(segment intake)"
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
    # or answered 500. `key` is the request's first key, as in `requests`. Few rows at a time.
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
    # An acceptance settles the request in the statement that records it: never both at once.
    """
CREATE TRIGGER settled AFTER INSERT ON requests BEGIN
    DELETE FROM pending WHERE api_url = NEW.api_url AND key = NEW.key;
END""",
)


def default_path(config_path: Path, env: dict[str, str] | os._Environ[str]) -> Path:
    """$SEGROUTE_LEDGER, else segroute-ledger.sqlite3 in the config file's folder."""
    named = env.get("SEGROUTE_LEDGER")
    if named:
        return Path(named)
    return config_path.parent / DEFAULT_NAME


_ACCEPT = (
    "INSERT OR IGNORE INTO requests (api_url, key, target, message_id, recipient, status, "
    f"courier_run_id, courier_request_id, accepted_at, run, sent_key) SELECT {json_columns(range(8))}, "
    f"{ISO_FROM_EPOCH.format(n=8)}, {json_columns((9, 10))} FROM json_each(?)"
)


def _now() -> str:
    """The time as ISO-8601 UTC to the millisecond, for a run's start and end."""
    now = time.time()
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1000):03d}Z"


def _connect(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise LedgerOpenError(f"ledger {path}: cannot open: {exc}") from exc


def _tune(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a commit survives the process being killed; only a power cut can lose
    # the last few, and then the requests are sent again under the same keys.
    connection.execute("PRAGMA synchronous = NORMAL")


def _target(request: Request) -> str:
    """How the ledger names a request's target: an automation by its ID or alias, as it always has;
    a journey as ``journey/<ID>``; a profile merge and the Segment intake in parentheses."""
    target = request.target
    if target.kind == "automation":
        return target.template or ""
    if target.kind == "journey":
        return f"journey/{target.template}"
    return NO_TARGET if target.kind == "profile" else INTAKE_TARGET


class Ledger:
    """One ledger file and its journal: lookups from the thread that reads events; writes from the
    one that sends, to the journal at once and to the ledger in batches of acceptances, committed on
    a thread of the ledger's own.

    One connection behind a lock serves them all, so closing it can never race a lookup in flight.
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not create and not path.exists():
            raise LedgerOpenError(f"ledger {path}: no such file (a send creates it)")
        if create and not path.parent.is_dir():
            what = "is a file, not a folder" if path.parent.exists() else "does not exist"
            raise LedgerOpenError(f"ledger {path}: {path.parent} {what}")
        self._writer = _connect(path)
        try:
            _open_schema(self._writer, path, create=create)
        except sqlite3.DatabaseError as exc:
            self._writer.close()
            raise LedgerOpenError(f"ledger {path}: not a segroute ledger ({exc})") from exc
        except LedgerOpenError:
            self._writer.close()
            raise
        self._lock = threading.Lock()
        """Guards the connection."""
        self._filter: tuple[str, bytearray, int] | None = None
        self._pending: dict[str, Prior] = {}
        """The pending rows of the API looked up, by first key, as the run began."""
        self._closed = False
        self._accepted: list[tuple[Any, ...]] = []
        """Acceptances not committed yet."""
        self._accepted_since = 0.0
        self._broken: LedgerError | None = None
        """Why a batch could not be written; nothing is written after it."""
        self._thread: ThreadPoolExecutor | None = None
        self._written: Future[None] | None = None
        """The last batch of acceptances handed to the thread."""
        self._journal = Journal(Path(f"{path}{JOURNAL_SUFFIX}"))
        try:
            self._journal.fold_into(self._writer)
        except sqlite3.Error as exc:
            self._writer.close()
            raise LedgerOpenError(f"ledger {path}: cannot fold in {self._journal.path}: {exc}") from exc
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
            self._pending = self._load_pending(api_url)
        pending = self._pending.get(key)
        if pending is not None:
            return pending
        _, bits, mask = self._filter
        if mask == 0:
            return None
        value = hash(key)
        first, second = value & mask, (value >> 32) & mask
        if not (bits[first >> 3] & (1 << (first & 7)) and bits[second >> 3] & (1 << (second & 7))):
            return None
        with self._lock:
            found = self._writer.execute(
                "SELECT 1 FROM requests WHERE api_url = ? AND key = ?", (api_url, key)
            ).fetchone()
        return None if found is None else Prior(accepted=True)

    def _load_filter(self, api_url: str) -> tuple[bytearray, int]:
        """A two-probe Bloom filter of the keys accepted for an API (16 bits a key: 1.4% false
        positives), and its bit mask; an empty one (mask 0) when there are none."""
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

    def _load_pending(self, api_url: str) -> dict[str, Prior]:
        """The requests earlier runs sent to an API and did not see accepted, by first key: few, as a
        rule (those in flight at a kill, and those Courier answered 500)."""
        with self._lock:
            rows = self._writer.execute(
                "SELECT key, generation, expires_at, stored_failure FROM pending WHERE api_url = ?",
                (api_url,),
            ).fetchall()
        return {
            key: Prior(generation=g, expires_at=expires, stored_failure=bool(failed))
            for key, g, expires, failed in rows
        }

    # Writes: from the sending thread, committed on the ledger's.

    def start_run(self, *, api_url: str, inputs: list[str], shard: str | None) -> None:
        """Record that a run began, and open its journal (refused while another run has it open)."""
        self._journal.open()
        with self._lock, self._writing_to(), transaction(self._writer):
            cursor = self._writer.execute(
                "INSERT INTO runs (started_at, api_url, inputs, shard) VALUES (?, ?, ?, ?)",
                (_now(), api_url, json.dumps(inputs), shard),
            )
        self.run = cursor.lastrowid

    def intend(self, api_url: str, request: Request, event: Event, *, key_lifetime: float) -> None:
        """Note, before it goes out, that a request is sent under its key, which Courier keeps
        ``key_lifetime`` seconds: one line in the journal, in the operating system's hands when
        this returns, so a kill of this process cannot lose it."""
        now = time.time()
        entry = [
            "intend",
            api_url,
            request.ledger_key,
            request.idempotency_key,
            request.generation,
            _target(request),
            event.message_id,
            event.user_id,
            now,
            now + key_lifetime,
            0,  # stored_failure
            self.run,
        ]
        self._journal.write(entry, self.path)

    def record(self, api_url: str, result: RequestResult) -> None:
        """Note how a request ended: an acceptance is kept (committed with its batch); a request
        Courier never got or refused is forgotten, one it answered 500 is marked, one never sent
        leaves what earlier runs noted (a journal line each); one whose answer is unknown stays as it
        was intended."""
        request = result.request
        if result.outcome == "sent":
            if not self._accepted:
                self._accepted_since = time.monotonic()
            self._accepted.append(
                (
                    api_url,
                    request.ledger_key,
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
            )
            if len(self._accepted) >= FLUSH_ROWS:
                self._write_accepted()
            kind = "accept"
        elif result.attempts == 0:
            kind = "unsent"  # stopped before its first attempt: Courier holds what it held before
        elif result.key_state == "stored_failure":
            kind = "fail"
        elif result.key_state == "unused":
            kind = "forget"
        else:
            return
        if self._journal.is_open:
            self._journal.write([kind, api_url, request.ledger_key], self.path)

    def flush_if_due(self) -> None:
        """Commit the acceptances noted if the oldest has waited FLUSH_SECONDS."""
        if self._accepted and time.monotonic() - self._accepted_since >= FLUSH_SECONDS:
            self._write_accepted()

    def _write_accepted(self) -> None:
        """Hand the acceptances to the ledger's thread: nothing waits for them, and SQLite lets go of
        the GIL while it writes, so the writing runs beside the sending."""
        rows, self._accepted = self._accepted, []
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="segroute-ledger")
        # Serialized here, in one C call: on the ledger's thread it would hold the GIL as long.
        text = dumps(rows).decode()
        written, self._written = self._written, self._thread.submit(self._write, text, len(rows))
        if written is not None and written.done():
            written.result()  # raises what a batch before raised

    def _write(self, rows: str, count: int) -> None:
        """Write a batch of acceptances (a JSON array of rows), whole or not at all; after a failure,
        nothing more."""
        if self._broken is not None:
            raise self._broken
        try:
            with self._lock, self._writing_to(), transaction(self._writer):
                self._writer.execute(_ACCEPT, (rows,))
        except LedgerError as exc:
            self._broken = exc
            raise
        self.recorded += count

    @contextlib.contextmanager
    def _writing_to(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise LedgerWriteError(f"ledger {self.path}: cannot write: {exc}; the run stops") from exc

    def flush(self) -> None:
        """Commit every acceptance noted, and wait for it. A batch that could not be written raises
        LedgerError here, or at the next write after it."""
        if self._accepted:
            self._write_accepted()
        if self._written is not None:
            self._written.result()
        if self._broken is not None:
            raise self._broken

    def end_run(self, *, counts: dict[str, int], stopped_by: str | None) -> None:
        """Commit what is left and record how the run ended."""
        self.flush()
        if self.run is None:
            return
        with self._lock, self._writing_to(), transaction(self._writer):
            self._writer.execute(
                "UPDATE runs SET ended_at = ?, stopped_by = ?, counts = ? WHERE id = ?",
                (_now(), stopped_by, json.dumps(counts, sort_keys=True), self.run),
            )

    @property
    def writer(self) -> sqlite3.Connection:
        """The connection that writes, for `merging` to merge other ledgers in through."""
        return self._writer

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit what is left, fold the journal in, and close."""
        if self._closed:
            return
        try:
            self.flush()
            with self._lock, self._writing_to():
                self._journal.finish_into(self._writer)
        finally:
            self._journal.close()
            if self._thread is not None:
                self._thread.shutdown()
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
        raise LedgerOpenError(f"ledger {path}: an SQLite file, but not a segroute ledger; left alone")
    if not tables and not create:
        raise LedgerOpenError(f"ledger {path}: empty, not a segroute ledger")
    _tune(connection)
    with transaction(connection):
        if not tables:
            for statement in (*_SCHEMA, *_VERSION_2):
                connection.execute(statement)
            connection.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        found = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        version = "none" if found is None else found[0]
        if version == "1":
            _upgrade_from_1(connection)
        elif version != str(SCHEMA_VERSION):
            raise LedgerOpenError(
                f"ledger {path}: schema version {version}; this segroute reads {SCHEMA_VERSION}"
            )


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
