"""What a run shows as it goes: requests or results on stdout, progress, and one-line notes,
warnings and errors on stderr (`views` shows what a command shows once it is done).

rich loads with the first thing shown to a person, not with this module: a quiet run that has
nothing to say, and output for scripts, never load it (50 ms of start-up).
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, TYPE_CHECKING, BinaryIO, Literal, TextIO

import orjson

from segroute.errors import OutputError
from segroute.names import display_name

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as ProgressBar

    # The pipeline's modules load only in the commands that read events.
    from segroute.models import Event, Missed, Note, Planned, Rejected, Request, RequestResult
    from segroute.runner import Progress

__all__ = [
    "JSONL_BUFFER",
    "MAX_SHOWN",
    "PLAIN_PROGRESS_EVERY",
    "RATE_WINDOW",
    "Rates",
    "duration",
    "progress_line",
    "JsonlWriter",
    "RunDisplay",
    "TextWriter",
    "input_of",
    "jsonl_line",
    "result_record",
    "show_error",
    "show_message",
    "show_note",
    "show_rejected",
    "show_warning",
    "size",
    "stderr_console",
    "stdout_console",
    "write_document",
    "write_jsonl",
]


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
            lines.append(text)  # `_add`, inline: the dry run's hottest loop
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


def show_warning(console: Console, message: str) -> None:
    """``warning: <message>``."""
    from rich.text import Text

    console.print(Text(f"warning: {message}", style="yellow"))


def show_message(console: Console, message: str) -> None:
    """A line for a person, as it is (no markup)."""
    from rich.text import Text

    console.print(Text(message))


def show_error(console: Console, message: str) -> None:
    """``error: <message>``, the one way errors are shown."""
    from rich.text import Text

    console.print(Text(f"error: {message}", style="red"))


def result_record(result: RequestResult) -> dict[str, object]:
    """A request that ended, as the JSONL output of a send shows it: the request as a dry run shows
    it, then what became of it."""
    from segroute.transform import CONTENT_TYPE

    request = result.request
    record: dict[str, object] = {
        "method": request.method,
        "url": request.url,
        "headers": {"Idempotency-Key": request.idempotency_key, "Content-Type": CONTENT_TYPE},
        "body": orjson.Fragment(request.body),
        "origin": result.event.origin,
        "messageId": result.event.message_id,
        "outcome": result.outcome,
        "reason": result.reason,
        "status": result.status,
        "attempts": result.attempts,
    }
    if result.run_id is not None:
        record["runId"] = result.run_id
    if result.request_id is not None:
        record["requestId"] = result.request_id
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


class Rates:
    """Events, requests and input bytes a second, over the last ``window`` seconds: the current
    pace, not the run's average."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._samples: collections.deque[tuple[float, int, int, int]] = collections.deque()

    def add(self, now: float, events: int, requests: int, read_bytes: int) -> tuple[float, float, float]:
        """Note where the run is; (events, requests, bytes) a second since the window's start."""
        samples = self._samples
        samples.append((now, events, requests, read_bytes))
        while len(samples) > 2 and samples[1][0] <= now - self._window:
            samples.popleft()
        first = samples[0]
        seconds = now - first[0]
        if seconds <= 0:
            return 0.0, 0.0, 0.0
        return (
            (events - first[1]) / seconds,
            (requests - first[2]) / seconds,
            (read_bytes - first[3]) / seconds,
        )


def progress_line(progress: Progress, rates: tuple[float, float, float], *, with_share: bool = True) -> str:
    """How far a send has come, in one line: counts, the current rates, the share of the input read
    and when the rest will be (for files; ``with_share`` leaves the share to a bar)."""
    events_rate, requests_rate, bytes_rate = rates
    line = (
        f"read {progress.read:,} events · {progress.done:,} requests done · {events_rate:,.0f} events/s · "
        f"{requests_rate:,.0f} requests/s · {progress.failed:,} failed · {progress.retries:,} retries"
    )
    if progress.total_bytes:
        share = min(1.0, progress.read_bytes / progress.total_bytes)
        if with_share:
            line += f" · {share:.0%} of {size(progress.total_bytes)} read"
        left = progress.total_bytes - progress.read_bytes
        if left > 0 and bytes_rate > 0:
            line += f" · ETA {duration(left / bytes_rate)}"
    if progress.already_sent:
        line += f" · skipping already sent: {progress.already_sent:,} events"
    if progress.throttled:
        pace = "" if progress.pace is None else f", at most {progress.pace:,.0f}/s"
        line += (
            f" · throttled by Courier ({progress.throttled:,} × 429): "
            f"{progress.concurrency} of {progress.max_concurrency} in flight{pace}"
        )
    return line


def duration(seconds: float) -> str:
    """A time left as a person reads it: ``45s``, ``2m 10s``, ``1h 03m``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


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
        self._bar: ProgressBar | None = None
        if live_progress and not quiet:
            from rich.progress import BarColumn, TaskProgressColumn, TextColumn
            from rich.progress import Progress as ProgressBar

            self._bar = ProgressBar(
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.description}"),
                console=err(),
                auto_refresh=False,
                transient=True,
            )
            self._task = self._bar.add_task("", total=None)
            self._bar.start()
        self._last_line = time.monotonic()
        self._rates = Rates(RATE_WINDOW)
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

    def missed(self, event: Event, missed: Missed) -> None:
        """A link that failed on an event: one line naming where the event was read, for the first
        MAX_SHOWN of each target and reason."""
        if self._problems.shown(f"{missed.reason} for {missed.target.label}"):
            from rich.text import Text

            line = f"{event.origin}: {missed.reason} for {missed.target.label}: {missed.detail}"
            self._err().print(Text(display_name(line)))

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
        rates = self._rates.add(now, progress.read, progress.done, progress.read_bytes)
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=progress.read_bytes,
                total=progress.total_bytes or None,
                description=progress_line(progress, rates, with_share=False),
            )
            self._bar.refresh()
        elif now - self._last_line >= PLAIN_PROGRESS_EVERY:
            self._last_line = now
            self._err().print(Text(f"progress: {progress_line(progress, rates)}"))

    def close(self) -> None:
        """Stop the live line, say how many problem lines were left out, and flush stdout."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
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


def jsonl_line(value: object) -> bytes:
    """One JSON object and a newline."""
    return orjson.dumps(value) + b"\n"
