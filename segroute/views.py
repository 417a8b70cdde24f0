"""What a command shows once it is done: the end of a run (summary, files, why it stopped), the
views of inspect, links and ledger, as tables for a person or JSON for a script, and the diff of a
``link --dry-run``.

As in `render`, rich loads with the first thing shown, not with this module.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import orjson

from segroute.names import display_name
from segroute.render import show_error, show_message, size

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from segroute.config import Link
    from segroute.runner import RunResult
    from segroute.summary import Summary

__all__ = [
    "MAX_UNLINKED_SHOWN",
    "config_diff",
    "how_much_read",
    "links_json",
    "pretty_json",
    "show_failing_targets",
    "show_files",
    "show_inventory",
    "show_ledger",
    "show_ledger_line",
    "show_links",
    "show_run_end",
    "show_stop",
    "show_summary",
    "show_uncertain",
    "show_unlinked",
]


def show_run_end(
    err: Callable[[], Console],
    result: RunResult,
    *,
    title: str,
    failed: Path | None,
    replay: str | None,
    resume: str,
    quiet: bool,
    stdin: bool,
) -> None:
    """What a send or dry run ends with on stderr: the summary, the targets given up, the files and
    the ledger (unless ``quiet``); then what was left uncertain, and why the run stopped early."""
    if not quiet:
        show_summary(err(), result.summary, title=title)
        show_failing_targets(err(), result.failing_targets, failed=failed)
        show_files(
            err(),
            result.failed_written,
            failed,
            result.report_path,
            unwritable=result.failed_unwritable,
            replay=replay,
            input_read=result.input_read,
        )
        if result.ledger_path is not None:
            sent_before = sum(n for (_, kind), n in result.summary.targets.items() if kind == "already_sent")
            show_ledger_line(
                err(),
                result.ledger_path,
                result.ledger_recorded,
                dry_run=result.dry_run,
                sent_before=sent_before,
            )
    uncertain = result.summary.outcomes.get(("skipped", "uncertain"), 0)
    if uncertain:
        show_uncertain(err(), uncertain, result.ledger_path, resume=resume)
    if result.stopped_by is not None and result.error is None:
        show_stop(
            err(),
            result.stopped_by,
            result.stop_detail,
            read=result.summary.read,
            read_bytes=result.read_bytes,
            total_bytes=result.total_bytes,
            input_read=result.input_read,
            resume=resume,
            stdin=stdin,
            ledger=result.ledger_path is not None,
        )


def _print_table(console: Console, table: Table) -> None:
    """A table: boxed on a terminal; piped, without rules, padding at the ends or trailing spaces,
    so grep, cut and diff read it as lines."""
    if console.is_terminal:
        console.print(table)
        return
    table.box = None
    table.show_edge = False
    table.pad_edge = False
    with console.capture() as captured:
        console.print(table)
    lines = [line.rstrip() for line in captured.get().splitlines()]
    console.file.write("".join(f"{line}\n" for line in lines if line))
    console.file.flush()


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
        table.add_row(Text(outcome), Text(reason), Text(f"{count:,}"))
    table.add_section()
    table.add_row("read", "", f"{summary.read:,}", style="bold")
    _print_table(console, table)
    if summary.targets or summary.missed:
        _print_table(console, _targets_table(summary))


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
    # A link that failed on events: how many, per target, whatever the reason (the problems say which).
    failed_on: Counter[str] = Counter()
    for (label, _), count in summary.missed.items():
        failed_on[label] += count
    table = Table(box=box.SIMPLE)
    table.add_column("target")
    for kind in kinds:
        table.add_column(_REQUEST_COLUMNS[kind], justify="right")
    if failed_on:
        table.add_column("link failed on", justify="right")
    labels = sorted({label for label, _ in summary.targets} | set(failed_on))
    for label in labels:
        cells = [f"{summary.targets[label, kind]:,}" for kind in kinds]
        cells += [f"{failed_on[label]:,}"] if failed_on else []
        table.add_row(Text(display_name(label)), *map(Text, cells))
    table.add_section()
    totals = [sum(n for (_, k), n in summary.targets.items() if k == kind) for kind in kinds]
    totals += [failed_on.total()] if failed_on else []
    table.add_row("total", *(f"{n:,}" for n in totals), style="bold")
    return table


def show_files(
    console: Console,
    failed_written: int | None,
    failed: object,
    report: object,
    *,
    unwritable: int = 0,
    replay: str | None = None,
    input_read: bool = True,
) -> None:
    """Where the failure file and the report went; how to replay the failure file, when every input
    was read (else the file holds only part of what did not go out: `show_stop` says how to resume)."""
    from rich.text import Text

    failed, report = _file_name(failed), _file_name(report)
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
        elif input_read:
            console.print(Text(f"{failed}: {failed_written:,} event{plural} that did not go out"))
        else:
            console.print(
                Text(
                    f"{failed}: {failed_written:,} event{plural} read that did not go out; the input was "
                    "not read to its end, so resume with the same command (below) rather than this file"
                )
            )
    if report is not None:
        console.print(Text(f"{report}: the report of this run"))


def _file_name(file: object) -> object:
    """A file as the end of a run names it: its path; ``stdout`` for the stream or ``-``."""
    if file is None or (isinstance(file, str | PurePath) and str(file) != "-"):
        return file
    return "stdout"


_STOPPED_BY = {
    "SIGINT": "stopped by Ctrl-C (SIGINT)",
    "SIGTERM": "stopped by SIGTERM",
    "unavailable": "stopped: Courier failed every attempt",
}


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


def show_ledger_line(
    console: Console, path: object, recorded: int, *, dry_run: bool, sent_before: int = 0
) -> None:
    """Where the ledger is, and what this run added to it (a dry run: what it left out for it)."""
    from rich.text import Text

    if dry_run:
        if sent_before:
            plural = "" if sent_before == 1 else "s"
            left_out = f"{sent_before:,} request{plural} it holds as accepted were left out"
        else:
            left_out = "it holds none of these requests as accepted"
        console.print(Text(f"{path}: the ledger, read: {left_out}"))
        return
    plural = "" if recorded == 1 else "s"
    console.print(Text(f"{path}: the ledger: {recorded:,} accepted request{plural} recorded this run"))


def show_links(
    console: Console, links: Sequence[Link], *, source: str, missing_in: str | None = None
) -> None:
    """The links as a table, or a hint when there are none (``missing_in``: the folder the config
    file was looked for in, when there is none)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from segroute.config import EXPRESSION_KEYS

    if missing_in is not None:
        console.print(Text(f"no {source} in {missing_in}; create it with: segroute link EVENT AUTOMATION"))
        return
    if not links:
        console.print(Text(f"no links in {source}; add one with: segroute link EVENT AUTOMATION"))
        return
    # The first three always; a journey, a condition or a mapping adds its column.
    columns = ["event", "automation", "brand"]
    columns[2:2] = ["journey"] if any(link.journey for link in links) else []
    columns += [key for key in EXPRESSION_KEYS if any(getattr(link, key) for link in links)]
    rows = [[display_name(getattr(link, column) or "") for column in columns] for link in links]
    if not console.is_terminal:  # piped: tab-separated lines as they are, for grep, cut and awk
        console.file.write("".join("\t".join(row) + "\n" for row in [columns, *rows]))
        console.file.flush()
        return
    table = Table(box=box.SIMPLE)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    _print_table(console, table)


def links_json(links: Sequence[Link]) -> bytes:
    """The links as a JSON array, for scripts."""
    return orjson.dumps([link.model_dump() for link in links], option=orjson.OPT_INDENT_2) + b"\n"


def config_diff(name: str, before: str, after: str) -> bytes:
    """An edit of the config as a unified diff (``--- name``, ``+++ name``), for stdout."""
    lines = difflib.unified_diff(_lines(before), _lines(after), fromfile=name, tofile=name)
    marked = (line if line.endswith("\n") else f"{line}\n\\ No newline at end of file\n" for line in lines)
    return "".join(marked).encode()


def _lines(text: str) -> list[str]:
    """The lines of a text, each with its line break: split at "\\n" only (TOML's line break), not at
    the other characters `str.splitlines` breaks on, which a TOML string may hold."""
    *whole, last = text.split("\n")
    return [line + "\n" for line in whole] + ([last] if last else [])


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
        if reason in ("filtered", "duplicate", "opted_out"):
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
    _print_table(console, overview)
    if found["types"]:
        types = Table(box=box.SIMPLE)
        types.add_column("type")
        types.add_column("events", justify="right")
        for kind, count in found["types"].items():
            types.add_row(Text(kind), f"{count:,}")
        _print_table(console, types)
    _show_track_events(console, found)
    _show_link_counts(console, found["links"]["conditions_and_mappings"])
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
        _print_table(console, requests)
    _show_days(console, found)
    if found["rejected"]:
        rejected = Table(title="rejected", box=box.SIMPLE, title_justify="left")
        rejected.add_column("reason")
        rejected.add_column("records", justify="right")
        rejected.add_column("first seen at")
        rejected.add_column("the first one's problem", overflow="fold")
        for reason, entry in found["rejected"].items():
            origins = Text("\n".join(display_name(origin) for origin in entry["first"]))
            rejected.add_row(
                Text(reason), f"{entry['count']:,}", origins, Text(display_name(entry["detail"]))
            )
        _print_table(console, rejected)


DAY_BAR_WIDTH = 40
"""Characters of the longest bar in inspect's events per day."""


def _show_days(console: Console, found: Mapping[str, Any]) -> None:
    """Events per day of event time, as bars: a gap or a spike shows at a glance."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    days = found["days"]
    if len(days) < 2:  # one day (or none): the overview's first and last times say it all
        return
    most = max(days.values())
    table = Table(title="events per day (event time, UTC)", box=box.SIMPLE, title_justify="left")
    table.add_column("day")
    table.add_column("events", justify="right")
    table.add_column("")
    for day, count in days.items():
        bar = "█" * max(1, round(DAY_BAR_WIDTH * count / most))
        table.add_row(day, f"{count:,}", Text(bar, style="cyan"))
    if found["days_not_listed"]:
        table.add_row("other days", f"{found['days_not_listed']:,}", "")
    _print_table(console, table)


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
            targets = [*entry["automations"], *(f"journey {name}" for name in entry["journeys"])]
            linked = Text(", ".join(targets)) if targets else Text("no link", "red")
            table.add_row(Text(display_name(entry["event"])), f"{entry['count']:,}", linked)
        if found["track_events_not_listed"]:
            table.add_row("(more names)", f"{found['track_events_not_listed']:,}", "")
        _print_table(console, table)
    never = found["links"]["never_seen"]
    if never:
        names = ", ".join(map(repr, never))
        console.print(Text(display_name(f"links whose event never occurs here: {names}")))


def _show_link_counts(console: Console, links: Sequence[Mapping[str, Any]]) -> None:
    """Per link with a condition or a mapping: the events of its name, those its condition let
    through, the requests it made, and the events it failed on."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not links:
        return
    table = Table(title="conditions and mappings", box=box.SIMPLE, title_justify="left")
    table.add_column("link")
    table.add_column("when")
    for column in ("events", "let through", "requests", "failed on"):
        table.add_column(column, justify="right")
    for link in links:
        kind = "automation" if "automation" in link else "journey"
        name = display_name(f"{link['event']} -> {kind} {link[kind]}")
        failed = Text(f"{link['errors']:,}", "red" if link["errors"] else "")
        table.add_row(
            Text(name),
            Text(display_name(link.get("when", ""))),
            f"{link['events']:,}",
            f"{link['let_through']:,}",
            f"{link['fired']:,}",
            failed,
        )
    _print_table(console, table)


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
        _print_table(console, table)
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
