"""The exception tree and the exit codes.

Library code raises these; ``cli.py`` has the one boundary that prints them and exits with the code
each class carries.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The process exit codes, documented in the README."""

    OK = 0
    """Every record was planned or sent, or deliberately skipped."""
    FAILED = 1
    """At least one record was rejected or failed."""
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

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(SegrouteError):
    """The command line asks for something that cannot be done."""


class ConfigError(SegrouteError):
    """The config file is missing, unreadable or invalid; the message names the file and the key."""


class InputError(SegrouteError):
    """An input named on the command line does not exist (one that exists but cannot be read is a
    rejected record, and the run goes on)."""


class AuthError(SegrouteError):
    """No API key, or one Courier refuses (401/403): every request would fail."""


class LedgerError(SegrouteError):
    """The ledger could not be written during a run (a full disk, say). The run stops: what was sent
    is safe under its Idempotency-Keys, and a re-run resends the unrecorded ones under the same keys."""

    exit_code = ExitCode.FAILED
