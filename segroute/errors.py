"""The exception tree and the exit codes.

Library code raises these and never exits; ``cli.py`` has the one boundary that prints
``error: <message>`` and exits with the code each class carries. Messages name files and keys, never
command-line flags: the command line is the CLI's business.

    SegrouteError            1  base; anything that stops a command on purpose
    ├── UsageError           2  the command line asks for something that cannot be done
    ├── ConfigError          2  segroute.toml is missing, unreadable or invalid (names the key)
    ├── InputError           2  a named input does not exist
    ├── AuthError            2  no API key, or one Courier refuses
    │   └── delivery.KeyRefusedError   Courier answered 401/403 mid-run
    ├── LedgerError          1  the ledger
    │   ├── LedgerOpenError  2  cannot be opened for this run (missing, not a ledger, in use)
    │   └── LedgerWriteError 1  cannot be written during the run (a full disk)
    ├── OutputError          1  stdout, the failure file or the report cannot be written
    └── TempStorageError     1  temporary files (the duplicate check, a sort) cannot be written
"""

from __future__ import annotations

import enum

__all__ = [
    "AuthError",
    "ConfigError",
    "ExitCode",
    "InputError",
    "LedgerError",
    "LedgerOpenError",
    "LedgerWriteError",
    "OutputError",
    "SegrouteError",
    "TempStorageError",
    "UsageError",
]


class ExitCode(enum.IntEnum):
    """The process exit codes, documented in the README."""

    OK = 0
    """Every record was planned or sent, or deliberately skipped."""
    FAILED = 1
    """At least one record was rejected or failed, or the run could not go on (an output or the
    ledger could not be written)."""
    USAGE = 2
    """Bad command line, bad config, a named input that does not exist, no API key or a refused one."""
    TEMPFAIL = 75
    """Courier failed too long with no answer (EX_TEMPFAIL): try again later; a resume loses nothing."""
    INTERRUPTED = 130
    """The run was stopped by SIGINT (Ctrl-C): 128 + 2."""
    TERMINATED = 143
    """The run was stopped by SIGTERM: 128 + 15."""


class SegrouteError(Exception):
    """Base of every error segroute raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(SegrouteError):
    """The command line asks for something that cannot be done."""

    exit_code = ExitCode.USAGE


class ConfigError(SegrouteError):
    """The config file is missing, unreadable or invalid; the message names the file and the key."""

    exit_code = ExitCode.USAGE


class InputError(SegrouteError):
    """An input named on the command line does not exist (one that exists but cannot be read is a
    rejected record, and the run goes on)."""

    exit_code = ExitCode.USAGE


class AuthError(SegrouteError):
    """No API key, or one Courier refuses (401/403): every request would fail."""

    exit_code = ExitCode.USAGE


class LedgerError(SegrouteError):
    """The delivery ledger cannot be used."""


class LedgerOpenError(LedgerError):
    """The ledger cannot be opened for this run: missing where it must exist, not a segroute ledger,
    from a newer segroute, or in use by another send. Nothing was sent."""

    exit_code = ExitCode.USAGE


class LedgerWriteError(LedgerError):
    """The ledger could not be written during a run (a full disk, say). The run stops: what was sent
    is safe under its Idempotency-Keys, and a re-run resends the unrecorded ones under the same keys."""


class OutputError(SegrouteError):
    """Stdout, the failure file or the report could not be written (a full disk, say): what was
    written is incomplete."""


class TempStorageError(SegrouteError):
    """Temporary files could not be written: the duplicate check's, past DEDUPE_MEMORY ids, or the
    event-time sort's. They go to the system's temporary folder (``TMPDIR``)."""
