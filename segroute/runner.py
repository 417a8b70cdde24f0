"""One run of ``segroute send``: the pipeline wired to the dry-run printer or to delivery, and to the
outputs (requests on stdout, problems and progress on stderr, the failure file and the report)."""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal, Protocol

from segroute.buckets import is_url
from segroute.inventory import Inventory
from segroute.ledger import DEFAULT_KEY_LIFETIME, FLUSH_SECONDS, Ledger
from segroute.models import (
    Delivered,
    Event,
    Missed,
    Note,
    Outcome,
    Planned,
    Rejected,
    Request,
    RequestResult,
)
from segroute.pipeline import plan
from segroute.report import FailedWriter, ProblemLog, build_report, check_outputs, write_report
from segroute.routing import Router, Via
from segroute.selection import Selection, Shard
from segroute.sources import ReadMeter, iter_items
from segroute.summary import Summary

if TYPE_CHECKING:
    import asyncio

    from segroute.config import Config
    from segroute.delivery import DeliveryOptions, KeyRefusedError

__all__ = [
    "PROGRESS_INTERVAL",
    "SEND_SWITCH_INTERVAL",
    "Display",
    "Progress",
    "RunOptions",
    "RunResult",
    "run",
    "take_inventory",
]

PROGRESS_INTERVAL = 0.25


class Display(Protocol):
    """What a run shows a person or a script; `render` provides it."""

    def request(self, planned: Planned) -> None:
        """A planned request, in a dry run."""

    def result(self, result: RequestResult) -> None:
        """A request that ended, in a send."""

    def rejected(self, rejected: Rejected) -> None:
        """A record that was rejected."""

    def missed(self, event: Event, missed: Missed) -> None:
        """A link that failed on an event."""

    def note(self, note: Note) -> None:
        """Something about an input that is not a record."""

    def progress(self, progress: Progress) -> None:
        """How far a send has come."""

    def close(self) -> None:
        """The run's output is complete."""


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a send has come, for the progress line."""

    read: int
    done: int
    failed: int
    retries: int
    seconds: float
    throttled: int = 0
    """429s so far; while there are none, the run goes as fast as it was asked to."""
    concurrency: int = 0
    """Requests allowed in flight now, and at most."""
    max_concurrency: int = 0
    pace: float | None = None
    """Requests a second allowed now, if that is limited."""
    read_bytes: int = 0
    """Bytes of the inputs read so far ..."""
    total_bytes: int | None = None
    """... of this many; None when one input is stdin."""
    already_sent: int = 0
    """Events skipped as accepted in an earlier run (a resume passing over what went out)."""


@dataclass
class RunOptions:
    """Everything a run needs, resolved by the command line."""

    inputs: list[str]
    config: Config
    base_url: str
    dry_run: bool
    api_key: str | None = None
    failed_path: Path | BinaryIO | None = None
    """The failure file, or a stream (stdout) to write its lines to."""
    report_path: Path | BinaryIO | None = None
    """The report's file, or a stream (stdout) to write it to."""
    delivery: DeliveryOptions | None = None
    """How to send; None for a dry run, which never imports aiohttp."""
    selection: Selection = field(default_factory=Selection)
    order: Literal["input", "timestamp"] = "input"
    limit: int | None = None
    shard: Shard | None = None
    """The share of the events (by user) this run sends."""
    ledger_path: Path | None = None
    """The delivery ledger; None for none. A send creates it; a dry run reads it if it exists."""
    resend_uncertain: bool = False
    """Send requests an earlier run sent without learning Courier's answer, even when their keys may
    have expired (`pipeline.resume`)."""
    via: Via = "links"
    """Route by the config's links, or post events to Courier's Segment intake (`routing`)."""
    ignore_integrations: bool = False
    """Route events whose ``integrations`` turn Courier off, too."""


@dataclass
class RunResult:
    """What a run did."""

    summary: Summary
    seconds: float
    dry_run: bool = False
    stopped_by: str | None = None
    """Why the run stopped before the end: ``SIGINT``, ``SIGTERM``, ``unavailable`` (Courier failed
    too long with no answer); None when it ran to the end, or when `error` stopped it."""
    stop_detail: str = ""
    """What Courier did that stopped it."""
    error: KeyRefusedError | None = None
    """Courier refused the API key, which stopped the run; the outputs are written all the same, and
    the caller raises it."""
    input_read: bool = True
    """Whether every input was read to its end."""
    failing_targets: dict[str, str] = field(default_factory=dict)
    """Targets the run stopped sending to, and the refusal that made it."""
    throttled: int = 0
    """429s Courier answered."""
    read_bytes: int = 0
    """Bytes of the inputs read when the run ended ..."""
    total_bytes: int | None = None
    """... of this many; None when one input is stdin."""
    failed_written: int | None = None
    failed_unwritable: int = 0
    report_path: Path | BinaryIO | None = None
    problems: ProblemLog = field(default_factory=ProblemLog)
    ledger_path: Path | None = None
    """The ledger the run used, if any."""
    ledger_recorded: int = 0
    """Requests this run added to the ledger."""

    @property
    def stop_reason(self) -> str | None:
        """Why the run stopped before the end, as the ledger and the report name it."""
        return "unauthorized" if self.error is not None else self.stopped_by


class _Outputs:
    """Every outcome passes here: counted, shown, kept in the failure file if it did not go out, and
    in the ledger once Courier accepted it."""

    def __init__(self, display: Display, ledger: Ledger | None, base_url: str) -> None:
        self.summary = Summary()
        self.problems = ProblemLog()
        self.display = display
        self.failed: FailedWriter | None = None
        """The failure file, once opened."""
        self.ledger = ledger
        self._base_url = base_url

    def outcome(self, outcome: Outcome | Note | Delivered) -> None:
        if type(outcome) is Planned:  # the usual outcome, tested first
            self.summary.add(outcome)
            self.display.request(outcome)
        elif isinstance(outcome, Note):
            self.display.note(outcome)
            return
        else:
            self.summary.add(outcome)
            if isinstance(outcome, Rejected):
                self.problems.add_rejected(outcome)
                self.display.rejected(outcome)
        if type(outcome) is not Rejected and outcome.missed and outcome.event is not None:
            for missed in outcome.missed:
                self.problems.add_missed(outcome.event, missed)
                self.display.missed(outcome.event, missed)
        if self.failed is not None:
            self.failed.add(outcome)

    def result(self, result: RequestResult) -> None:
        if self.ledger is not None:
            self.ledger.record(self._base_url, result)
        if result.outcome != "sent":  # what did not go out is kept for the report
            self.problems.add_result(result)
        self.display.result(result)


def run(
    options: RunOptions,
    display: Display,
    *,
    stdin: BinaryIO | None,
    on_signal: Callable[[int, str], None] = lambda count, name: None,
) -> RunResult:
    """Read, route and print or send; write the failure file and the report; return what happened."""
    check_outputs(
        {"failure file": options.failed_path, "report": options.report_path},
        inputs=options.inputs,
        ledger=options.ledger_path,
        written_while_reading={"failure file"},
    )
    if not options.dry_run:
        # aiohttp loads before the clock starts: it is start-up, as the interpreter's is.
        importlib.import_module("segroute.delivery")
    started_at = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(display.close)
        # The ledger is opened, and taken for this send, before the failure file, which opening
        # empties: a send refused because another holds the ledger leaves that file as it was.
        ledger = _open_ledger(options)
        outputs = _Outputs(display, ledger, options.base_url)
        result = RunResult(outputs.summary, 0.0, options.dry_run, problems=outputs.problems)
        if ledger is not None:
            stack.callback(ledger.close)
            result.ledger_path = ledger.path
            if not options.dry_run:
                shard = None if options.shard is None else str(options.shard)
                ledger.start_run(api_url=options.base_url, inputs=options.inputs, shard=shard)
            stack.callback(_close_ledger, ledger, result)
        if options.failed_path is not None:
            outputs.failed = FailedWriter(options.failed_path)
            stack.callback(_close_failed, outputs.failed, result)
        meter = ReadMeter(options.inputs)
        result.total_bytes = meter.total
        outcomes = _outcomes(options, stdin, ledger, meter)
        if options.dry_run:
            _print(outcomes, outputs, result)
        else:
            _deliver(options, outcomes, outputs, result, meter=meter, on_signal=on_signal)
        result.read_bytes = meter.position
    result.seconds = time.monotonic() - started
    if options.report_path is not None:
        report = build_report(
            result.summary,
            result.problems,
            api_url=options.base_url,
            dry_run=options.dry_run,
            started=started_at,
            seconds=result.seconds,
            stopped_by=result.stop_reason,
            stop_detail=result.error.detail if result.error is not None else result.stop_detail,
            throttled=result.throttled,
            failing_targets=result.failing_targets,
        )
        write_report(options.report_path, report)
        result.report_path = options.report_path
    return result


def _print(outcomes: Iterator[Outcome | Note], outputs: _Outputs, result: RunResult) -> None:
    """A dry run: every outcome shown and counted; SIGINT and SIGTERM stop it with the counts kept."""
    signals: list[str] = []
    try:
        with _sigterm_as_interrupt(signals):
            for outcome in outcomes:
                outputs.outcome(outcome)
    except KeyboardInterrupt:
        result.stopped_by = signals[0] if signals else "SIGINT"
        result.input_read = False


def _deliver(
    options: RunOptions,
    outcomes: Iterator[Outcome | Note],
    outputs: _Outputs,
    result: RunResult,
    *,
    meter: ReadMeter,
    on_signal: Callable[[int, str], None],
) -> None:
    """A send, on an event loop of its own; a refused key is kept as the result's error."""
    import asyncio  # only to send: a dry run starts without it

    from segroute.delivery import KeyRefusedError

    with asyncio.Runner(loop_factory=_loop_factory()) as runner, _short_gil_slices():
        try:
            runner.run(_send(options, outcomes, outputs, result, meter=meter, on_signal=on_signal))
        except KeyRefusedError as exc:
            result.error = exc


def _close_ledger(ledger: Ledger, result: RunResult) -> None:
    if not result.dry_run:
        ledger.end_run(counts=result.summary.totals(), stopped_by=result.stop_reason)
    result.ledger_recorded = ledger.recorded


def _close_failed(failed: FailedWriter, result: RunResult) -> None:
    failed.close()
    result.failed_written = failed.written
    result.failed_unwritable = failed.unwritable


def _open_ledger(options: RunOptions) -> Ledger | None:
    """The run's ledger: a send creates it; a dry run reads it when it is there, to show what is left."""
    path = options.ledger_path
    if path is None or (options.dry_run and not path.exists()):
        return None
    return Ledger(path)


def _router(options: RunOptions) -> Router:
    """The run's router: by the config's links, or to Courier's Segment intake."""
    return Router(options.config, via=options.via, ignore_integrations=options.ignore_integrations)


def _outcomes(
    options: RunOptions,
    stdin: BinaryIO | None,
    ledger: Ledger | None,
    meter: ReadMeter | None = None,
    router: Router | None = None,
) -> Iterator[Outcome | Note]:
    selection = options.selection
    skip_day = selection.skip_day if selection.since is not None else None
    items = iter_items(options.inputs, stdin=stdin, skip_day=skip_day, meter=meter)
    prior = None
    if ledger is not None:
        prior = functools.partial(ledger.prior, options.base_url)
    return plan(
        items,
        router or _router(options),
        base_url=options.base_url,
        selection=selection,
        order=options.order,
        limit=options.limit,
        shard=options.shard,
        prior=prior,
        resend_uncertain=options.resend_uncertain,
    )


def take_inventory(options: RunOptions, *, stdin: BinaryIO | None) -> Inventory:
    """Read and route without sending or printing anything; count what the inputs hold. A ledger
    that exists is read: what Courier accepted before counts as already sent."""
    router = _router(options)
    inventory = Inventory(links=router.link_counts)
    ledger = _open_ledger(options)
    try:
        with _sigterm_as_interrupt([]):
            for outcome in _outcomes(options, stdin, ledger, router=router):
                inventory.add(outcome)
    finally:
        inventory.close()
        if ledger is not None:
            ledger.close()
    return inventory


SEND_SWITCH_INTERVAL = 0.0005
"""Seconds a thread holds the GIL before another may take it, while sending (Python's default: 5 ms):
shorter slices let the event loop handle an answer while the reader thread parses, instead of
waiting for the reader's slice to end (docs/benchmarks.md, seventh pass)."""


@contextlib.contextmanager
def _short_gil_slices() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SEND_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@contextlib.contextmanager
def _sigterm_as_interrupt(signals: list[str]) -> Iterator[None]:
    """In a dry run, SIGTERM stops like Ctrl-C does, so the counts are still shown; ``signals`` gets
    the name of the one that came."""

    def interrupt(signum: int, frame: object) -> None:
        signals.append("SIGTERM")
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when the ``fast`` extra is installed, else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _send(
    options: RunOptions,
    outcomes: Iterator[Outcome | Note],
    outputs: _Outputs,
    result: RunResult,
    *,
    meter: ReadMeter,
    on_signal: Callable[[int, str], None],
) -> None:
    import asyncio

    from segroute import delivery  # aiohttp loads only when something is sent

    assert options.api_key is not None and options.delivery is not None
    stop = asyncio.Event()
    stats = delivery.DeliveryStats()
    signals = 0

    def stop_on_signal(signum: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        stats.stop("SIGTERM" if signum == signal.SIGTERM else "SIGINT")
        stop.set()
        on_signal(signals, signum.name)

    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop_on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no support
            pass

    def show_progress() -> None:
        throttle = stats.throttle
        outputs.display.progress(
            Progress(
                stats.read,
                stats.requests_done,
                stats.failed,
                stats.retries,
                time.monotonic() - stats.started,
                throttled=0 if throttle is None else throttle.throttled_count,
                concurrency=0 if throttle is None else throttle.concurrency,
                max_concurrency=0 if throttle is None else throttle.max_concurrency,
                pace=None if throttle is None else throttle.rate,
                read_bytes=meter.position,
                total_bytes=meter.total,
                already_sent=stats.already_sent,
            )
        )

    async def tick() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            show_progress()

    before_send = None
    tasks = [tick()]
    ledger = outputs.ledger
    if ledger is not None:
        ttl = options.delivery.idempotency_ttl or DEFAULT_KEY_LIFETIME

        def before_send(request: Request, event: Event) -> None:
            ledger.intend(options.base_url, request, event, key_lifetime=ttl)

        async def commit_acceptances() -> None:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                ledger.flush_if_due()

        tasks.append(commit_acceptances())

    # One event never takes long to read from files in input order; a sort, a --since that skips
    # day folders, or a wait on a bucket can, and then the loop must stay free for Ctrl-C.
    read_inline = options.order == "input" and options.selection.since is None
    read_inline = read_inline and not any(map(is_url, options.inputs))
    timers = [asyncio.create_task(task) for task in tasks]
    try:
        async with delivery.open_session(options.api_key, options.delivery) as session:
            await delivery.deliver(
                outcomes,
                session=session,
                options=options.delivery,
                stop=stop,
                on_outcome=outputs.outcome,
                on_request=outputs.result,
                stats=stats,
                streaming="-" in options.inputs,
                read_inline=read_inline,
                before_send=before_send,
            )
    finally:
        for timer in timers:
            timer.cancel()
        for signum in installed:
            loop.remove_signal_handler(signum)
        result.stopped_by = stats.stopped_by
        result.stop_detail = stats.stop_detail
        result.input_read = stats.input_read
        result.failing_targets = dict(stats.failing_targets)
        result.throttled = stats.throttle.throttled_count if stats.throttle is not None else 0
        show_progress()  # the last word, however the send ended
