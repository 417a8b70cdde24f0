"""The files a send leaves behind: the events that did not go out, and the JSON report."""

from __future__ import annotations

import datetime
import os
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any, BinaryIO

import orjson

from segroute import __version__
from segroute._json import dumps
from segroute.errors import OutputError, UsageError
from segroute.models import (
    NOT_JSON,
    SKIP_REASONS,
    Delivered,
    Event,
    Missed,
    Outcome,
    Rejected,
    RequestResult,
    Skipped,
)
from segroute.summary import UNSENT_SKIPS, Summary

__all__ = [
    "MAX_LISTED_PROBLEMS",
    "FailedWriter",
    "ProblemLog",
    "build_report",
    "check_outputs",
    "write_report",
]

MAX_LISTED_PROBLEMS = 1000
"""Failures and rejections listed one by one in the report; the counts cover all of them."""


class FailedWriter:
    """Every event that did not go out, one per line, so that ``segroute send FILE`` replays them:
    its line as read when it had one of its own, else as parsed (same fields, same order)."""

    def __init__(self, path: Path | BinaryIO) -> None:
        """``path`` is a file to make, or a stream to write to (stdout), which is flushed, not closed."""
        self.path = path if isinstance(path, Path) else "stdout"
        self._stream = not isinstance(path, Path)
        try:
            self._out: IO[bytes] = path.open("wb") if isinstance(path, Path) else path
        except OSError as exc:
            raise OutputError(f"failure file {path}: cannot write: {exc.strerror or exc}") from exc
        self.written = 0
        self.unwritable = 0
        """Events nested too deeply to write back as JSON: counted, not kept."""

    def add(self, outcome: Outcome | Delivered) -> None:
        """Keep the event if it did not go out, or not everywhere: failed, not attempted, skipped
        though it should have gone (`UNSENT_SKIPS`), a link failed on it, or rejected but still JSON.
        (Its requests that went out are in the ledger, which a replay leaves out.)"""
        if isinstance(outcome, Delivered):
            if outcome.outcome != "sent" or outcome.missed:
                self._write_event(outcome.event)
        elif isinstance(outcome, Skipped):
            if (outcome.reason in UNSENT_SKIPS or outcome.missed) and outcome.event is not None:
                self._write_event(outcome.event)
        elif isinstance(outcome, Rejected) and outcome.value is not NOT_JSON:
            self._write(outcome.value)

    def _write_event(self, event: Event) -> None:
        self._write(event.text if event.text is not None else event.data)

    def _write(self, value: Any) -> None:
        """One line: a text as read (bytes) as it is, a parsed value as compact JSON."""
        try:
            line = value if isinstance(value, bytes) else dumps(value)
        except ValueError:
            self.unwritable += 1
            return
        try:
            self._out.write(line + b"\n")
        except OSError as exc:
            raise self._error(exc) from exc
        self.written += 1

    def close(self) -> None:
        """Flush to disk (a stream: flush it, and leave it open)."""
        try:
            self._out.flush()
            if not self._stream:
                os.fsync(self._out.fileno())
        except OSError as exc:
            raise self._error(exc) from exc
        finally:
            if not self._stream:
                self._out.close()

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"failure file {self.path}: cannot write: {exc.strerror or exc}")


class ProblemLog:
    """The first failures and rejections, each with its origin, reason and detail, for the report."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.unlisted = 0

    def add_rejected(self, rejected: Rejected) -> None:
        """Note a rejected record."""
        self._add(
            {
                "origin": rejected.origin,
                "outcome": "rejected",
                "reason": rejected.reason,
                "detail": rejected.detail,
            }
        )

    def add_missed(self, event: Event, missed: Missed) -> None:
        """Note a link that failed on an event."""
        self._add(
            {
                "origin": event.origin,
                "outcome": "missed",
                "reason": missed.reason,
                "detail": missed.detail,
                "messageId": event.message_id,
                "target": missed.target.label,
            }
        )

    def add_result(self, result: RequestResult) -> None:
        """Note a request that did not go out (the runner passes no other)."""
        self._add(
            {
                "origin": result.event.origin,
                "outcome": result.outcome,
                "reason": result.reason,
                "detail": result.detail,
                "messageId": result.event.message_id,
                "method": result.request.method,
                "url": result.request.url,
                "status": result.status,
                "attempts": result.attempts,
            }
        )

    def _add(self, item: dict[str, Any]) -> None:
        if len(self.items) < MAX_LISTED_PROBLEMS:
            self.items.append(item)
        else:
            self.unlisted += 1


def build_report(
    summary: Summary,
    problems: ProblemLog,
    *,
    api_url: str,
    dry_run: bool,
    started: datetime.datetime,
    seconds: float,
    stopped_by: str | None,
    stop_detail: str = "",
    throttled: int = 0,
    failing_targets: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON report: counts per outcome and reason, per target, per HTTP status; retries, 429s
    and rates; why the run stopped early, and the targets it gave up."""
    outcomes: dict[str, dict[str, int]] = {}
    for (outcome, reason), count in sorted(summary.outcomes.items()):
        outcomes.setdefault(outcome, {})[reason or "ok"] = count
    targets: dict[str, dict[str, int]] = {}
    for (label, kind), count in sorted(summary.targets.items()):
        targets.setdefault(label, {})[kind] = count
    requests_done = sum(n for (_, kind), n in summary.targets.items() if kind in ("sent", "failed"))
    return {
        "segroute": __version__,
        "mode": "dry-run" if dry_run else "send",
        "api_url": api_url,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_seconds": round(seconds, 3),
        "stopped_by": stopped_by,
        "stop_detail": stop_detail,
        "read": summary.read,
        "totals": summary.totals(),
        "outcomes": outcomes,
        "targets": targets,
        "http_statuses": {str(status): count for status, count in sorted(summary.statuses.items())},
        "requests": requests_done,
        "retries": summary.retries,
        "throttled": throttled,
        "failing_targets": failing_targets or {},
        "requests_per_second": round(requests_done / seconds, 1) if seconds > 0 else None,
        "skip_reasons": {
            reason: text for reason, text in SKIP_REASONS.items() if ("skipped", reason) in summary.outcomes
        },
        "link_failures": [
            {"target": label, "reason": reason, "events": count}
            for (label, reason), count in sorted(summary.missed.items())
        ],
        "problems": problems.items,
        "problems_not_listed": problems.unlisted,
    }


def check_outputs(
    outputs: dict[str, Path | BinaryIO | None],
    *,
    inputs: list[str],
    ledger: Path | None,
    written_while_reading: Collection[str] = (),
) -> None:
    """Refuse, before anything is read, output files (named by what they are: ``report``, say) that
    cannot be made, or that would overwrite an input, the ledger or one another; and those
    ``written_while_reading`` that lie in an input folder, which would read them back as they grow."""
    taken: dict[Path, str] = {} if ledger is None else {_resolved("ledger", ledger): "the ledger"}
    folders = [_resolved("input", Path(name)) for name in inputs if name != "-" and os.path.isdir(name)]
    for what, path in outputs.items():
        if not isinstance(path, Path):  # none, or a stream
            continue
        where = _resolved(what, path)
        for name in inputs:
            if name != "-" and os.path.exists(name) and path.exists() and os.path.samefile(name, path):
                raise UsageError(f"{what} {path} is also an input: write it elsewhere, then replay it")
        if what in written_while_reading and any(_read_in(where, folder) for folder in folders):
            raise UsageError(f"{what} {path} is in an input folder, which would read it back")
        if where in taken:
            raise UsageError(f"{what} {path} is also {taken[where]}: give each its own file")
        taken[where] = f"the {what}"
        if where.is_dir() or not where.parent.is_dir() or not os.access(where.parent, os.W_OK):
            raise UsageError(f"{what} {path}: cannot write there")


def _resolved(what: str, path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of symbolic links
        raise UsageError(f"{what} {path}: cannot follow the path: {exc}") from exc


def _read_in(path: Path, folder: Path) -> bool:
    """Whether a walk of ``folder`` reads ``path``: it is below it, and not hidden (as the walk
    leaves out names that start with a dot)."""
    return path.is_relative_to(folder) and not any(
        part.startswith(".") for part in path.relative_to(folder).parts
    )


def write_report(path: Path | BinaryIO, report: dict[str, Any]) -> None:
    """Write the report as indented JSON, to a file or a stream (stdout)."""
    data = orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
    try:
        if isinstance(path, Path):
            path.write_bytes(data)
        else:
            path.write(data)
            path.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        where = path if isinstance(path, Path) else "stdout"
        raise OutputError(f"report {where}: cannot write: {exc.strerror or exc}") from exc
