"""Segment's S3 archive through the command line: selection, ordering, --fail-on and inspect.

The archive is the official client's events laid out by `tests.archives`; every expected number is
derived here, in Python, from those events, never copied from segroute's output.
"""

from __future__ import annotations

import json
import random
import tarfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from segroute.cli import app
from tests.archives import DAY, layout, spread, tar_bytes, tar_with, write_tree, zip_bytes
from tests.conftest import isolate
from tests.courier_server import API_KEY, FakeCourier

runner = CliRunner()

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
LINKED = "Checkout Complete"
AUTOMATION = "order-confirmation"
TREE = "logs"

Event = dict[str, Any]
Archive = list[tuple[datetime, Event]]
Select = Callable[[Event], bool]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in its own folder, with none of the user's settings."""
    isolate(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def archive(segment_events: list[Event]) -> Archive:
    """The official client's events over three days, every fifth one received a day late."""
    return spread(segment_events, START, days=3)


@pytest.fixture(scope="module")
def files(archive: Archive) -> dict[str, bytes]:
    """The segment-logs tree of the archive, path -> content."""
    return layout(archive)


@pytest.fixture
def in_order(archive: Archive) -> list[Event]:
    """The events in the order a tree is read: day folders, then files, each in received order."""
    return [event for _, event in sorted(archive, key=lambda pair: pair[0])]


@pytest.fixture
def tree(files: dict[str, bytes]) -> str:
    """The archive as folders under ./logs."""
    write_tree(Path(TREE), files)
    return TREE


# --- helpers ------------------------------------------------------------------------------------


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env)


def link(event: str = LINKED, automation: str = AUTOMATION) -> None:
    assert invoke("link", event, automation).exit_code == 0


def jsonl(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def rows(text: str) -> list[list[str]]:
    """Each line of a rich table as its words."""
    return [line.split() for line in text.splitlines()]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def shown(moment: datetime) -> str:
    """A moment as inspect shows it: ISO-8601 UTC with a Z, a fraction only when there is one."""
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def replay_key(event: Event) -> tuple[datetime, datetime, str]:
    """Event time, then received time, then messageId: the documented --order timestamp."""
    return when(event["timestamp"]), when(event["receivedAt"]), event["messageId"]


def route(event: Event, linked: set[str]) -> tuple[str, str]:
    """What Courier's Segment integration does with an event, as (outcome, reason)."""
    if event["type"] == "track":
        if event["event"] not in linked:
            return "skipped", "unlinked"
        return ("planned", "") if event.get("userId") else ("skipped", "anonymous")
    if event["type"] == "identify":
        if not event.get("userId"):
            return "skipped", "anonymous"
        return ("planned", "") if event.get("traits") else ("skipped", "no_traits")
    return "skipped", "not_routed"


def expected_outcomes(
    events: Iterable[Event], linked: set[str], selected: Select = lambda _: True
) -> Counter[tuple[str, str]]:
    """One outcome per event read, in replay order."""
    counts: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    for event in events:
        if not selected(event):
            counts["skipped", "filtered"] += 1
        elif event["messageId"] in seen:
            counts["skipped", "duplicate"] += 1
        else:
            seen.add(event["messageId"])
            counts[route(event, linked)] += 1
    return counts


def nested(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Outcome counts the way the report and inspect write them."""
    out: dict[str, dict[str, int]] = {}
    for (outcome, reason), count in sorted(counts.items()):
        out.setdefault(outcome, {})[reason or "ok"] = count
    return out


def planned_ids(events: Iterable[Event], linked: set[str], selected: Select = lambda _: True) -> set[str]:
    return {e["messageId"] for e in events if selected(e) and route(e, linked)[0] == "planned"}


def day_end(moment: datetime) -> datetime:
    """The end of the UTC day a moment falls in."""
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + DAY


def unread_days(events: Iterable[Event], since: datetime | None) -> set[datetime]:
    """Day folders a --since leaves unread: every event in them was received before it."""
    if since is None:
        return set()
    return {day_end(when(e["receivedAt"])) for e in events if day_end(when(e["receivedAt"])) <= since}


def read_with(events: list[Event], since: datetime | None) -> list[Event]:
    """The events in the day folders a --since still reads."""
    unread = unread_days(events, since)
    return [e for e in events if day_end(when(e["receivedAt"])) not in unread]


def dry_run(*args: str) -> tuple[Result, dict[str, Any]]:
    """A dry run printing jsonl, and its report."""
    result = invoke("send", *args, "--dry-run", "-o", "jsonl", "--report", "report.json")
    return result, json.loads(Path("report.json").read_text())


def summary_part(stderr: str) -> list[str]:
    """The summary tables: what follows the title, without the notes before it."""
    lines = [line.rstrip() for line in stderr.splitlines()]
    return lines[lines.index("dry run: nothing was sent") :]


# --- 1. the whole archive: every record ends in one outcome --------------------------------------


def test_every_record_of_the_tree_ends_in_one_outcome(tree: str, in_order: list[Event]) -> None:
    link()
    result, report = dry_run(tree)
    assert result.exit_code == 0, result.stderr
    expected = expected_outcomes(in_order, {LINKED})
    assert report["read"] == len(in_order) == sum(expected.values())
    assert report["outcomes"] == nested(expected)
    assert sum(report["totals"].values()) == report["read"]
    lines = jsonl(result)
    # One link, so one request per planned event, in the order the tree is read.
    planned = [e["messageId"] for e in in_order if route(e, {LINKED})[0] == "planned"]
    assert [line["messageId"] for line in lines] == planned
    assert len(lines) == expected["planned", ""]
    automation = sum(1 for line in lines if line["url"].endswith(f"/automations/{AUTOMATION}/invoke"))
    assert report["targets"] == {
        f"automation {AUTOMATION}": {"planned": automation},
        "profile merge": {"planned": len(lines) - automation},
    }
    table = rows(result.stderr)
    assert ["planned", str(expected["planned", ""])] in table
    assert ["read", str(len(in_order))] in table
    assert ["skipped", "duplicate", str(expected["skipped", "duplicate"])] in table


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_a_bundle_of_the_tree_plans_exactly_what_the_tree_does(
    tree: str, files: dict[str, bytes], kind: str
) -> None:
    link()
    bundle = f"export.{kind}"
    Path(bundle).write_bytes(zip_bytes(files) if kind == "zip" else tar_bytes(files, compress=True))
    from_tree = invoke("send", tree, "--dry-run", "-o", "jsonl")
    from_bundle = invoke("send", bundle, "--dry-run", "-o", "jsonl")
    assert (from_tree.exit_code, from_bundle.exit_code) == (0, 0)
    assert from_tree.stdout.count("\n") > 0
    # Only the origins differ: a folder's files are tree/..., a bundle's members bundle!...
    assert from_bundle.stdout == from_tree.stdout.replace(f'"origin":"{tree}/', f'"origin":"{bundle}!')
    assert summary_part(from_bundle.stderr) == summary_part(from_tree.stderr)


# --- 2. selection ----------------------------------------------------------------------------------


def _anon5_or_user3(event: Event) -> bool:
    return event.get("userId") == "user-3" or event.get("anonymousId") == "anon-5"


SELECTIONS: list[tuple[list[str], Select, datetime | None]] = [
    (["--type", "identify", "--type", "page"], lambda e: e["type"] in ("identify", "page"), None),
    (["--event", "Check*"], lambda e: e["type"] == "track" and e["event"] == "Checkout Complete", None),
    (
        ["--event", "*View?d", "--event", "Signed Up"],
        lambda e: e["type"] == "track" and e["event"] in ("Product Viewed", "Signed Up"),
        None,
    ),
    (["--user", "user-3", "--user", "anon-5"], _anon5_or_user3, None),
    (["--since", "2026-03-02"], lambda e: when(e["timestamp"]) >= utc("2026-03-02"), utc("2026-03-02")),
    (
        ["--since", "2026-03-02T13:30:00Z"],
        lambda e: when(e["timestamp"]) >= utc("2026-03-02T13:30:00"),
        utc("2026-03-02T13:30:00"),
    ),
    (
        ["--since", "2026-03-02T14:30:00+01:00"],
        lambda e: when(e["timestamp"]) >= utc("2026-03-02T13:30:00"),
        utc("2026-03-02T13:30:00"),
    ),
    # An until date includes its whole day: [since, the next midnight).
    (["--until", "2026-03-02"], lambda e: when(e["timestamp"]) < utc("2026-03-03"), None),
    (["--until", "2026-03-02T06:00:00Z"], lambda e: when(e["timestamp"]) < utc("2026-03-02T06:00"), None),
    (
        ["--since", "2026-03-02", "--until", "2026-03-02", "--type", "track"],
        lambda e: e["type"] == "track" and utc("2026-03-02") <= when(e["timestamp"]) < utc("2026-03-03"),
        utc("2026-03-02"),
    ),
]


def _case_id(value: object) -> str | None:
    return " ".join(value) if isinstance(value, list) else None


@pytest.mark.parametrize(("args", "selected", "since"), SELECTIONS, ids=_case_id)
def test_selection_skips_the_rest_as_filtered(
    tree: str, in_order: list[Event], args: list[str], selected: Select, since: datetime | None
) -> None:
    link()
    read = read_with(in_order, since)
    kept = [e for e in read if selected(e)]
    assert 0 < len(kept) < len(read), "the selection must keep some events and leave out others"
    result, report = dry_run(tree, *args)
    assert result.exit_code == 0, result.stderr
    expected = expected_outcomes(read, {LINKED}, selected)
    assert report["read"] == len(read)
    assert report["outcomes"] == nested(expected)
    assert report["outcomes"]["skipped"]["filtered"] == len(read) - len(kept)
    assert report["skip_reasons"]["filtered"].startswith("left out by --type, --event, --user")
    assert {line["messageId"] for line in jsonl(result)} == planned_ids(read, {LINKED}, selected)
    assert ["skipped", "filtered", str(len(read) - len(kept))] in rows(result.stderr)


def test_user_matches_a_user_id_and_an_anonymous_id(in_order: list[Event]) -> None:
    """The --user case above means both: events of user-3 by userId, of anon-5 only by anonymousId."""
    kept = [e for e in in_order if _anon5_or_user3(e)]
    assert any(e["userId"] == "user-3" for e in kept)
    assert any(e["userId"] is None and e["anonymousId"] == "anon-5" for e in kept)


def test_an_until_date_keeps_the_whole_day(tree: str, in_order: list[Event]) -> None:
    link()
    day = [e for e in in_order if when(e["timestamp"]).date().isoformat() == "2026-03-02"]
    late_in_day = [e for e in day if when(e["timestamp"]).hour >= 12 and e["type"] == "identify"]
    assert late_in_day
    result, _ = dry_run(tree, "--until", "2026-03-02", "--type", "identify")
    assert result.exit_code == 0
    planned = {line["messageId"] for line in jsonl(result)}
    assert {e["messageId"] for e in late_in_day} <= planned
    assert max(when(e["timestamp"]) for e in in_order if e["messageId"] in planned).date().isoformat() == (
        "2026-03-02"
    )


def _sample_ids(tree: str, fraction: str) -> tuple[str, set[str], dict[str, Any]]:
    result, report = dry_run(tree, "--sample", fraction)
    assert result.exit_code == 0, result.stderr
    return result.stdout, {line["messageId"] for line in jsonl(result)}, report


def in_sample(message_id: str, fraction: float) -> bool:
    """The documented rule: the first 8 bytes of the messageId's BLAKE2b hash, over 2**64."""
    return int.from_bytes(blake2b(message_id.encode(), digest_size=8).digest(), "big") < fraction * 2**64


def test_a_sample_picks_the_same_events_every_run_and_more_for_a_larger_fraction(
    tree: str, in_order: list[Event]
) -> None:
    link()
    first, small, report = _sample_ids(tree, "0.3")
    again, same, _ = _sample_ids(tree, "0.3")
    assert (again, same) == (first, small)
    _, large, _ = _sample_ids(tree, "0.6")
    everything = planned_ids(in_order, {LINKED})
    assert set() < small < large < everything
    assert small == planned_ids(in_order, {LINKED}, lambda e: in_sample(e["messageId"], 0.3))
    kept = sum(1 for e in in_order if in_sample(e["messageId"], 0.3))
    assert report["outcomes"]["skipped"]["filtered"] == len(in_order) - kept


def test_limit_stops_reading_after_n_selected_events(tree: str, in_order: list[Event]) -> None:
    link()
    identifies = [n for n, e in enumerate(in_order) if e["type"] == "identify"]
    limit = 5
    result, report = dry_run(tree, "--type", "identify", "--limit", str(limit))
    assert result.exit_code == 0, result.stderr
    # In input order, reading stops at the fifth identify: what follows it is never read.
    last = identifies[limit - 1]
    assert report["read"] == last + 1 < len(in_order)
    assert report["outcomes"] == {
        "planned": {"ok": limit},
        "skipped": {"filtered": last + 1 - limit},
    }
    assert [line["messageId"] for line in jsonl(result)] == [
        in_order[n]["messageId"] for n in identifies[:limit]
    ]


def test_limit_in_timestamp_order_takes_the_earliest(tree: str, in_order: list[Event]) -> None:
    link()
    identifies = sorted((e for e in in_order if e["type"] == "identify"), key=replay_key)
    result, report = dry_run(tree, "--type", "identify", "--limit", "3", "--order", "timestamp")
    assert result.exit_code == 0, result.stderr
    assert [line["messageId"] for line in jsonl(result)] == [e["messageId"] for e in identifies[:3]]
    # Sorting reads everything, so every event is counted: the selected ones past the limit too.
    assert report["read"] == len(in_order)
    assert report["outcomes"] == {
        "planned": {"ok": 3},
        "skipped": {"filtered": len(in_order) - len(identifies), "limit": len(identifies) - 3},
    }


# --- 3. --since leaves old day folders unread but finds late events ----------------------------------


@pytest.mark.parametrize("since", ["2026-03-03", "2026-03-02T13:30:00Z"])
def test_since_skips_old_day_folders_and_still_finds_late_events(
    tree: str, in_order: list[Event], since: str
) -> None:
    link()
    bound = utc(since.removesuffix("Z"))
    unread = unread_days(in_order, bound)
    read = read_with(in_order, bound)
    wanted = [e for e in in_order if when(e["timestamp"]) >= bound]
    late = [e for e in wanted if when(e["receivedAt"]).date() > when(e["timestamp"]).date()]
    filtered = [e for e in read if when(e["timestamp"]) < bound]
    assert unread and late and filtered, "the fixture must hold each case"
    result, report = dry_run(tree, "--since", since)
    assert result.exit_code == 0, result.stderr
    folders = "day folder" if len(unread) == 1 else "day folders"
    assert f"{TREE}: note: {len(unread)} {folders} of events received before the selected time: not read" in (
        result.stderr.splitlines()
    )
    assert report["read"] == len(read) < len(in_order)
    assert report["outcomes"]["skipped"]["filtered"] == len(filtered)
    # Everything at or after --since was found, late events in later folders included.
    assert report["read"] - len(filtered) == len(wanted)
    planned = {line["messageId"] for line in jsonl(result)}
    assert planned == planned_ids(wanted, {LINKED})
    assert planned & {e["messageId"] for e in late}


def test_since_with_only_identify_plans_exactly_the_events_from_then_on(
    tree: str, in_order: list[Event]
) -> None:
    """Every identify is routed, so what is planned is what is selected."""
    since = "2026-03-02T13:30:00Z"
    bound = utc("2026-03-02T13:30:00")
    result, _ = dry_run(tree, "--since", since, "--type", "identify")
    assert result.exit_code == 0, result.stderr
    assert {line["messageId"] for line in jsonl(result)} == {
        e["messageId"] for e in in_order if e["type"] == "identify" and when(e["timestamp"]) >= bound
    }


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_since_skips_day_folders_inside_a_bundle_too(
    tree: str, files: dict[str, bytes], in_order: list[Event], kind: str
) -> None:
    link()
    unread = len(unread_days(in_order, utc("2026-03-02T13:30:00")))
    assert unread == 1
    bundle = f"export.{kind}"
    Path(bundle).write_bytes(zip_bytes(files) if kind == "zip" else tar_bytes(files, compress=True))
    since = ["--since", "2026-03-02T13:30:00Z"]
    from_tree = invoke("send", tree, "--dry-run", "-o", "jsonl", *since)
    from_bundle = invoke("send", bundle, "--dry-run", "-o", "jsonl", *since)
    assert (from_tree.exit_code, from_bundle.exit_code) == (0, 0)
    assert from_bundle.stdout == from_tree.stdout.replace(f'"origin":"{tree}/', f'"origin":"{bundle}!')
    note = f"note: {unread} day folder of events received before the selected time: not read"
    assert f"{bundle}: {note}" in from_bundle.stderr.splitlines()
    assert f"{tree}: {note}" in from_tree.stderr.splitlines()
    assert summary_part(from_bundle.stderr) == summary_part(from_tree.stderr)


# --- 4. --order timestamp ----------------------------------------------------------------------------


TIES = [
    # Same event time: the earlier receivedAt first; same both: the smaller messageId first.
    {"type": "identify", "userId": "tie", "traits": {"n": 3}, "messageId": "tie-b",
     "timestamp": "2026-03-02T10:00:00.000Z", "receivedAt": "2026-03-02T10:00:05.000Z"},
    {"type": "identify", "userId": "tie", "traits": {"n": 2}, "messageId": "tie-c",
     "timestamp": "2026-03-02T10:00:00.000Z", "receivedAt": "2026-03-02T10:00:01.000Z"},
    {"type": "identify", "userId": "tie", "traits": {"n": 1}, "messageId": "tie-a",
     "timestamp": "2026-03-02T10:00:00.000Z", "receivedAt": "2026-03-02T10:00:05.000Z"},
]  # fmt: skip


def _keys(lines: list[dict[str, Any]], by_id: dict[str, Event]) -> list[tuple[datetime, datetime, str]]:
    return [replay_key(by_id[line["messageId"]]) for line in lines]


def test_timestamp_order_replays_in_event_time(tree: str, in_order: list[Event]) -> None:
    link()
    Path("ties.jsonl").write_text("".join(json.dumps(e) + "\n" for e in TIES))
    by_id = {e["messageId"]: e for e in [*in_order, *TIES]}
    # The archive holds late events: a later folder has an event older than one before it.
    assert any(replay_key(a) > replay_key(b) for a, b in zip(in_order, in_order[1:], strict=False))
    as_read = invoke("send", tree, "ties.jsonl", "--dry-run", "-o", "jsonl")
    in_time = invoke("send", tree, "ties.jsonl", "--dry-run", "-o", "jsonl", "--order", "timestamp")
    assert (as_read.exit_code, in_time.exit_code) == (0, 0)
    read_keys, time_keys = _keys(jsonl(as_read), by_id), _keys(jsonl(in_time), by_id)
    assert read_keys != sorted(read_keys)
    assert time_keys == sorted(read_keys)
    assert sorted(as_read.stdout.splitlines()) == sorted(in_time.stdout.splitlines())
    ties = [line["messageId"] for line in jsonl(in_time) if line["messageId"].startswith("tie-")]
    assert ties == ["tie-c", "tie-a", "tie-b"]
    assert summary_part(as_read.stderr) == summary_part(in_time.stderr)


def test_a_send_in_timestamp_order_keeps_each_recipients_requests_in_event_time(
    tree: str, in_order: list[Event], courier: FakeCourier, monkeypatch: pytest.MonkeyPatch
) -> None:
    link()
    link(LINKED, "loyalty points/eu")
    monkeypatch.setenv("COURIER_API_KEY", API_KEY)
    plan = invoke("send", tree, "--dry-run", "-o", "jsonl", "--api-url", courier.url, "--order", "timestamp")
    assert plan.exit_code == 0
    expected = {line["headers"]["Idempotency-Key"]: line for line in jsonl(plan)}
    by_id = {e["messageId"]: e for e in in_order}
    rng = random.Random(11)
    # Small random delays let later requests overtake earlier ones, unless order is kept.
    courier.fault("delay", times=80, seconds=0.01, match=lambda _: rng.random() < 0.4)
    result = invoke("send", tree, "--order", "timestamp", "--concurrency", "4", "--api-url", courier.url)
    assert result.exit_code == 0, result.stderr
    assert courier.acted_keys() == set(expected)
    assert set(courier.acted.values()) == {1}
    assert {(r.path, r.key) for r in courier.acted_order} == {
        (line["url"].removeprefix(courier.url), key) for key, line in expected.items()
    }
    per_recipient: dict[str, list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for received in courier.acted_order:
        event = by_id[expected[received.key]["messageId"]]
        per_recipient[event["userId"]].append(replay_key(event))
    assert len(per_recipient) > 1
    for user, keys in per_recipient.items():
        assert keys == sorted(keys), user
    assert ["sent", str(len({e["messageId"] for e in expected.values()}))] in rows(result.stderr)


# --- 5. --fail-on ------------------------------------------------------------------------------------


def _unlinked_message(in_order: list[Event], linked: set[str]) -> str:
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    for event in in_order:
        if event["messageId"] not in seen and route(event, linked) == ("skipped", "unlinked"):
            counts[event["event"]] += 1
        seen.add(event["messageId"])
    listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))
    return (
        f"error: track events with no link (--fail-on unlinked): {listed}; "
        "link them with: segroute link EVENT AUTOMATION"
    )


def test_fail_on_unlinked_names_the_events_no_link_names(tree: str, in_order: list[Event]) -> None:
    link()
    message = _unlinked_message(in_order, {LINKED})
    assert "'Product Viewed'" in message
    sent = invoke("send", tree, "--dry-run", "-o", "jsonl", "--fail-on", "unlinked")
    assert sent.exit_code == 1
    assert sent.stderr.splitlines()[-1] == message
    inspected = invoke("inspect", tree, "--fail-on", "unlinked")
    assert inspected.exit_code == 1
    assert inspected.stderr.splitlines() == [message]
    # Without the option, unlinked events are a deliberate skip.
    assert invoke("send", tree, "--dry-run", "-o", "jsonl").exit_code == 0
    assert invoke("inspect", tree).exit_code == 0


def test_fail_on_unlinked_passes_when_every_track_event_is_linked(tree: str, in_order: list[Event]) -> None:
    for name in sorted({e["event"] for e in in_order if e["type"] == "track"}):
        link(name)
    sent = invoke("send", tree, "--dry-run", "-o", "jsonl", "--fail-on", "unlinked")
    assert sent.exit_code == 0, sent.stderr
    assert "error" not in sent.stderr
    inspected = invoke("inspect", tree, "--fail-on", "unlinked", "-o", "json")
    assert (inspected.exit_code, inspected.stderr) == (0, "")
    assert json.loads(inspected.stdout)["links"]["unlinked"] == []


def test_fail_on_unlinked_looks_only_at_selected_events(tree: str) -> None:
    link()
    sent = invoke("send", tree, "--dry-run", "-o", "jsonl", "--fail-on", "unlinked", "--event", LINKED)
    assert sent.exit_code == 0, sent.stderr
    inspected = invoke("inspect", tree, "--fail-on", "unlinked", "--type", "identify")
    assert inspected.exit_code == 0, inspected.stderr


def test_inspect_fail_on_rejected(tree: str) -> None:
    link()
    clean = invoke("inspect", tree, "--fail-on", "rejected")
    assert (clean.exit_code, clean.stderr) == (0, "")
    Path("bad.jsonl").write_bytes(b'{"type":"identify","userId":"u","traits":{"a":1}}\n{broken\n')
    dirty = invoke("inspect", tree, "bad.jsonl", "--fail-on", "rejected")
    assert dirty.exit_code == 1
    assert dirty.stderr == "error: 1 records rejected (--fail-on rejected)\n"
    both = invoke("inspect", tree, "bad.jsonl", "--fail-on", "rejected", "--fail-on", "unlinked")
    assert both.exit_code == 1
    assert both.stderr.splitlines()[-1] == "error: 1 records rejected (--fail-on rejected)"
    assert both.stderr.startswith("error: track events with no link (--fail-on unlinked): ")


def test_send_fail_on_rejected_is_a_usage_error(tree: str) -> None:
    result = invoke("send", tree, "--dry-run", "--fail-on", "rejected")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == "error: --fail-on rejected is how send always works; it takes only unlinked\n"


# --- 6. inspect -----------------------------------------------------------------------------------------


BAD_LINES = b'{broken\n{"type":"tack","userId":"u"}\n{"type":"track","userId":"u"}\n{also broken\n'


def _expected_inventory(in_order: list[Event], links: dict[str, list[str]]) -> dict[str, Any]:
    types = Counter(e["type"] for e in in_order)
    names = Counter(e["event"] for e in in_order if e["type"] == "track")
    stamps = [when(e["timestamp"]) for e in in_order]
    received = [when(e["receivedAt"]) for e in in_order]
    requests: Counter[str] = Counter()
    seen: set[str] = set()
    for event in in_order:
        if event["messageId"] in seen or route(event, set(links))[0] != "planned":
            continue
        seen.add(event["messageId"])
        if event["type"] == "identify":
            requests["profile merge"] += 1
        else:
            requests.update(f"automation {a}" for a in links[event["event"]])
    return {
        "types": dict(sorted(types.items(), key=lambda i: (-i[1], i[0]))),
        "track_events": [
            {"event": name, "count": n, "automations": links.get(name, []), "journeys": []}
            for name, n in sorted(names.items(), key=lambda i: (-i[1], i[0]))
        ],
        "users": {
            "distinct": len({e["userId"] for e in in_order if e.get("userId")}),
            "anonymous_events": sum(1 for e in in_order if not e.get("userId")),
        },
        "timestamp": {"first": shown(min(stamps)), "last": shown(max(stamps)), "missing": 0},
        "received_at": {"first": shown(min(received)), "last": shown(max(received)), "missing": 0},
        "requests": dict(sorted(requests.items())),
    }


def test_inspect_json_tells_what_the_archive_holds(tree: str, in_order: list[Event]) -> None:
    links = {LINKED: [AUTOMATION, "loyalty"], "Order Refunded": ["refund"]}
    for event, automations in links.items():
        for automation in automations:
            link(event, automation)
    Path("bad.jsonl").write_bytes(BAD_LINES)
    result = invoke("inspect", tree, "bad.jsonl", "-o", "json")
    # Unlike send, inspect exits 1 for rejected records only with --fail-on rejected.
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    expected = _expected_inventory(in_order, links)
    for key, value in expected.items():
        assert found[key] == value, key
    assert found["read"] == len(in_order) + 4
    assert found["events"] == len(in_order)
    assert found["outcomes"] == nested(
        expected_outcomes(in_order, set(links))
        + Counter({("rejected", "invalid_json"): 2, ("rejected", "unknown_type"): 1})
        + Counter({("rejected", "missing_event"): 1})
    )
    assert found["rejected"] == {
        "invalid_json": {
            "count": 2,
            "first": ["bad.jsonl:1", "bad.jsonl:4"],
            "detail": "not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        },
        "missing_event": {
            "count": 1,
            "first": ["bad.jsonl:3"],
            "detail": "track event without an 'event' name",
        },
        "unknown_type": {"count": 1, "first": ["bad.jsonl:2"], "detail": "unknown type 'tack'"},
    }
    track_names = [entry["event"] for entry in expected["track_events"]]
    assert found["links"] == {
        "linked": [LINKED],
        "unlinked": [name for name in track_names if name != LINKED],
        "never_seen": ["Order Refunded"],
        "conditions_and_mappings": [],
    }
    assert found["track_events_not_listed"] == 0
    assert found["notes"] == 2  # the placeholder and the empty file
    # The requests a send would make are what a dry run plans.
    _, report = dry_run(tree, "bad.jsonl")
    assert found["requests"] == {target: kinds["planned"] for target, kinds in report["targets"].items()}


def test_inspect_json_counts_only_selected_events(tree: str, in_order: list[Event]) -> None:
    link()
    result = invoke("inspect", tree, "-o", "json", "--type", "track", "--user", "user-2")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    kept = [e for e in in_order if e["type"] == "track" and e.get("userId") == "user-2"]
    assert found["read"] == len(in_order)
    assert found["events"] == len(kept) > 0
    assert found["outcomes"]["skipped"]["filtered"] == len(in_order) - len(kept)
    assert found["types"] == {"track": len(kept)}
    assert found["users"] == {"distinct": 1, "anonymous_events": 0}
    assert found["requests"] == {f"automation {AUTOMATION}": len(planned_ids(kept, {LINKED}))}


def test_inspect_table_shows_the_key_lines(tree: str, in_order: list[Event]) -> None:
    link()
    link("Order Refunded", "refund")
    Path("bad.jsonl").write_bytes(BAD_LINES)
    result = invoke("inspect", tree, "bad.jsonl", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    expected = _expected_inventory(in_order, {LINKED: [AUTOMATION]})
    lines = [line.strip() for line in result.stdout.splitlines()]
    table = rows(result.stdout)
    assert "inspected: every event" in lines
    assert ["records", "read", str(len(in_order) + 4)] in table
    assert ["valid", "events", str(len(in_order))] in table
    assert ["rejected", "4"] in table
    assert ["distinct", "users", str(expected["users"]["distinct"])] in table
    stamps = expected["timestamp"]
    assert ["first", "timestamp", stamps["first"]] in table
    assert ["last", "timestamp", stamps["last"]] in table
    for kind, count in expected["types"].items():
        assert [kind, str(count)] in table
    checkout = next(e["count"] for e in expected["track_events"] if e["event"] == LINKED)
    assert [*LINKED.split(), str(checkout), AUTOMATION] in table
    viewed = next(e["count"] for e in expected["track_events"] if e["event"] == "Product Viewed")
    assert ["Product", "Viewed", str(viewed), "no", "link"] in table
    assert "links whose event never occurs here: 'Order Refunded'" in lines
    assert "a send would make" in lines
    for target, count in expected["requests"].items():
        assert [*target.split(), str(count)] in table
    assert ["invalid_json", "2", "bad.jsonl:1", "not", "valid", "JSON:"] in [row[:6] for row in table]
    assert ["bad.jsonl:4"] in table


def test_inspect_table_names_the_selection(tree: str) -> None:
    result = invoke("inspect", tree, "--type", "track", "--since", "2026-03-02", "--sample", "0.5")
    assert result.exit_code == 0, result.stderr
    assert "inspected: type track; since 2026-03-02T00:00:00Z; sample 50% of messageIds" in (
        line.strip() for line in result.stdout.splitlines()
    )


def test_inspect_reports_a_symlink_in_a_tar_as_unsafe() -> None:
    event = b'{"type":"identify","userId":"u","traits":{"a":1},"messageId":"m1"}\n'
    good = tarfile.TarInfo("logs/a.jsonl")
    evil = tarfile.TarInfo("logs/link.jsonl")
    evil.type = tarfile.SYMTYPE
    evil.linkname = "/etc/passwd"
    Path("hostile.tar").write_bytes(tar_with(good, evil, content=event))
    result = invoke("inspect", "hostile.tar", "-o", "json")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["rejected"] == {
        "unsafe": {
            "count": 1,
            "first": ["hostile.tar!logs/link.jsonl"],
            "detail": "refused: a symbolic link (to '/etc/passwd'); not read",
        }
    }
    assert found["events"] == 1 and found["read"] == 2
    table = invoke("inspect", "hostile.tar", env={"COLUMNS": "200"})
    assert table.exit_code == 0
    assert ["unsafe", "1", "hostile.tar!logs/link.jsonl"] in [row[:3] for row in rows(table.stdout)]


# --- 7. bad options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["send", "inspect"])
@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--since", "6x"], "error: --since: not a time: '6x'; expected a date (2026-01-31), an ISO"),
        (["--until", "2026-13-01"], "error: --until: not a time: '2026-13-01'; expected a date"),
        (["--type", "bogus"], "error: --type 'bogus': not a Segment type (alias, group, identify, page"),
    ],
)
def test_bad_selection_options_are_usage_errors(
    tree: str, command: str, option: list[str], message: str
) -> None:
    extra = ["--dry-run"] if command == "send" else []
    result = invoke(command, tree, *extra, *option)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(message)
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_the_archive_spans_the_bounds_the_tests_use(in_order: list[Event]) -> None:
    """The oracle's own premise: events fall on both sides of the bounds the tests use."""
    assert any(when(e["timestamp"]) < utc("2026-03-02") for e in in_order)
    assert any(when(e["timestamp"]) >= utc("2026-03-03") for e in in_order)
    assert timedelta(0) < max(when(e["receivedAt"]) - when(e["timestamp"]) for e in in_order) <= DAY
