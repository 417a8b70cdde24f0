"""Everything segroute shows a person or a script: requests, warnings, summaries, links, errors.

rich loads with the first thing shown to a person, not with this module: a quiet run that has
nothing to say, and output for scripts, never load it (50 ms of start-up).
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, TextIO

import orjson

from segroute.errors import OutputError
from segroute.names import display_name

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    # The pipeline's modules load only in the commands that read events.
    from segroute.config import Link
    from segroute.models import Event, Note, Planned, Rejected, Request, RequestResult
    from segroute.runner import Progress
    from segroute.summary import Summary


def stdout_console() -> Console:
    """The console for data shown to a person (tables of links)."""
    from rich.console import Console

    return Console(soft_wrap=True, highlight=False)


def stderr_console() -> Console:
    """The console for people: progress, warnings, summaries and errors, never data."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False)


JSONL_BUFFER = 256 * 1024
"""Bytes of lines gathered before one write, whatever buffering the stream has (PYTHONUNBUFFERED)."""


class JsonlWriter:
    """One JSON object per line per request, written to a binary stream in large writes."""

    def __init__(self, out: BinaryIO) -> None:
        from segroute.transform import CONTENT_TYPE  # here, not at the top: see the imports

        self._out = out
        self._lines: list[bytes] = []
        self._size = 0
        self._content_type = CONTENT_TYPE

    def write(self, requests: Sequence[Request], event: Event) -> None:
        """Write the lines for one event's requests: method, url, headers (never Authorization), body
        (the bytes to be sent, embedded as they are), origin, messageId."""
        lines = self._lines
        for request in requests:
            line = {
                "method": request.method,
                "url": request.url,
                "headers": {"Idempotency-Key": request.idempotency_key, "Content-Type": self._content_type},
                "body": orjson.Fragment(request.body),
                "origin": event.origin,
                "messageId": event.message_id,
            }
            text = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
            lines.append(text)  # `_add`, inline: this runs once per request of a dry run
            self._size += len(text)
        if self._size >= JSONL_BUFFER:
            self._write()

    def result(self, result: RequestResult) -> None:
        """Write the line for a request that ended."""
        self._add(orjson.dumps(result_record(result), option=orjson.OPT_APPEND_NEWLINE))

    def _add(self, line: bytes) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= JSONL_BUFFER:
            self._write()

    def _write(self) -> None:
        lines, self._lines, self._size = self._lines, [], 0
        self._out.write(b"".join(lines))

    def flush(self) -> None:
        """Write through what is gathered and buffered."""
        if self._lines:
            self._write()
        self._out.flush()


def _data_console(out: IO[str]) -> Console:
    """A console for stdout whose closed pipe ends the run like any other write to stdout does."""
    from rich.console import Console

    class DataConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return DataConsole(file=out, soft_wrap=True)


class TextWriter:
    """A readable view of the same requests, for a terminal."""

    def __init__(self, out: IO[str]) -> None:
        from segroute.transform import CONTENT_TYPE

        self._console = _data_console(out)
        self._content_type = CONTENT_TYPE

    def write(self, requests: Sequence[Request], event: Event) -> None:
        """Show one event's requests: the request line, headers, origin, then the body."""
        from rich.text import Text

        for request in requests:
            self._console.print(Text(f"{request.method} {request.url}", style="bold"))
            self._console.print(
                Text(
                    f"Idempotency-Key: {request.idempotency_key}\nContent-Type: {self._content_type}",
                    style="dim",
                )
            )
            self._console.print(
                Text(
                    f"# {display_name(event.origin)}  messageId {display_name(event.message_id)}", style="dim"
                )
            )
            self._console.print_json(request.body.decode())
            self._console.print()

    def result(self, result: RequestResult) -> None:
        """One line for a request that ended: status, request, outcome, origin."""
        from rich.text import Text

        reason = f" ({result.reason})" if result.reason else ""
        self._console.print(
            Text(
                f"{result.status or '-'} {result.request.method} {result.request.url} "
                f"{result.outcome}{reason} # {display_name(result.event.origin)}"
            )
        )

    def flush(self) -> None:
        """Write through what is buffered."""
        self._console.file.flush()


def show_rejected(console: Console, rejected: Rejected) -> None:
    """One line for a record that was rejected, naming where it was read."""
    from rich.text import Text

    console.print(Text(display_name(f"{rejected.origin}: rejected ({rejected.reason}): {rejected.detail}")))


def show_note(console: Console, note: Note) -> None:
    """One line about an input that held no records."""
    from rich.text import Text

    console.print(Text(f"{note.origin}: note: {note.message}"))


def show_summary(console: Console, summary: Summary, *, title: str) -> None:
    """The counts per outcome and reason, then the requests per target."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, box=box.SIMPLE, title_justify="left")
    table.add_column("outcome")
    table.add_column("reason")
    table.add_column("records", justify="right")
    order = {"planned": 0, "sent": 1, "skipped": 2, "rejected": 3, "failed": 4, "not_attempted": 5}
    for (outcome, reason), count in sorted(
        summary.outcomes.items(), key=lambda item: (order.get(item[0][0], 9), item[0][1])
    ):
        table.add_row(Text(outcome), Text(reason), Text(str(count)))
    table.add_section()
    table.add_row("read", "", str(summary.read), style="bold")
    console.print(table)
    if summary.targets:
        console.print(_targets_table(summary))


_REQUEST_COLUMNS = {
    "planned": "requests",
    "sent": "sent",
    "failed": "failed",
    "not_attempted": "not sent",
    "skipped": "skipped",
    "already_sent": "sent before",
    "uncertain": "uncertain",
}


def _targets_table(summary: Summary) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    kinds = [kind for kind in _REQUEST_COLUMNS if any(k == kind for _, k in summary.targets)]
    table = Table(box=box.SIMPLE)
    table.add_column("target")
    for kind in kinds:
        table.add_column(_REQUEST_COLUMNS[kind], justify="right")
    labels = sorted({label for label, _ in summary.targets})
    for label in labels:
        table.add_row(Text(display_name(label)), *(Text(str(summary.targets[label, kind])) for kind in kinds))
    table.add_section()
    totals = [sum(n for (_, k), n in summary.targets.items() if k == kind) for kind in kinds]
    table.add_row("total", *(str(n) for n in totals), style="bold")
    return table


def show_files(
    console: Console,
    failed_written: int | None,
    failed: object,
    report: object,
    *,
    unwritable: int = 0,
    replay: str | None = None,
) -> None:
    """Where the failure file and the report went; how to replay the failure file, when every input
    was read (else the file holds only part of what did not go out: `show_stop` says how to resume)."""
    from rich.text import Text

    if unwritable:
        console.print(Text(f"{failed}: {unwritable:,} events nested too deeply to write back were left out"))
    if failed is not None and failed_written is not None:
        plural = "" if failed_written == 1 else "s"
        if failed_written == 0:
            console.print(Text(f"{failed}: no events that did not go out"))
        elif replay is not None:
            console.print(
                Text(f"{failed}: {failed_written:,} event{plural} that did not go out; replay with: {replay}")
            )
        else:
            console.print(
                Text(
                    f"{failed}: {failed_written:,} event{plural} read that did not go out; the input was "
                    "not read to its end, so resume with the same command (below) rather than this file"
                )
            )
    if report is not None:
        console.print(Text(f"{report}: the report of this run"))


_STOPPED_BY = {
    "SIGINT": "stopped by Ctrl-C (SIGINT)",
    "SIGTERM": "stopped by SIGTERM",
    "unavailable": "stopped: Courier failed every attempt",
}


def size(count: int) -> str:
    """Bytes as a person reads them: 512 B, 8.6 KB, 36 MB, 1.2 GB."""
    amount = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            break
        amount /= 1000
    if unit == "B":
        return f"{count} B"
    return f"{amount:.1f} {unit}" if amount < 10 else f"{amount:,.0f} {unit}"


def how_much_read(read: int, read_bytes: int, total_bytes: int | None) -> str:
    """``48 of about 200,000 records (8.6 KB of 36 MB)``, as far as it is known."""
    records = "record" if read == 1 else "records"
    if total_bytes is None:
        return f"{read:,} {records} (from stdin)"
    if not read_bytes or read_bytes >= total_bytes:
        return f"{read:,} {records} ({size(read_bytes)} of {size(total_bytes)})"
    estimate = round(read * total_bytes / read_bytes, -2 if read * total_bytes / read_bytes > 1000 else 0)
    return f"{read:,} of about {int(estimate):,} records ({size(read_bytes)} of {size(total_bytes)})"


def show_stop(
    console: Console,
    stopped_by: str,
    detail: str,
    *,
    read: int,
    read_bytes: int,
    total_bytes: int | None,
    input_read: bool,
    resume: str,
    stdin: bool,
    ledger: bool,
) -> None:
    """Why a run stopped before the end, how much of the input it read, and the command that resumes."""
    from rich.text import Text

    why = _STOPPED_BY.get(stopped_by, f"stopped ({stopped_by})")
    if detail:
        why += f" ({detail})"
    if input_read:
        reading = f"every input was read ({read:,} records)"
    else:
        reading = f"read {how_much_read(read, read_bytes, total_bytes)}; the rest was not read"
    console.print(Text(display_name(f"{why}: {reading}."), style="bold"))
    if stdin:
        again = "pipe the same events into the same command again"
    else:
        again = "run the same command again"
    if ledger:
        how = f"To resume, {again}: the ledger leaves out what Courier accepted"
    else:
        how = (
            f"To resume, {again}. There is no ledger (--no-ledger): what went out goes out again, and "
            "Courier acts on it only once while it keeps its Idempotency-Keys (24 hours)"
        )
    if stopped_by == "unavailable":
        how = "Try again later. " + how
    console.print(Text(display_name(f"{how}:")))
    console.print(Text(display_name(f"  {resume}")))


def show_uncertain(console: Console, events: int, ledger: object, *, resume: str) -> None:
    """Why events were held back as uncertain, and what to do about them."""
    from rich.text import Text

    plural = "s" if events != 1 else ""
    console.print(
        Text(
            display_name(
                f"warning: {events:,} event{plural} held back (uncertain): an earlier run sent their "
                "requests and was killed before Courier's answer was recorded, and their Idempotency-Keys "
                "may have expired, so sending them again could notify someone twice. List them: segroute "
                f"ledger unsettled --ledger {ledger}; send them anyway: {resume} --resend-uncertain"
            ),
            style="yellow",
        )
    )


def show_failing_targets(console: Console, failing: Mapping[str, str], *, failed: object | None) -> None:
    """Targets the run stopped sending to, and why; where their skipped requests' events went."""
    kept = f"are in {failed}" if failed is not None else "are kept only with --failed"
    for label, refusal in sorted(failing.items()):
        show_message(
            console,
            display_name(
                f"{label}: stopped sending to it: {refusal} to every recipient; its other requests were "
                f"skipped (target_failing) and their events {kept}. Check the link, then replay them"
            ),
        )


def show_warning(console: Console, message: str) -> None:
    """``warning: <message>``."""
    from rich.text import Text

    console.print(Text(f"warning: {message}", style="yellow"))


def show_ledger_line(console: Console, path: object, recorded: int, *, dry_run: bool) -> None:
    """Where the ledger is, and what this run added to it."""
    from rich.text import Text

    if dry_run:
        console.print(Text(f"{path}: the ledger, read: requests it holds were left out"))
        return
    plural = "" if recorded == 1 else "s"
    console.print(Text(f"{path}: the ledger: {recorded:,} accepted request{plural} recorded this run"))


def show_links(console: Console, links: Sequence[Link], *, source: str) -> None:
    """The links as a table, or a hint when there are none."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not links:
        console.print(Text(f"no links in {source}; add one with: segroute link EVENT AUTOMATION"))
        return
    table = Table(box=box.SIMPLE)
    table.add_column("event")
    table.add_column("automation")
    table.add_column("brand")
    for link in links:
        table.add_row(*(Text(display_name(cell)) for cell in (link.event, link.automation, link.brand or "")))
    console.print(table)


def links_json(links: Sequence[Link]) -> bytes:
    """The links as a JSON array, for scripts."""
    return orjson.dumps([link.model_dump() for link in links], option=orjson.OPT_INDENT_2) + b"\n"


def show_message(console: Console, message: str) -> None:
    """A line for a person, as it is (no markup)."""
    from rich.text import Text

    console.print(Text(message))


def show_error(console: Console, message: str) -> None:
    """``error: <message>``, the one way errors are shown."""
    from rich.text import Text

    console.print(Text(f"error: {message}", style="red"))


def result_record(result: RequestResult) -> dict[str, object]:
    """A request that ended, as the JSONL output of a send shows it."""
    record: dict[str, object] = {
        "method": result.request.method,
        "url": result.request.url,
        "status": result.status,
        "attempts": result.attempts,
        "outcome": result.outcome,
        "reason": result.reason,
    }
    if result.run_id is not None:
        record["runId"] = result.run_id
    if result.request_id is not None:
        record["requestId"] = result.request_id
    record["Idempotency-Key"] = result.request.idempotency_key
    record["origin"] = result.event.origin
    record["messageId"] = result.event.message_id
    if result.detail:
        record["detail"] = result.detail
    return record


PLAIN_PROGRESS_EVERY = 10.0
"""Seconds between progress lines when stderr is not a terminal."""
RATE_WINDOW = 5.0
"""Seconds over which the progress line measures the current rate."""
MAX_SHOWN = 20
"""Lines shown for each input and reason (rejections) or target and reason (failures); the counts,
the report and the failure file hold all of them."""
_LINE_SUFFIX = re.compile(r":\d+(\[\d+\])?$")


def input_of(origin: str) -> str:
    """The input an origin names, without its line (and item)."""
    return _LINE_SUFFIX.sub("", origin)


class _Shown:
    """Counts lines of one kind, to show only the first MAX_SHOWN of each."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def shown(self, kind: str) -> bool:
        """Count a line of this kind; whether it is among the first MAX_SHOWN."""
        count = self._counts[kind] = self._counts.get(kind, 0) + 1
        return count <= MAX_SHOWN

    def unshown(self) -> list[tuple[str, int]]:
        """Each kind with lines left out, and how many."""
        return [(kind, count - MAX_SHOWN) for kind, count in self._counts.items() if count > MAX_SHOWN]


class RunDisplay:
    """What a run of ``send`` shows: requests or results on stdout, the rest on stderr."""

    def __init__(
        self,
        *,
        output: Literal["text", "jsonl"] | None,
        stdout: TextIO,
        err: Callable[[], Console],
        quiet: bool,
        live_progress: bool,
        flush_each: bool = False,
    ) -> None:
        """``err`` makes the stderr console when there is something to show on it, the first time."""
        self._flush_each = flush_each
        self._stdout = stdout
        self._err = err
        self._quiet = quiet
        self._requests: JsonlWriter | TextWriter | None = None
        if output == "jsonl":
            self._requests = JsonlWriter(stdout.buffer)
        elif output == "text":
            self._requests = TextWriter(stdout)
        self._live: Live | None = None
        if live_progress and not quiet:
            from rich.live import Live

            self._live = Live(console=err(), auto_refresh=False, transient=True)
            self._live.start()
        self._last_line = time.monotonic()
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        """(time, requests done) over the last RATE_WINDOW seconds, for the current rate."""
        self._problems = _Shown()
        self._given_up: set[str] = set()

    def request(self, planned: Planned) -> None:
        """A planned request, in a dry run."""
        if self._requests is not None:
            try:
                self._requests.write(planned.requests, planned.event)
                if self._flush_each:
                    self._requests.flush()
            except BrokenPipeError:
                raise
            except OSError as exc:
                raise _output_error(exc) from exc

    def result(self, result: RequestResult) -> None:
        """A request that ended: a line on stdout when asked, written through at once (a flush costs
        little beside a request); a line on stderr when it failed, for the first MAX_SHOWN of each
        target and reason; a line when a target is given up."""
        if self._requests is not None:
            try:
                self._requests.result(result)
                self._requests.flush()
            except BrokenPipeError:
                raise
            except OSError as exc:
                raise _output_error(exc) from exc
        if result.outcome == "failed":
            if self._problems.shown(f"failed ({result.reason}) for {result.request.target.label}"):
                from rich.text import Text

                self._err().print(
                    Text(
                        display_name(
                            f"{result.event.origin}: failed ({result.reason}): {result.detail} "
                            f"[{result.request.method} {result.request.url}]"
                        )
                    )
                )
        elif result.reason == "target_failing" and result.request.target.label not in self._given_up:
            self._given_up.add(result.request.target.label)
            show_message(
                self._err(),
                display_name(f"{result.detail}: its requests from now on are skipped (target_failing)"),
            )

    def rejected(self, rejected: Rejected) -> None:
        """A rejected record: one line naming where it was read, for the first MAX_SHOWN of each input
        and reason."""
        if self._problems.shown(f"rejected ({rejected.reason}) in {input_of(rejected.origin)}"):
            show_rejected(self._err(), rejected)

    def note(self, note: Note) -> None:
        """A note about an input, unless quiet."""
        if not self._quiet:
            show_note(self._err(), note)

    def progress(self, progress: Progress) -> None:
        """A live line on a terminal; otherwise a plain line every PLAIN_PROGRESS_EVERY seconds."""
        if self._quiet:
            return
        from rich.text import Text

        now = time.monotonic()
        samples = self._samples
        samples.append((now, progress.done))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()
        first_time, first_done = samples[0]
        rate = (progress.done - first_done) / (now - first_time) if now > first_time else 0.0
        line = (
            f"read {progress.read:,} events · {progress.done:,} requests done · {rate:,.0f}/s · "
            f"{progress.failed:,} failed · {progress.retries:,} retries"
        )
        if progress.total_bytes:
            share = min(1.0, progress.read_bytes / progress.total_bytes)
            line += f" · {share:.0%} of {size(progress.total_bytes)} read"
        if progress.throttled:
            pace = "" if progress.pace is None else f", at most {progress.pace:,.0f}/s"
            line += (
                f" · throttled by Courier ({progress.throttled:,} × 429): "
                f"{progress.concurrency} of {progress.max_concurrency} in flight{pace}"
            )
        if self._live is not None:
            self._live.update(Text(line), refresh=True)
        elif now - self._last_line >= PLAIN_PROGRESS_EVERY:
            self._last_line = now
            self._err().print(Text(f"progress: {line}"))

    def close(self) -> None:
        """Stop the live line, say how many problem lines were left out, and flush stdout."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        for kind, count in self._problems.unshown():
            show_message(self._err(), display_name(f"... and {count:,} more {kind}"))
        try:
            if self._requests is not None:
                self._requests.flush()
            self._stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _output_error(exc) from exc


def write_document(stdout: TextIO, data: bytes) -> None:
    """Write a whole document (JSON, JSON lines) to stdout, and flush it."""
    try:
        stdout.buffer.write(data)
        stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _output_error(exc) from exc


def write_jsonl(stdout: TextIO, values: Iterable[object]) -> None:
    """Write each value as a line of JSON to stdout, then flush."""
    try:
        for value in values:
            stdout.buffer.write(jsonl_line(value))
        stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _output_error(exc) from exc


def _output_error(exc: OSError) -> OutputError:
    return OutputError(f"cannot write the output: {exc.strerror or exc}")


MAX_UNLINKED_SHOWN = 10


def show_unlinked(console: Console, unlinked: Mapping[str, int]) -> None:
    """Why ``--fail-on unlinked`` failed: the track event names no link names, most frequent first."""
    ranked = sorted(unlinked.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{name!r} ({count:,})" for name, count in ranked[:MAX_UNLINKED_SHOWN])
    more = f" and {len(ranked) - MAX_UNLINKED_SHOWN:,} more" if len(ranked) > MAX_UNLINKED_SHOWN else ""
    show_error(
        console,
        display_name(
            f"track events with no link (--fail-on unlinked): {shown}{more}; "
            "link them with: segroute link EVENT AUTOMATION"
        ),
    )


def pretty_json(found: Mapping[str, Any]) -> bytes:
    """A document (what ``inspect`` found, the ledger summary) as indented JSON."""
    return orjson.dumps(found, option=orjson.OPT_INDENT_2) + b"\n"


def show_inventory(console: Console, found: Mapping[str, Any], *, selection: str) -> None:
    """What ``inspect`` found, as tables: overview, types, track events and their links, requests,
    rejected records."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    overview = Table(title=f"inspected: {selection}", box=box.SIMPLE, title_justify="left", show_header=False)
    overview.add_column()
    overview.add_column(justify="right")
    outcomes = found["outcomes"]
    overview.add_row("records read", f"{found['read']:,}")
    overview.add_row("valid events", f"{found['events']:,}")
    for reason, count in outcomes.get("skipped", {}).items():
        if reason in ("filtered", "duplicate"):
            overview.add_row(Text(f"{reason}"), f"{count:,}")
    overview.add_row("rejected", f"{sum(outcomes.get('rejected', {}).values()):,}")
    overview.add_row("distinct users", f"{found['users']['distinct']:,}")
    overview.add_row("anonymous events", f"{found['users']['anonymous_events']:,}")
    for label, key in (("timestamp", "timestamp"), ("receivedAt", "received_at")):
        span = found[key]
        if span["first"]:
            overview.add_row(f"first {label}", span["first"])
            overview.add_row(f"last {label}", span["last"])
        if span["missing"]:
            overview.add_row(f"events without {label}", f"{span['missing']:,}")
    if found["notes"]:
        overview.add_row("notes (empty files, placeholders)", f"{found['notes']:,}")
    console.print(overview)
    if found["types"]:
        types = Table(box=box.SIMPLE)
        types.add_column("type")
        types.add_column("events", justify="right")
        for kind, count in found["types"].items():
            types.add_row(Text(kind), f"{count:,}")
        console.print(types)
    _show_track_events(console, found)
    before = found["requests_sent_before"]
    if found["requests"] or before:
        requests = Table(title="a send would make", box=box.SIMPLE, title_justify="left")
        requests.add_column("target")
        requests.add_column("requests", justify="right")
        if before:
            requests.add_column("sent before (ledger)", justify="right")
        for label in sorted(set(found["requests"]) | set(before)):
            cells = [f"{found['requests'].get(label, 0):,}"]
            if before:
                cells.append(f"{before.get(label, 0):,}")
            requests.add_row(Text(display_name(label)), *cells)
        console.print(requests)
    if found["rejected"]:
        rejected = Table(title="rejected", box=box.SIMPLE, title_justify="left")
        rejected.add_column("reason")
        rejected.add_column("records", justify="right")
        rejected.add_column("first seen at")
        for reason, entry in found["rejected"].items():
            origins = Text("\n".join(display_name(origin) for origin in entry["first"]))
            rejected.add_row(Text(reason), f"{entry['count']:,}", origins)
        console.print(rejected)


def _show_track_events(console: Console, found: Mapping[str, Any]) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if found["track_events"]:
        table = Table(title="track events", box=box.SIMPLE, title_justify="left")
        table.add_column("event")
        table.add_column("events", justify="right")
        table.add_column("linked to")
        for entry in found["track_events"]:
            linked = Text(", ".join(entry["automations"])) if entry["automations"] else Text("no link", "red")
            table.add_row(Text(display_name(entry["event"])), f"{entry['count']:,}", linked)
        if found["track_events_not_listed"]:
            table.add_row("(more names)", f"{found['track_events_not_listed']:,}", "")
        console.print(table)
    never = found["links"]["never_seen"]
    if never:
        names = ", ".join(map(repr, never))
        console.print(Text(display_name(f"links whose event never occurs here: {names}")))


def jsonl_line(value: object) -> bytes:
    """One JSON object and a newline."""
    return orjson.dumps(value) + b"\n"


def show_ledger(console: Console, found: Mapping[str, Any]) -> None:
    """What the ledger holds: a table per API, automations by day, then the last run."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not found["requests"]:
        console.print(Text(f"{found['ledger']}: no accepted requests yet"))
    else:
        table = Table(title=f"{found['ledger']}: accepted requests", box=box.SIMPLE, title_justify="left")
        table.add_column("api")
        table.add_column("day (UTC)")
        table.add_column("automation")
        table.add_column("requests", justify="right")
        for row in found["per_target_day"]:
            table.add_row(
                Text(row["api_url"]),
                Text(row["day"]),
                Text(display_name(row["automation"])),
                f"{row['requests']:,}",
            )
        table.add_section()
        table.add_row("total", "", "", f"{found['requests']:,}", style="bold")
        console.print(table)
    last = found["last_run"]
    if last is None:
        console.print(Text("no runs recorded"))
        return
    counts = ", ".join(f"{outcome} {count:,}" for outcome, count in (last["counts"] or {}).items())
    shard = f", shard {last['shard']}" if last["shard"] else ""
    ended = last["ended_at"] or "-"
    stopped = f" ({last['stopped_by']})" if last["stopped_by"] else ""
    console.print(
        Text(
            display_name(
                f"last run (#{last['run']} of {found['runs']}{shard}): {last['started_at']} to "
                f"{ended}{stopped}; {counts or 'no counts'}; to {last['api_url']}; "
                f"inputs: {' '.join(last['inputs'])}"
            )
        )
    )
