"""The command line: parse -> load -> call -> render -> exit. The only module that imports typer."""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, TypeVar

import typer
from typer.core import TyperCommand

from segroute import __version__, render, views
from segroute.errors import ConfigError, ExitCode, OutputError, SegrouteError, UsageError
from segroute.health import DEFAULT_GIVE_UP_AFTER

# Heavy modules (pydantic, aiohttp, the readers) are imported inside each command, to keep --help
# and start-up fast.
if TYPE_CHECKING:
    from rich.console import Console

    from segroute.config import ConfigFile
    from segroute.ledger import Ledger
    from segroute.runner import RunOptions, RunResult
    from segroute.selection import Selection, Shard
    from segroute.summary import Summary

__all__ = [
    "app",
    "main",
]

T = TypeVar("T")


class _Command(TyperCommand):
    """A command whose usage line names a required argument bare (``OUTPUT``), as man pages do,
    where typer writes ``{OUTPUT}``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [piece.replace("{", "").replace("}", "") for piece in super().collect_usage_pieces(ctx)]


app = typer.Typer(
    name="segroute",
    add_completion=False,
    # Tracebacks that show local variables could show the API key.
    pretty_exceptions_enable=False,
    # Plain help, as git and gh print theirs: paragraphs wrapped to the terminal, metavars as words.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


class RequestFormat(enum.StrEnum):
    """How ``send --dry-run`` shows the requests."""

    text = "text"
    jsonl = "jsonl"


class Region(enum.StrEnum):
    """Courier's regions."""

    us = "us"
    eu = "eu"


class ListFormat(enum.StrEnum):
    """How ``links``, ``inspect`` and ``ledger`` show what they found: ``text`` (tables) for a person,
    ``json`` for a script, as ``send -o`` says ``text`` or ``jsonl``. ``table``: ``text``'s old name."""

    text = "text"
    json = "json"
    table = "table"


class Via(enum.StrEnum):
    """How events reach Courier: by the config's links, or through Courier's Segment intake."""

    links = "links"
    segment = "segment"


class Order(enum.StrEnum):
    """The order events are replayed in."""

    input = "input"
    timestamp = "timestamp"


class Shell(enum.StrEnum):
    """Shells `completion` writes a script for."""

    bash = "bash"
    zsh = "zsh"
    fish = "fish"


COMPLETE_VAR = "_SEGROUTE_COMPLETE"
"""Set by a completion script when the shell asks segroute what may come next."""


class FailOn(enum.StrEnum):
    """What else makes a run exit 1."""

    unlinked = "unlinked"
    rejected = "rejected"


_SELECT = "Selecting events"
_RESUME = "Resuming and sharding"


def _opt(*names: str, text: str, panel: str | None = None, **kwargs: Any) -> Any:
    """An option whose help ``text`` says its default, if it has one that matters."""
    return typer.Option(*names, help=text, show_default=False, rich_help_panel=panel, **kwargs)


InputsArgument = Annotated[
    list[str] | None,
    typer.Argument(metavar="INPUT", hidden=True, show_default=False),  # the docstrings say what it is
]
ConfigOption = Annotated[
    str | None,
    _opt(
        "--config",
        "-c",
        metavar="FILE",
        text="Config file. [default: $SEGROUTE_CONFIG, else ./segroute.toml]",
    ),
]
_LEDGER_DEFAULT = "[default: $SEGROUTE_LEDGER, else segroute-ledger.sqlite3 beside the config]"
LedgerOption = Annotated[Path | None, _opt("--ledger", metavar="FILE", text=f"The ledger. {_LEDGER_DEFAULT}")]
ListOutputOption = Annotated[
    ListFormat,
    typer.Option("--output", "-o", metavar="text|json", help="text (tables), or json for scripts."),
]
TypeOption = Annotated[
    list[str] | None,
    _opt("--type", metavar="TYPE", text="Only events of this type (repeatable).", panel=_SELECT),
]
EventOption = Annotated[
    list[str] | None,
    _opt(
        "--event",
        metavar="NAME",
        text="Only track events with this name; * and ? glob (repeatable).",
        panel=_SELECT,
    ),
]
UserOption = Annotated[
    list[str] | None,
    _opt(
        "--user", metavar="ID", text="Only events of this userId or anonymousId (repeatable).", panel=_SELECT
    ),
]
SinceOption = Annotated[
    str | None,
    _opt(
        metavar="TIME",
        text="Only events at or after this time: a date (2026-01-31), ISO-8601 (2026-01-31T12:00:00Z), "
        "a time back from now (30m, 6h, 2d, 1w, '90 minutes', '2 days ago'), now, today or yesterday "
        "(midnight UTC). The event's timestamp, else originalTimestamp, else receivedAt. Whole day "
        "folders of a segment-logs archive received before it are not read.",
        panel=_SELECT,
    ),
]
UntilOption = Annotated[
    str | None,
    _opt(
        metavar="TIME",
        text="Only events before this time, in the forms --since takes; a date, today or yesterday "
        "means the end of that day.",
        panel=_SELECT,
    ),
]
ViaOption = Annotated[
    Via,
    typer.Option(
        metavar="links|segment",
        help="links: each linked track event invokes its automations and journeys, each identify merges "
        "traits, as the config's links say. segment: post each track, identify and group event as it "
        "is to Courier's Segment intake (POST /inbound/segment, where Segment's Courier (Actions) "
        "destination posts), so the links made in Courier's UI route it; the config's links play no "
        "part. That endpoint is not in Courier's public API reference.",
    ),
]
IgnoreIntegrationsOption = Annotated[
    bool,
    typer.Option(
        "--ignore-integrations",
        help='Also route events whose integrations object turns Courier off ("Courier": false, or '
        '"All": false without "Courier": true), which Segment would not deliver to Courier.',
    ),
]
LimitOption = Annotated[
    int | None, _opt(min=0, metavar="N", text="Stop after this many selected events.", panel=_SELECT)
]
SampleOption = Annotated[
    float | None,
    _opt(
        min=0.0,
        max=1.0,
        metavar="FRACTION",
        text="Keep this fraction of events, chosen by messageId: every run picks the same ones.",
        panel=_SELECT,
    ),
]


def _selection(
    types: list[str] | None,
    events: list[str] | None,
    users: list[str] | None,
    since: str | None,
    until: str | None,
    sample: float | None,
) -> Selection:
    from segroute.events import EVENT_TYPES
    from segroute.selection import Selection, parse_bound

    bounds: dict[str, int | None] = {}
    for option, text, end in (("--since", since, False), ("--until", until, True)):
        try:
            bounds[option] = None if text is None else parse_bound(text, end=end)
        except ValueError as exc:
            raise UsageError(f"{option}: {exc}") from None
    unknown = sorted(set(types or ()) - EVENT_TYPES)
    if unknown:
        raise UsageError(f"--type {unknown[0]!r}: not a Segment type ({', '.join(sorted(EVENT_TYPES))})")
    return Selection(
        types=frozenset(types or ()),
        events=tuple(events or ()),
        users=frozenset(users or ()),
        since=bounds["--since"],
        until=bounds["--until"],
        sample=sample,
    )


@contextmanager
def _boundary() -> Iterator[None]:
    """The one place errors become a message on stderr and an exit code."""
    try:
        yield
    except SegrouteError as exc:
        if isinstance(exc, OutputError):
            _discard_stdout()  # what was written is incomplete, and the last flush would fail again
        render.show_error(render.stderr_console(), str(exc))
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:
        # The reader of stdout went away (`segroute ... | head`): stop quietly, as Unix tools do.
        _discard_stdout()
        raise typer.Exit(ExitCode.OK) from None
    except KeyboardInterrupt:
        render.show_error(render.stderr_console(), "interrupted")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except OSError as exc:  # the last resort, for a failure no part of segroute named
        where = f"{exc.filename}: " if exc.filename else ""
        render.show_error(render.stderr_console(), f"{where}{exc.strerror or exc}")
        raise typer.Exit(ExitCode.FAILED) from None


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what could not be written is quiet."""
    if sys.stdout is not None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segroute {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Replay and route Segment events into the Courier API.

    Examples:

    \b
      segroute link "Checkout Complete" order-confirmation
      segroute send events.jsonl --dry-run
      segroute send segment-logs/ --since 2d --failed failed.jsonl
      segroute inspect archive.tar.gz --fail-on unlinked
    """
    if ctx.invoked_subcommand is None:  # `segroute` alone: the help, which is not an error
        typer.echo(ctx.get_help())
        raise typer.Exit()


@app.command(cls=_Command)
def send(
    ctx: typer.Context,
    inputs: InputsArgument = None,
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the requests instead of sending them; needs no API key.")
    ] = False,
    output: Annotated[
        RequestFormat | None,
        _opt(
            "--output",
            "-o",
            metavar="text|jsonl",
            text="Per request on stdout: jsonl (one JSON object per line) or text. [default: jsonl when "
            "stdout is piped; on a terminal, a dry run prints text and a send nothing]",
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No notes, progress or summary; rejections, failures and errors still show."
        ),
    ] = False,
    api_url: Annotated[
        str | None,
        _opt(
            metavar="URL",
            text="Courier API base URL. [default: $COURIER_BASE_URL, else the config, else https://api.courier.com]",
        ),
    ] = None,
    region: Annotated[
        Region | None,
        _opt(metavar="us|eu", text="Courier region: eu is https://api.eu.courier.com. Not with --api-url."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=512, metavar="N", help="Requests in flight at once.")
    ] = 8,
    rate: Annotated[
        float | None,
        _opt(min=0.001, metavar="N", text="At most this many requests per second. [default: no cap]"),
    ] = None,
    max_retries: Annotated[
        int,
        typer.Option(
            min=0, max=100, metavar="N", help="Retries per request (network errors, timeouts, 408, 429, 5xx)."
        ),
    ] = 5,
    timeout: Annotated[
        float, typer.Option(min=0.1, metavar="SECONDS", help="Seconds one attempt may take.")
    ] = 30.0,
    max_time: Annotated[
        float,
        typer.Option(
            min=0.1, metavar="SECONDS", help="Seconds one request may take, retries and waits included."
        ),
    ] = 120.0,
    failed: Annotated[
        Path | None,
        _opt(
            metavar="FILE",
            text="Write every event that did not go out to this file (- for stdout), one per line, to "
            "replay with send.",
        ),
    ] = None,
    report: Annotated[
        Path | None, _opt(metavar="FILE", text="Write a JSON report of the run to this file (- for stdout).")
    ] = None,
    order: Annotated[
        Order,
        typer.Option(
            metavar="input|timestamp",
            help="input: as read. timestamp: in event time (ties by receivedAt, then messageId), sorted "
            "on disk in bounded memory; nothing is sent until every input is read.",
        ),
    ] = Order.input,
    fail_on: Annotated[
        list[FailOn] | None,
        _opt(
            metavar="unlinked", text="Also exit 1 when this happens: unlinked (a track event no link names)."
        ),
    ] = None,
    ledger: Annotated[
        Path | None,
        _opt(
            metavar="FILE",
            text="The delivery ledger: requests Courier accepted are recorded, and never sent again. "
            + _LEDGER_DEFAULT,
            panel=_RESUME,
        ),
    ] = None,
    no_ledger: Annotated[
        bool,
        typer.Option(
            "--no-ledger",
            help="Keep no ledger: only Courier's idempotency keys (24 h) stop a second send.",
            rich_help_panel=_RESUME,
        ),
    ] = False,
    shard: Annotated[
        str | None,
        _opt(
            metavar="K/N",
            text="K/N: send only the K-th of N shares of the events (K from 1), split by user, so N "
            "machines together send each event once.",
            panel=_RESUME,
        ),
    ] = None,
    idempotency_ttl: Annotated[
        str | None,
        _opt(
            metavar="DURATION",
            text="Ask Courier to keep each Idempotency-Key this long (24h to 365d, e.g. 30d), for a "
            "replay that spans days. [default: Courier's 24 hours]",
            panel=_RESUME,
        ),
    ] = None,
    resend_uncertain: Annotated[
        bool,
        typer.Option(
            "--resend-uncertain",
            help="Also send requests an earlier run sent and was killed before Courier's answer was "
            "recorded, once their Idempotency-Keys may have expired (Courier may have acted on them).",
            rich_help_panel=_RESUME,
        ),
    ] = False,
    give_up_after: Annotated[
        float,
        typer.Option(
            min=1.0,
            metavar="SECONDS",
            help="Stop (exit 75) when Courier has failed this many seconds with no answer: unreachable, "
            "timing out, or only 5xx. Resume later with the same command.",
        ),
    ] = DEFAULT_GIVE_UP_AFTER,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Exit 0 when the inputs hold no record at all (else 1).")
    ] = False,
    via: ViaOption = Via.links,
    ignore_integrations: IgnoreIntegrationsOption = False,
    types: TypeOption = None,
    events: EventOption = None,
    users: UserOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: LimitOption = None,
    sample: SampleOption = None,
) -> None:
    """Route Segment events to Courier: each linked track event invokes its automations, each identify
    merges traits into the profile.

    INPUT: files, folders or bundles of Segment events, s3:// URLs (an object, or a prefix read as a
    folder; needs the s3 extra), or - for stdin (the default when piped): JSON, NDJSON, JSON arrays,
    /v1/batch bodies, gzip'd or not, tar or zip bundles, Segment's segment-logs archive folders, or
    folders of any of them. The API key comes from $COURIER_API_KEY (or $COURIER_AUTH_TOKEN).

    Examples:

    \b
      segroute send events.jsonl --dry-run
      segroute send segment-logs/ --since 6h --failed failed.jsonl
      segroute send s3://my-bucket/segment-logs/ --since 2d --dry-run
      segroute send events.jsonl --shard 2/4 --ledger shard-2.sqlite3
      cat events.jsonl | segroute send - --dry-run -o jsonl | jq .url
    """
    from segroute import config as settings
    from segroute.runner import run

    with _boundary():
        names = _input_names(inputs)
        loaded = _load(config)
        if region is not None and api_url:
            raise UsageError("--region and --api-url both name the API: give one")
        base_url = settings.resolve_api_url(
            api_url or (region and settings.REGION_URLS[region]),
            os.environ,
            loaded.config,
            source="--region" if region else "--api-url",
        )
        if FailOn.rejected in (fail_on or ()):
            raise UsageError("--fail-on rejected is how send always works; it takes only unlinked")
        if no_ledger and ledger is not None:
            raise UsageError("--ledger and --no-ledger: give one")
        to_stdout = [name for name, path in (("--failed", failed), ("--report", report)) if path == STDOUT]
        if output is not None:
            to_stdout.insert(0, "--output")
        if len(to_stdout) > 1:
            raise UsageError(f"{' and '.join(to_stdout)} both write to stdout: give all but one a file")
        selection = _selection(types, events, users, since, until, sample)
        shard_share = _parsed("--shard", shard, _parse_shard)
        ttl = _parsed("--idempotency-ttl", idempotency_ttl, settings.parse_key_lifetime)
        api_key = delivery = None
        if not dry_run:
            api_key = settings.resolve_api_key(os.environ, base_url)
            if not loaded.exists and via is Via.links:
                raise ConfigError(
                    f"no {loaded.path} in {Path.cwd()}: a send without links skips every track event. "
                    f"Name the config with -c PATH or ${settings.CONFIG_ENV}, or create it here with: "
                    f"segroute link EVENT AUTOMATION (an empty {loaded.path} sends identify events only)"
                )
            from segroute.delivery import DeliveryOptions  # aiohttp: only when something is sent

            delivery = DeliveryOptions(
                concurrency=concurrency,
                rate=rate,
                max_retries=max_retries,
                attempt_timeout=timeout,
                request_deadline=max_time,
                idempotency_ttl=ttl,
                give_up_after=give_up_after,
            )
        shared = _run_options(
            names,
            loaded,
            base_url,
            selection,
            dry_run=dry_run,
            limit=limit,
            ledger=ledger,
            via=via,
            ignore_integrations=ignore_integrations,
        )
        options = dataclasses.replace(
            shared,
            api_key=api_key,
            delivery=delivery,
            failed_path=_file_or_stdout(failed),
            report_path=_file_or_stdout(report),
            order=order.value,
            shard=shard_share,
            ledger_path=None if no_ledger else shared.ledger_path,
            resend_uncertain=resend_uncertain,
        )
        # Made when something is shown: a quiet run with nothing to say never loads rich.
        err = functools.cache(render.stderr_console)
        if not loaded.exists and not quiet and via is Via.links:
            render.show_message(err(), f"note: no {loaded.path} here, so no links: track events are skipped")
        display = _send_display(
            output, dry_run=dry_run, stdout_free=not to_stdout, quiet=quiet, err=err, streaming="-" in names
        )
        result = run(options, display, stdin=_stdin(), on_signal=functools.partial(_on_signal, quiet=quiet))
        code = _show_send_result(ctx, result, options, loaded, err=err, failed=failed, quiet=quiet)
        if code is ExitCode.OK and result.summary.read == 0 and not allow_empty:
            render.show_warning(
                err(),
                f"no records read from {' '.join(names)}: nothing to send. An empty folder may be an "
                "unfinished copy; pass --allow-empty when an empty input is expected",
            )
            code = ExitCode.FAILED
        if code is ExitCode.OK and _fails_on(fail_on, result.summary):
            code = ExitCode.FAILED
        if result.error is not None:
            raise result.error
    raise typer.Exit(code)


def _run_options(
    names: list[str],
    loaded: ConfigFile,
    base_url: str,
    selection: Selection,
    *,
    dry_run: bool,
    limit: int | None,
    ledger: Path | None,
    via: Via,
    ignore_integrations: bool,
) -> RunOptions:
    """What `send` and `inspect` share: the inputs, the config, the API, the selection, the ledger,
    and how events are routed."""
    from segroute.ledger import default_path as default_ledger
    from segroute.runner import RunOptions

    return RunOptions(
        names,
        loaded.config,
        base_url,
        dry_run,
        selection=selection,
        limit=limit,
        ledger_path=ledger or default_ledger(loaded.path, os.environ),
        via=via.value,
        ignore_integrations=ignore_integrations,
    )


def _send_display(
    output: RequestFormat | None,
    *,
    dry_run: bool,
    stdout_free: bool,
    quiet: bool,
    err: Callable[[], Console],
    streaming: bool,
) -> render.RunDisplay:
    """What a send shows: the requests (a dry run) or results on stdout, the rest on stderr.

    Unless ``--output`` says, or stdout is taken (``--report -``): piped, both print JSON lines; on a
    terminal, a dry run prints its requests as text and a send, whose progress shows, nothing."""
    if output is None and stdout_free:
        if sys.stdout is not None and sys.stdout.isatty():
            output = RequestFormat.text if dry_run else None
        elif sys.stdout is not None or dry_run:  # a send with stdout closed has nothing to print
            output = RequestFormat.jsonl
    if output is not None and sys.stdout is None:
        raise UsageError("stdout is closed: there is nowhere to print the requests")
    return render.RunDisplay(
        output=output.value if output else None,
        stdout=sys.stdout,
        err=err,
        quiet=quiet,
        live_progress=not quiet and err().is_terminal,
        flush_each=streaming,  # events piped in as they happen are shown as they are read
    )


def _show_send_result(
    ctx: typer.Context,
    result: RunResult,
    options: RunOptions,
    loaded: ConfigFile,
    *,
    err: Callable[[], Console],
    failed: Path | None,
    quiet: bool,
) -> ExitCode:
    """The summary, the files, and how to resume or replay; the exit code the run earned."""
    # The command that picks up where this run ended: every choice spelled out, so that it goes
    # to the same API with the same ledger wherever the environment differs.
    resolved: dict[str, object] = {"api_url": options.base_url, "region": None}
    if loaded.exists:
        resolved["config"] = str(loaded.path)
    if options.ledger_path is not None:
        resolved["ledger"] = str(options.ledger_path)
    names = options.inputs
    resume = _command_line(ctx, names, resolved)
    replay = None
    if failed is not None and failed != STDOUT and result.input_read:
        replay = _command_line(ctx, [str(failed)], {**resolved, **dict.fromkeys(_NOT_FOR_REPLAY)})
    views.show_run_end(
        err,
        result,
        title="dry run: nothing was sent" if options.dry_run else f"run against {options.base_url}",
        failed=failed,
        replay=replay,
        resume=resume,
        quiet=quiet,
        stdin="-" in names,
    )
    return _STOP_CODES.get(result.stopped_by or "", result.summary.exit_code)


def _fails_on(fail_on: list[FailOn] | None, summary: Summary) -> bool:
    """Whether ``--fail-on`` finds what it names; what it found is shown on stderr."""
    failing = False
    if FailOn.unlinked in (fail_on or ()) and summary.unlinked:
        views.show_unlinked(render.stderr_console(), summary.unlinked)
        failing = True
    rejected = summary.count("rejected")
    if FailOn.rejected in (fail_on or ()) and rejected:
        render.show_error(render.stderr_console(), f"{rejected:,} records rejected (--fail-on rejected)")
        failing = True
    return failing


_NOT_FOR_REPLAY = (
    *("types", "events", "users", "since", "until", "limit", "sample", "shard", "order"),
    *("failed", "report", "fail_on"),
)
"""Options of a run that a replay of its failure file leaves out: the file holds exactly the events to
send, and the replay writes files of its own."""


def _command_line(ctx: typer.Context, inputs: list[str], replace: dict[str, object]) -> str:
    """The command line of this command with other inputs, and options replaced (None drops one),
    every option as its long name and only those that differ from their defaults."""
    words = ["segroute", ctx.info_name or "send", *inputs]
    for param in ctx.command.params:
        name = param.name
        if param.param_type_name == "argument" or name is None:
            continue
        value = replace[name] if name in replace else ctx.params.get(name)
        if value is None or value is False or value == [] or (name not in replace and value == param.default):
            continue
        flag = max(param.opts, key=len)
        if value is True:
            words.append(flag)
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, enum.Enum):
                item = item.value
            words += [flag, f"{item:g}" if isinstance(item, float) else str(item)]
    return shlex.join(words)


STDOUT = Path("-")
"""What --failed and --report take to mean stdout."""


def _file_or_stdout(path: Path | None) -> Path | BinaryIO | None:
    if path != STDOUT:
        return path
    if sys.stdout is None:
        raise UsageError("stdout is closed: name a file instead of -")
    return sys.stdout.buffer


def _parsed(option: str, text: str | None, parse: Callable[[str], T]) -> T | None:
    """A value of an option parsed by the library, None when not given; ValueError -> UsageError."""
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}") from None


def _parse_shard(text: str) -> Shard:
    from segroute.selection import parse_shard

    return parse_shard(text)


def _on_signal(count: int, name: str, *, quiet: bool) -> None:
    """First Ctrl-C (or SIGTERM): stop cleanly; the second: quit at once."""
    if count > 1:
        os._exit(ExitCode.TERMINATED if name == "SIGTERM" else ExitCode.INTERRUPTED)
    if quiet:
        return
    again = "Ctrl-C again" if name == "SIGINT" else "a second SIGTERM"
    render.show_message(
        render.stderr_console(),
        f"stopping ({name}): no more events are read; requests in flight get a moment to finish "
        f"({again} quits at once)",
    )


_STOP_CODES = {
    "SIGINT": ExitCode.INTERRUPTED,
    "SIGTERM": ExitCode.TERMINATED,
    "unavailable": ExitCode.TEMPFAIL,
}


def _stdin() -> BinaryIO | None:
    from segroute.sources import open_stdin

    return open_stdin(sys.stdin)


def _input_names(inputs: list[str] | None) -> list[str]:
    from segroute.sources import check_inputs

    if not inputs:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no input: name files or folders, or pipe events to stdin")
        inputs = ["-"]
    check_inputs(inputs)
    return inputs


def _load(option: str | None, *, must_exist: bool | None = None) -> ConfigFile:
    """The config; by default a missing file is an error only when the user named it."""
    from segroute import config as settings

    path, named = settings.config_path(option, os.environ)
    return settings.load_config(path, must_exist=named if must_exist is None else must_exist)


@app.command(cls=_Command)
def inspect(
    inputs: InputsArgument = None,
    config: ConfigOption = None,
    output: ListOutputOption = ListFormat.text,
    fail_on: Annotated[
        list[FailOn] | None,
        typer.Option(
            metavar="unlinked|rejected",
            help="Exit 1 when this is found: unlinked (a track event no link names), rejected (a record "
            "that is not a valid event).",
            show_default=False,
        ),
    ] = None,
    ledger: LedgerOption = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="The Courier API the ledger is read for. [default: as send: $COURIER_BASE_URL, else the "
            "config, else https://api.courier.com]",
            show_default=False,
        ),
    ] = None,
    via: ViaOption = Via.links,
    ignore_integrations: IgnoreIntegrationsOption = False,
    types: TypeOption = None,
    events: EventOption = None,
    users: UserOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: LimitOption = None,
    sample: SampleOption = None,
) -> None:
    """Tell what inputs hold, sending nothing: events by type and name, users, time ranges, rejected
    records, and which track events the config links and the requests a send would make.

    INPUT: files, folders or bundles of Segment events, s3:// URLs (an object, or a prefix read as a
    folder; needs the s3 extra), or - for stdin (the default when piped).

    Examples:

    \b
      segroute inspect events.jsonl
      segroute inspect segment-logs/ --since 2026-01-01 --fail-on unlinked
      segroute inspect s3://my-bucket/segment-logs/ --since 2026-01-01
      segroute inspect archive.tar.gz -o json | jq .events
    """
    from segroute import config as settings
    from segroute.runner import take_inventory

    with _boundary():
        names = _input_names(inputs)
        loaded = _load(config)
        base_url = settings.resolve_api_url(api_url, os.environ, loaded.config, source="--api-url")
        selection = _selection(types, events, users, since, until, sample)
        options = _run_options(
            names,
            loaded,
            base_url,
            selection,
            dry_run=True,
            limit=limit,
            ledger=ledger,
            via=via,
            ignore_integrations=ignore_integrations,
        )
        if not loaded.exists and via is Via.links:
            note = f"note: no {loaded.path} here, so no links: every track event shows as unlinked"
            render.show_message(render.stderr_console(), note)
        inventory = take_inventory(options, stdin=_stdin())
        found = inventory.as_dict(loaded.config)
        if output is ListFormat.json:
            render.write_document(sys.stdout, views.pretty_json(found))
        else:
            views.show_inventory(render.stdout_console(), found, selection=selection.describe())
        code = ExitCode.FAILED if _fails_on(fail_on, inventory.summary) else ExitCode.OK
    raise typer.Exit(code)


DryRunEditOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the change to the config as a diff, and write nothing.")
]


@app.command(cls=_Command)
def link(
    event: Annotated[str, typer.Argument(metavar="EVENT", hidden=True)],
    template: Annotated[str, typer.Argument(metavar="AUTOMATION", hidden=True)],
    journey: Annotated[
        bool, typer.Option("--journey", help="AUTOMATION names a journey, invoked instead of an automation.")
    ] = False,
    brand: Annotated[
        str | None, typer.Option(metavar="BRAND", help="The brand the automation runs with.")
    ] = None,
    when: Annotated[
        str | None,
        _opt(
            metavar="JQ",
            text="Fire only for events this jq expression holds for (its first output is not false or "
            "null), e.g. '.properties.revenue > 100'.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        _opt(
            metavar="JQ",
            text="The request's data: this jq expression's output, an object, e.g. '.properties'. "
            "[default: the whole event]",
        ),
    ] = None,
    recipient: Annotated[
        str | None,
        _opt(metavar="JQ", text="Who the request is for, a jq expression. [default: .userId]"),
    ] = None,
    profile: Annotated[
        str | None,
        _opt(
            metavar="JQ",
            text="A profile for Courier to merge into the user's, a jq expression that gives an object, "
            "e.g. '{email: .context.traits.email}'. [default: none]",
        ),
    ] = None,
    config: ConfigOption = None,
    dry_run: DryRunEditOption = False,
) -> None:
    """Link a track event to an automation or a journey; creates the config if it is missing.

    EVENT is the Segment track event name, matched exactly; AUTOMATION the Courier automation
    template ID or alias (with --journey, the journey's), which must exist in Courier. A link may
    fire only when a condition holds, and may map what it sends, each with a jq expression. Linking
    the same event to the same automation again updates the link to what the command says. The
    config is edited in place and atomically: its comments, layout and settings are kept, and a new
    link is written in the style of the others.

    Examples:

    \b
      segroute link "Checkout Complete" order-confirmation
      segroute link "Checkout Complete" loyalty-points --brand storefront-brand
      segroute link "Order Completed" order-journey --journey
      segroute link "Order Completed" big-order --when '.properties.revenue > 100'
      segroute link "Signed Up" welcome-flow --dry-run     # the change, as a diff
    """
    from segroute import config as settings

    with _boundary():
        loaded = _load(config, must_exist=False)
        options = {"brand": brand, "when": when, "data": data, "recipient": recipient, "profile": profile}
        new = settings.make_link(event, template, journey=journey, **options)
        document = settings.config_document(loaded)
        change = settings.add_link(document, new)
        err = render.stderr_console()
        what = f"{event!r} -> {_target_words(template, journey=journey)}"
        if change == "unchanged":
            render.show_message(err, f"already linked: {what}; nothing changed")
            return
        if dry_run:
            _show_config_change(loaded, document, err)
            return
        settings.save_config(loaded.path, document)
        verb = "linked" if change == "added" else "updated the link"
        created = "" if loaded.exists else f" (created {loaded.path})"
        render.show_message(err, f"{verb} {what} in {loaded.path}{created}")


def _target_words(template: str, *, journey: bool) -> str:
    """``'welcome-flow'``, or ``journey 'order-journey'``."""
    return f"journey {template!r}" if journey else repr(template)


def _show_config_change(loaded: ConfigFile, document: Mapping[str, Any], err: Console) -> None:
    """What an edit would do to the config, as a diff on stdout; nothing is written."""
    from segroute import config as settings

    after = settings.config_text(loaded.path, document)
    render.write_document(sys.stdout, views.config_diff(str(loaded.path), loaded.text, after))
    render.show_message(err, f"dry run: nothing was written to {loaded.path}")


@app.command(cls=_Command)
def unlink(
    event: Annotated[str, typer.Argument(metavar="EVENT", hidden=True)],
    template: Annotated[str | None, typer.Argument(metavar="AUTOMATION", hidden=True)] = None,
    journey: Annotated[
        bool, typer.Option("--journey", help="AUTOMATION names a journey: unlink the event from it.")
    ] = False,
    config: ConfigOption = None,
    dry_run: DryRunEditOption = False,
) -> None:
    """Remove an event's link to one automation or journey, or all of its links.

    EVENT is the track event name; AUTOMATION the automation to unlink (with --journey, the
    journey), or, left out, every link of the event. The config is edited in place and
    atomically: the links' tables go, and the rest of the file, comments included, stays as it is.

    Examples:

    \b
      segroute unlink "Checkout Complete" loyalty-points
      segroute unlink "Order Completed" order-journey --journey
      segroute unlink "Checkout Complete"               # every link of the event
      segroute unlink "Signed Up" welcome-flow --dry-run
    """
    from segroute import config as settings

    with _boundary():
        if template == "":
            raise UsageError("AUTOMATION is empty: name one, or leave it out to unlink every link")
        if journey and template is None:
            raise UsageError("--journey names no journey: give AUTOMATION, the journey to unlink")
        loaded = _load(config, must_exist=True)
        document = settings.config_document(loaded)
        kind = "journey" if journey else "automation"
        removed = settings.remove_links(document, event, template, kind=kind)
        err = render.stderr_console()
        what = f"{event!r} -> {_target_words(template, journey=journey)}" if template else f"{event!r}"
        if not removed:
            other = "automation" if journey else "journey"
            hint = next(
                (
                    f" (it links to the {other} {template!r}: {'leave out' if journey else 'add'} --journey)"
                    for link in loaded.config.links
                    if link.event == event and link.kind == other and link.template == template
                ),
                "",
            )
            render.show_message(err, f"no link {what} in {loaded.path}{hint}; nothing changed")
            return
        if dry_run:
            _show_config_change(loaded, document, err)
            return
        settings.save_config(loaded.path, document)
        links = "its link" if removed == 1 else f"its {removed} links"
        done = f"unlinked {what}" if template else f"unlinked {what}: {links}"
        render.show_message(err, f"{done} in {loaded.path}")


@app.command(cls=_Command)
def links(
    config: ConfigOption = None,
    output: ListOutputOption = ListFormat.text,
) -> None:
    """List the links: event -> automation or journey, with their brands, conditions and mappings.

    Examples:

    \b
      segroute links
      segroute links -c staging.toml
      segroute links --output json | jq '.[].automation'
    """
    with _boundary():
        loaded = _load(config)
        if output is ListFormat.json:
            render.write_document(sys.stdout, views.links_json(loaded.config.links))
        else:
            missing = None if loaded.exists else str(Path.cwd())
            views.show_links(
                render.stdout_console(), loaded.config.links, source=str(loaded.path), missing_in=missing
            )


ledger_app = typer.Typer(
    name="ledger",
    invoke_without_command=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
app.add_typer(ledger_app)


def _ledger_path(option: Path | None, config: str | None) -> Path:
    from segroute import config as settings
    from segroute.ledger import default_path as default_ledger

    if option is not None:
        return option
    path, _ = settings.config_path(config, os.environ)
    return default_ledger(path, os.environ)


@ledger_app.callback()
def ledger_show(
    context: typer.Context,
    ledger: LedgerOption = None,
    config: ConfigOption = None,
    output: ListOutputOption = ListFormat.text,
) -> None:
    """Show, export and merge the delivery ledger; alone, what it holds: accepted requests per
    automation and day, and the last run.

    Examples:

    \b
      segroute ledger
      segroute ledger --ledger shard-1.sqlite3
      segroute ledger -o json | jq .runs
    """
    if context.invoked_subcommand is not None:
        return
    from segroute.ledger import Ledger

    with _boundary():
        with Ledger(_ledger_path(ledger, config), create=False) as opened:
            summary = opened.summary()
        if output is ListFormat.json:
            render.write_document(sys.stdout, views.pretty_json(summary.as_dict()))
        else:
            views.show_ledger(render.stdout_console(), summary.as_dict())


@ledger_app.command("export", cls=_Command)
def ledger_export(ledger: LedgerOption = None, config: ConfigOption = None) -> None:
    """Every accepted request as JSONL on stdout, oldest first.

    Examples:

    \b
      segroute ledger export > accepted.jsonl
      segroute ledger export --ledger shard-1.sqlite3 | wc -l
      segroute ledger export | jq -r .messageId | sort -u > sent-ids.txt
    """
    from segroute.ledger import Ledger

    _print_ledger_rows(ledger, config, Ledger.export)


@ledger_app.command("unsettled", cls=_Command)
def ledger_unsettled(ledger: LedgerOption = None, config: ConfigOption = None) -> None:
    """Requests sent and not known to be accepted, as JSONL on stdout, oldest first: "uncertain" ones
    (a run was killed before Courier's answer was recorded) and "stored_failure" ones (Courier
    answered 500; the next run sends them under a new key).

    Examples:

    \b
      segroute ledger unsettled > unsettled.jsonl
      segroute ledger unsettled --ledger shard-1.sqlite3 | jq .state
      segroute ledger unsettled | wc -l
    """
    from segroute.ledger import Ledger

    _print_ledger_rows(ledger, config, Ledger.unsettled)


def _print_ledger_rows(
    ledger: Path | None, config: str | None, rows: Callable[[Ledger], Iterator[dict[str, Any]]]
) -> None:
    """One of the ledger's listings, a JSON object a line on stdout."""
    from segroute.ledger import Ledger

    with _boundary():
        with Ledger(_ledger_path(ledger, config), create=False) as opened:
            render.write_jsonl(sys.stdout, rows(opened))


@ledger_app.command("merge", cls=_Command)
def ledger_merge(
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", hidden=True)],
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT", hidden=True)],
) -> None:
    """Combine ledgers, one per shard of a sharded replay, into one.

    OUTPUT is created if missing; INPUT is each shard's ledger.

    Examples:

    \b
      segroute ledger merge all.sqlite3 shard-1.sqlite3 shard-2.sqlite3
      segroute ledger merge all.sqlite3 shard-*.sqlite3
      segroute ledger --ledger all.sqlite3      # what the merged ledger holds
    """
    from segroute.merging import merge

    with _boundary():
        for path in inputs:
            if not path.exists():
                raise UsageError(f"{path}: no such ledger")
        added, runs = merge(output, inputs)
        render.show_message(
            render.stderr_console(), f"{output}: {added:,} accepted requests and {runs:,} runs merged in"
        )


@app.command(cls=_Command)
def completion(
    shell: Annotated[Shell, typer.Argument(metavar="bash|zsh|fish", hidden=True)],
) -> None:
    """Print the script that completes segroute's commands, options and their values in a shell.

    Examples:

    \b
      eval "$(segroute completion bash)"    # in ~/.bashrc
      eval "$(segroute completion zsh)"     # in ~/.zshrc, after compinit
      segroute completion fish > ~/.config/fish/completions/segroute.fish
    """
    # typer's own scripts; typer offers them publicly only as --show-completion, for the shell it
    # detects. tests/test_cli.py runs the bash one in bash, so a typer that moves them fails there.
    from typer._completion_shared import get_completion_script

    with _boundary():
        script = get_completion_script(prog_name="segroute", complete_var=COMPLETE_VAR, shell=shell.value)
        render.write_document(sys.stdout, script.encode() + b"\n")


def main() -> None:
    """The console script's entry point."""
    if COMPLETE_VAR in os.environ:  # a shell asks what may come next: answer with typer's completion
        from typer._completion_classes import completion_init

        completion_init()
    try:
        # Named, not taken from argv[0]: `python -m segroute` is segroute too, in usage lines and in
        # the variable completion scripts set (COMPLETE_VAR).
        app(prog_name="segroute")
    except KeyboardInterrupt:  # before a command set up its own handling: nothing was read yet
        sys.exit(ExitCode.INTERRUPTED)
