"""A send's journal: the write-ahead log of what it sent, beside the ledger (``<ledger>.intents``).

Before a request's first attempt, one line says it is about to go out and under which key; a line
more when Courier refused it or never got it (forgotten), or answered 500 (a failure Courier stores
under the key: the next run must use another key). Lines are appended with one ``write`` and no
fsync, as cheap as SQLite's own WAL. When the run ends, or when the ledger is next opened after a
``kill -9``, the journal is folded into the ledger's ``pending`` table and removed.

The SQL helpers the ledger shares (`json_columns`, `ISO_FROM_EPOCH`, `transaction`) live here, the
lower of the two modules.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segroute._json import dumps
from segroute.errors import LedgerOpenError, LedgerWriteError

__all__ = ["ISO_FROM_EPOCH", "JOURNAL_SUFFIX", "Journal", "json_columns", "transaction"]

JOURNAL_SUFFIX = ".intents"


def json_columns(indexes: Iterable[int]) -> str:
    """Columns of the rows given as one JSON array of arrays (``FROM json_each(?)``): one statement,
    one parameter, so SQLite holds no GIL from the first row to the last."""
    return ", ".join(f"json_extract(value, '$[{n}]')" for n in indexes)


ISO_FROM_EPOCH = "strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(value, '$[{n}]'), 'unixepoch')"
"""A time given as seconds since the epoch, written as `_now` writes it."""
_PENDING_COLUMNS = (
    "api_url, key, sent_key, generation, target, message_id, recipient, sent_at, expires_at, "
    "stored_failure, run"
).split(", ")
_SAME_KEY = "pending.sent_key = excluded.sent_key"
_UNSETTLED = (
    # Rows of the pending table, sent_at as seconds since the epoch; rows Courier accepted since are
    # left out. A request sent again under the key it went out under before keeps that send's time:
    # Courier's clock for the key started then.
    "INSERT INTO pending SELECT * FROM (SELECT "
    + ", ".join(
        (ISO_FROM_EPOCH.format(n=n) if name == "sent_at" else f"json_extract(value, '$[{n}]')")
        + f" AS {name}"
        for n, name in enumerate(_PENDING_COLUMNS)
    )
    + " FROM json_each(?)) AS new WHERE NOT EXISTS "
    "(SELECT 1 FROM requests WHERE requests.api_url = new.api_url AND requests.key = new.key) "
    "ON CONFLICT (api_url, key) DO UPDATE SET "
    + ", ".join(
        f"{name} = excluded.{name}" for name in _PENDING_COLUMNS[2:] if name not in ("sent_at", "expires_at")
    )
    + f", sent_at = CASE WHEN {_SAME_KEY} THEN pending.sent_at ELSE excluded.sent_at END"
    + f", expires_at = CASE WHEN {_SAME_KEY} THEN min(pending.expires_at, excluded.expires_at)"
    " ELSE excluded.expires_at END"
)
_SETTLED = f"DELETE FROM pending WHERE (api_url, key) IN (SELECT {json_columns(range(2))} FROM json_each(?))"


class transaction:  # noqa: N801 - used as a statement, like `with`
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


class _Unsettled:
    """What a journal's lines add up to: the requests sent and neither accepted nor forgotten (the
    rows `pending` is to hold), and the requests forgotten (whose earlier rows are to go)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[Any]] = {}
        self.settled: set[tuple[str, str]] = set()

    def add(self, entry: list[Any]) -> None:
        """One journal line: ``["intend", api_url, key, ...the rest of the row]``, or how the request
        ended, with the api_url and key: ``fail`` (a 500), ``forget`` (never reached Courier, or
        refused), ``unsent`` (this run's intent never went out: what earlier runs left stands), or
        ``accept`` (never written: the ledger keeps acceptances)."""
        kind, api_url, key = entry[:3]
        if kind == "intend":
            self.rows[api_url, key] = entry[1:]
            self.settled.discard((api_url, key))
        elif kind == "fail" and (api_url, key) in self.rows:
            self.rows[api_url, key][9] = 1  # stored_failure
        elif kind in ("forget", "unsent", "accept"):
            self.rows.pop((api_url, key), None)
            if kind == "forget":
                self.settled.add((api_url, key))

    def write_into(self, connection: sqlite3.Connection) -> None:
        """Make the ledger's pending rows say what the lines said, in one transaction."""
        with transaction(connection):
            if self.settled:
                connection.execute(_SETTLED, (dumps(list(self.settled)).decode(),))
            if self.rows:
                connection.execute(_UNSETTLED, (dumps(list(self.rows.values())).decode(),))


class Journal:
    """A run's write-ahead log of what it sent: JSON lines appended beside the ledger, locked while
    the run writes them, written into the ledger when the run ends (or, after a kill, by the next to
    open the ledger), then removed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lines = _Unsettled()
        """What this run's lines add up to, so that its end need not read them back."""

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Open for a run to append to; LedgerOpenError while another run has it."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._open_error(exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LedgerOpenError(
                f"ledger {str(self.path).removesuffix(JOURNAL_SUFFIX)}: another send is using it "
                "(its journal is locked); wait for it, or give this send a ledger of its own"
            ) from None
        self._fd = fd

    def write(self, entry: list[Any], ledger: Path) -> None:
        """Append one line. An end for a request this run never noted (one skipped before it went
        out) changes nothing and is not written; an ``accept`` is only noted: the ledger keeps it."""
        assert self._fd is not None, "a run's journal is opened by start_run"
        if entry[0] != "intend" and (entry[1], entry[2]) not in self._lines.rows:
            return
        self._lines.add(entry)
        if entry[0] == "accept":
            return
        try:
            os.write(self._fd, dumps(entry) + b"\n")
        except OSError as exc:
            raise LedgerWriteError(
                f"ledger {ledger}: cannot write {self.path}: {exc.strerror or exc}; the run stops"
            ) from exc

    def finish_into(self, connection: sqlite3.Connection) -> None:
        """The run is over: write what its lines add up to into the ledger, and remove them."""
        if self._fd is None:
            return
        self._lines.write_into(connection)
        self.close()
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise LedgerWriteError(
                f"ledger: cannot remove its journal {self.path}: {exc.strerror or exc}"
            ) from exc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def fold_into(self, connection: sqlite3.Connection) -> None:
        """Bring what a journal left by a killed run holds into the ledger, and remove it. Left
        alone while a run holds it."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._open_error(exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a run is writing it, and writes it in itself when it ends
            lines = _Unsettled()
            with open(fd, "rb", closefd=False) as journal:
                for line in journal:
                    try:
                        lines.add(json.loads(line))
                    except (ValueError, TypeError, IndexError):
                        continue  # a line cut short by the kill: its request never went out
            lines.write_into(connection)
            os.unlink(self.path)
        except OSError as exc:
            raise self._open_error(exc) from exc
        finally:
            os.close(fd)

    def _open_error(self, exc: OSError) -> LedgerOpenError:
        ledger = str(self.path).removesuffix(JOURNAL_SUFFIX)
        return LedgerOpenError(f"ledger {ledger}: cannot use its journal {self.path}: {exc.strerror or exc}")
