"""Everything segroute shows a person or a script: requests, warnings, summaries, links, errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, BinaryIO

import orjson
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from segroute.config import Link
from segroute.events import Event
from segroute.pipeline import Rejected, Summary
from segroute.sources import Note
from segroute.transform import CONTENT_TYPE, Request


def stdout_console() -> Console:
    """The console for data shown to a person (tables of links)."""
    return Console(soft_wrap=True, highlight=False)


def stderr_console() -> Console:
    """The console for people: progress, warnings, summaries and errors, never data."""
    return Console(stderr=True, soft_wrap=True, highlight=False)


def request_record(request: Request, event: Event) -> dict[str, object]:
    """A planned request as the JSONL dry run shows it; the body is embedded as the bytes to be sent."""
    return {
        "method": request.method,
        "url": request.url,
        "headers": {"Idempotency-Key": request.idempotency_key, "Content-Type": CONTENT_TYPE},
        "body": orjson.Fragment(request.body),
        "origin": event.origin,
        "messageId": event.message_id,
    }


class JsonlWriter:
    """One JSON object per line per request, written to a binary stream."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, requests: Sequence[Request], event: Event) -> None:
        """Write the lines for one event's requests."""
        for request in requests:
            self._out.write(orjson.dumps(request_record(request, event), option=orjson.OPT_APPEND_NEWLINE))

    def close(self) -> None:
        """Flush what is buffered."""
        self._out.flush()


class _DataConsole(Console):
    """A console for stdout whose closed pipe ends the run like any other write to stdout does."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


class TextWriter:
    """A readable view of the same requests, for a terminal."""

    def __init__(self, out: IO[str]) -> None:
        self._console = _DataConsole(file=out, soft_wrap=True)

    def write(self, requests: Sequence[Request], event: Event) -> None:
        """Show one event's requests: the request line, headers, origin, then the body."""
        for request in requests:
            self._console.print(Text(f"{request.method} {request.url}", style="bold"))
            self._console.print(
                Text(f"Idempotency-Key: {request.idempotency_key}\nContent-Type: {CONTENT_TYPE}", style="dim")
            )
            self._console.print(Text(f"# {event.origin}  messageId {event.message_id}", style="dim"))
            self._console.print_json(request.body.decode())
            self._console.print()

    def close(self) -> None:
        """Flush the console's file."""
        self._console.file.flush()


def show_rejected(console: Console, rejected: Rejected) -> None:
    """One line for a record that was rejected, naming where it was read."""
    console.print(Text(f"{rejected.origin}: rejected ({rejected.reason}): {rejected.detail}"))


def show_note(console: Console, note: Note) -> None:
    """One line about an input that held no records."""
    console.print(Text(f"{note.origin}: note: {note.message}"))


def show_summary(console: Console, summary: Summary, *, title: str) -> None:
    """The counts per outcome and reason, then the requests per target."""
    table = Table(title=title, box=box.SIMPLE, title_justify="left")
    table.add_column("outcome")
    table.add_column("reason")
    table.add_column("records", justify="right")
    order = {"planned": 0, "sent": 1, "skipped": 2, "rejected": 3, "failed": 4}
    for (outcome, reason), count in sorted(
        summary.outcomes.items(), key=lambda item: (order.get(item[0][0], 9), item[0][1])
    ):
        table.add_row(outcome, reason, str(count))
    table.add_section()
    table.add_row("read", "", str(summary.read), style="bold")
    console.print(table)
    if summary.requests:
        targets = Table(box=box.SIMPLE)
        targets.add_column("target")
        targets.add_column("requests", justify="right")
        for label, count in sorted(summary.requests.items()):
            targets.add_row(label, str(count))
        targets.add_section()
        targets.add_row("total", str(summary.requests.total()), style="bold")
        console.print(targets)


def show_links(console: Console, links: Sequence[Link], *, source: str) -> None:
    """The links as a table, or a hint when there are none."""
    if not links:
        console.print(Text(f"no links in {source}; add one with: segroute link EVENT AUTOMATION"))
        return
    table = Table(box=box.SIMPLE)
    table.add_column("event")
    table.add_column("automation")
    table.add_column("brand")
    for link in links:
        table.add_row(link.event, link.automation, link.brand or "")
    console.print(table)


def links_json(links: Sequence[Link]) -> bytes:
    """The links as a JSON array, for scripts."""
    return orjson.dumps([link.model_dump() for link in links], option=orjson.OPT_INDENT_2) + b"\n"


def show_message(console: Console, message: str) -> None:
    """A line for a person, as it is (no markup)."""
    console.print(Text(message))


def show_error(console: Console, message: str) -> None:
    """``error: <message>``, the one way errors are shown."""
    console.print(Text(f"error: {message}", style="red"))
