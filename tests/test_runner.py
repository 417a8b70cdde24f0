"""One run, called directly: a dry run, a send to a real server on 127.0.0.1, the files it leaves
(ledger, failure file, report), and the inventory `inspect` takes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from segroute.config import Config, Link
from segroute.delivery import DeliveryOptions
from segroute.errors import ExitCode, UsageError
from segroute.ledger import Ledger
from segroute.models import Event, Missed, Note, Planned, Rejected, RequestResult, Target
from segroute.runner import Progress, RunOptions, RunResult, run, take_inventory
from tests.courier_server import API_KEY, FakeCourier

CONFIG = Config(links=[Link(event="Checkout Complete", automation="order-confirmation")])


class Shown:
    """A Display that keeps what a run showed it."""

    def __init__(self) -> None:
        self.requests_shown: list[Planned] = []
        self.results_shown: list[RequestResult] = []
        self.rejected_shown: list[Rejected] = []
        self.notes_shown: list[Note] = []
        self.progress_shown: list[Progress] = []
        self.missed_shown: list[tuple[str, Missed]] = []
        self.closed = 0

    def request(self, planned: Planned) -> None:
        self.requests_shown.append(planned)

    def result(self, result: RequestResult) -> None:
        self.results_shown.append(result)

    def rejected(self, rejected: Rejected) -> None:
        self.rejected_shown.append(rejected)

    def missed(self, event: Event, missed: Missed) -> None:
        self.missed_shown.append((event.origin, missed))

    def note(self, note: Note) -> None:
        self.notes_shown.append(note)

    def progress(self, progress: Progress) -> None:
        self.progress_shown.append(progress)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in its own folder, so that origins read ``events.jsonl:N``."""
    monkeypatch.chdir(tmp_path)


def checkout(n: int, user: str) -> dict[str, Any]:
    return {"type": "track", "event": "Checkout Complete", "userId": user, "messageId": f"msg-{n}"}


def identify(n: int, user: str) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "messageId": f"id-{n}", "traits": {"n": n}}


def write_events(*events: Any, path: str = "events.jsonl") -> Path:
    Path(path).write_bytes(
        b"".join((e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n" for e in events)
    )
    return Path(path)


def dry_run(*inputs: str, **fields: Any) -> RunOptions:
    return RunOptions(list(inputs), CONFIG, "https://api.courier.com", dry_run=True, **fields)


def send_to(courier: FakeCourier, *inputs: str, api_key: str = API_KEY, **fields: Any) -> RunOptions:
    options = RunOptions(list(inputs), CONFIG, courier.url, dry_run=False, api_key=api_key, **fields)
    options.delivery = DeliveryOptions(concurrency=2)
    return options


def go(options: RunOptions) -> tuple[RunResult, Shown]:
    shown = Shown()
    return run(options, shown, stdin=None), shown


def accepted_rows(path: Path) -> list[tuple[str, str, int]]:
    """(messageId, target, status) of every request the ledger holds as accepted, by messageId."""
    with Ledger(path, create=False) as ledger:
        return sorted((row["messageId"], row["automation"], row["status"]) for row in ledger.export())


# --- a dry run -----------------------------------------------------------------------------------


FAILING_LINK = Config(
    links=[
        Link(event="Checkout Complete", automation="order-confirmation"),
        Link(event="Checkout Complete", journey="review", when=".properties.total + 1 > 10"),
    ]
)
"""A plain link beside one whose condition fails on an event without a numeric total."""


@pytest.mark.parametrize("mode", ["dry run", "send"])
def test_a_link_that_fails_is_shown_once_per_event_kept_in_the_failure_file_and_fails_the_run(
    mode: str, courier: FakeCourier
) -> None:
    good = {**checkout(1, "u1"), "properties": {"total": 20}}
    bad = {**checkout(2, "u2"), "properties": {"total": {"amount": 20}}}
    write_events(good, bad)
    fields: dict[str, Any] = {"failed_path": Path("failed.jsonl")}
    options = (
        dry_run("events.jsonl", **fields) if mode == "dry run" else send_to(courier, "events.jsonl", **fields)
    )
    options.config = FAILING_LINK
    result, shown = go(options)
    missed = Missed(
        Target("journey", "review"),
        "condition_error",
        'condition failed: object ({"amount":20}) and number (1) cannot be added',
    )
    assert shown.missed_shown == [("events.jsonl:2", missed)]
    assert result.summary.missed == {("journey review", "condition_error"): 1}
    assert result.summary.exit_code is ExitCode.FAILED
    planned_or_sent = "planned" if mode == "dry run" else "sent"
    assert result.summary.outcomes == {(planned_or_sent, ""): 2}
    assert [item["reason"] for item in result.problems.items] == ["condition_error"]
    if mode == "send":  # a dry run sends nothing, so keeps nothing as unsent
        assert Path("failed.jsonl").read_bytes() == json.dumps(bad).encode() + b"\n"
        assert sorted(r.path for r in courier.received) == [
            "/automations/order-confirmation/invoke",
            "/automations/order-confirmation/invoke",
            "/journeys/review/invoke",
        ]


def test_a_dry_run_ends_each_record_read_in_one_outcome_and_shows_each_planned_event() -> None:
    events = write_events(
        checkout(1, "u1"),
        checkout(1, "u1"),
        {"type": "track", "event": "Page Scrolled", "userId": "u1", "messageId": "p1"},
        identify(2, "u2"),
        {"type": "page", "userId": "u1", "messageId": "pg1"},
        b"{broken",
        b"[1, 2]",
    )
    result, shown = go(dry_run("events.jsonl"))
    summary = result.summary
    assert summary.outcomes == {
        ("planned", ""): 2,
        ("skipped", "duplicate"): 1,
        ("skipped", "unlinked"): 1,
        ("skipped", "not_routed"): 1,
        ("rejected", "invalid_json"): 1,
        ("rejected", "not_object"): 1,
    }
    assert summary.read == sum(summary.totals().values()) == 7
    assert summary.targets == {
        ("automation order-confirmation", "planned"): 1,
        ("profile merge", "planned"): 1,
    }
    assert summary.exit_code == ExitCode.FAILED
    assert [p.event.origin for p in shown.requests_shown] == ["events.jsonl:1", "events.jsonl:4"]
    assert [(r.origin, r.reason) for r in shown.rejected_shown] == [
        ("events.jsonl:6", "invalid_json"),
        ("events.jsonl:7", "not_object"),
    ]
    assert [item["origin"] for item in result.problems.items] == ["events.jsonl:6", "events.jsonl:7"]
    assert (shown.results_shown, shown.notes_shown, shown.closed) == ([], [], 1)
    assert (result.stopped_by, result.input_read) == (None, True)
    assert result.read_bytes == result.total_bytes == events.stat().st_size
    assert (result.failed_written, result.report_path, result.ledger_path) == (None, None, None)


def test_a_dry_run_tells_of_an_empty_input_as_a_note_not_a_record() -> None:
    write_events(identify(1, "u1"))
    Path("empty.jsonl").write_bytes(b"")
    result, shown = go(dry_run("events.jsonl", "empty.jsonl"))
    assert [note.origin for note in shown.notes_shown] == ["empty.jsonl"]
    assert (result.summary.read, result.summary.exit_code) == (1, ExitCode.OK)


def test_a_dry_run_writes_its_report_and_keeps_the_rejected_json_in_the_failure_file() -> None:
    write_events(checkout(1, "u1"), b'{"type": "tack", "userId": "u1"}', b"{broken")
    options = dry_run("events.jsonl", failed_path=Path("failed.jsonl"), report_path=Path("report.json"))
    result, _ = go(options)
    # Nothing is sent in a dry run, so nothing failed: only a rejected record that is JSON is kept.
    assert Path("failed.jsonl").read_bytes() == b'{"type":"tack","userId":"u1"}\n'
    assert (result.failed_written, result.failed_unwritable) == (1, 0)
    assert result.report_path == Path("report.json")
    report = json.loads(Path("report.json").read_text())
    assert (report["mode"], report["api_url"], report["read"], report["stopped_by"]) == (
        "dry-run",
        "https://api.courier.com",
        3,
        None,
    )
    assert report["outcomes"] == {"planned": {"ok": 1}, "rejected": {"invalid_json": 1, "unknown_type": 1}}
    assert report["targets"] == {"automation order-confirmation": {"planned": 1}}
    assert [p["origin"] for p in report["problems"]] == ["events.jsonl:2", "events.jsonl:3"]


def test_a_dry_run_never_makes_a_ledger() -> None:
    write_events(identify(1, "u1"))
    result, _ = go(dry_run("events.jsonl", ledger_path=Path("ledger.sqlite3")))
    assert result.summary.outcomes == {("planned", ""): 1}
    assert result.ledger_path is None
    assert not Path("ledger.sqlite3").exists()


# --- a send --------------------------------------------------------------------------------------


def test_a_send_records_what_courier_accepted_and_keeps_what_it_refused(courier: FakeCourier) -> None:
    courier.rejected_recipients.add("bad-user")
    events = write_events(
        checkout(1, "u1"), checkout(2, "bad-user"), identify(3, "u3"), checkout(1, "u1"), b"{oops"
    )
    options = send_to(
        courier,
        "events.jsonl",
        ledger_path=Path("ledger.sqlite3"),
        failed_path=Path("failed.jsonl"),
        report_path=Path("report.json"),
    )
    result, shown = go(options)

    assert result.summary.outcomes == {
        ("sent", ""): 2,
        ("failed", "http_400"): 1,
        ("skipped", "duplicate"): 1,
        ("rejected", "invalid_json"): 1,
    }
    assert result.summary.read == 5
    assert result.summary.exit_code == ExitCode.FAILED
    assert (result.stopped_by, result.input_read, result.failing_targets) == (None, True, {})
    assert result.read_bytes == result.total_bytes == events.stat().st_size
    assert sorted((r.event.origin, r.outcome, r.reason, r.status) for r in shown.results_shown) == [
        ("events.jsonl:1", "sent", "", 200),
        ("events.jsonl:2", "failed", "http_400", 400),
        ("events.jsonl:3", "sent", "", 200),
    ]
    assert shown.closed == 1
    assert len(courier.received) == 3  # a 400 is not retried
    assert len(courier.acted) == 2

    # The ledger holds the two acceptances, and nothing of the 400.
    assert (result.ledger_path, result.ledger_recorded) == (Path("ledger.sqlite3"), 2)
    assert accepted_rows(Path("ledger.sqlite3")) == [
        ("id-3", "(profile)", 200),
        ("msg-1", "order-confirmation", 200),
    ]
    with Ledger(Path("ledger.sqlite3"), create=False) as ledger:
        assert list(ledger.unsettled()) == []
        last_run = ledger.summary().last_run
    assert last_run is not None
    assert (last_run["api_url"], last_run["inputs"], last_run["stopped_by"]) == (
        courier.url,
        ["events.jsonl"],
        None,
    )

    # The failure file holds the refused event's line as it was read, and nothing else.
    assert Path("failed.jsonl").read_bytes() == events.read_bytes().splitlines(keepends=True)[1]
    assert (result.failed_written, result.failed_unwritable) == (1, 0)

    report = json.loads(Path("report.json").read_text())
    assert result.report_path == Path("report.json")
    assert (report["mode"], report["api_url"], report["read"], report["stopped_by"]) == (
        "send",
        courier.url,
        5,
        None,
    )
    assert report["outcomes"] == {
        "failed": {"http_400": 1},
        "rejected": {"invalid_json": 1},
        "sent": {"ok": 2},
        "skipped": {"duplicate": 1},
    }
    assert report["targets"] == {
        "automation order-confirmation": {"failed": 1, "sent": 1},
        "profile merge": {"sent": 1},
    }
    assert (report["http_statuses"], report["requests"], report["retries"]) == ({"200": 2, "400": 1}, 3, 0)
    assert sorted((p["origin"], p["outcome"], p["reason"]) for p in report["problems"]) == [
        ("events.jsonl:2", "failed", "http_400"),
        ("events.jsonl:5", "rejected", "invalid_json"),
    ]


def test_the_failure_file_replays_what_did_not_go_out_and_only_that(courier: FakeCourier) -> None:
    courier.rejected_recipients.add("bad-user")
    write_events(checkout(1, "u1"), checkout(2, "bad-user"), identify(3, "bad-user"), identify(4, "u4"))
    ledger = Path("ledger.sqlite3")
    first, _ = go(send_to(courier, "events.jsonl", ledger_path=ledger, failed_path=Path("failed.jsonl")))
    assert first.summary.outcomes == {("sent", ""): 2, ("failed", "http_400"): 2}
    # In the order the requests ended, which concurrency may change.
    kept = sorted(Path("failed.jsonl").read_bytes().splitlines(keepends=True))
    assert kept == sorted(Path("events.jsonl").read_bytes().splitlines(keepends=True)[1:3])

    courier.rejected_recipients.clear()
    again, _ = go(send_to(courier, "failed.jsonl", ledger_path=ledger, failed_path=Path("failed-2.jsonl")))
    assert again.summary.outcomes == {("sent", ""): 2}
    assert again.summary.exit_code == ExitCode.OK
    assert (again.failed_written, Path("failed-2.jsonl").read_bytes()) == (0, b"")
    assert accepted_rows(ledger) == [
        ("id-3", "(profile)", 200),
        ("id-4", "(profile)", 200),
        ("msg-1", "order-confirmation", 200),
        ("msg-2", "order-confirmation", 200),
    ]
    assert len(courier.acted) == 4 and set(courier.acted.values()) == {1}


def test_a_second_run_over_the_same_events_sends_nothing_the_ledger_holds(courier: FakeCourier) -> None:
    write_events(checkout(1, "u1"), identify(2, "u2"))
    ledger = Path("ledger.sqlite3")
    go(send_to(courier, "events.jsonl", ledger_path=ledger))
    received = len(courier.received)
    again, shown = go(send_to(courier, "events.jsonl", ledger_path=ledger, report_path=Path("r.json")))
    assert len(courier.received) == received == 2
    assert again.summary.outcomes == {("skipped", "already_sent"): 2}
    assert again.summary.exit_code == ExitCode.OK
    assert (shown.results_shown, again.ledger_recorded) == ([], 0)
    assert json.loads(Path("r.json").read_text())["targets"] == {
        "automation order-confirmation": {"already_sent": 1},
        "profile merge": {"already_sent": 1},
    }
    with Ledger(ledger, create=False) as opened:
        assert opened.summary().runs == 2


def test_a_refused_api_key_stops_the_run_and_keeps_every_event_it_read(courier: FakeCourier) -> None:
    events = [identify(n, f"u{n}") for n in range(200)]
    write_events(*events)
    options = send_to(
        courier,
        "events.jsonl",
        api_key="sk_wrong_key_0000",
        ledger_path=Path("ledger.sqlite3"),
        failed_path=Path("failed.jsonl"),
        report_path=Path("report.json"),
    )
    result, shown = go(options)
    assert result.error is not None and result.stopped_by is None
    assert "401" in result.error.detail
    assert courier.acted == {}
    totals = result.summary.totals()
    assert "sent" not in totals
    assert sum(totals.values()) == result.summary.read > 0
    failed = [json.loads(line) for line in Path("failed.jsonl").read_text().splitlines()]
    assert sorted(failed, key=lambda event: event["traits"]["n"]) == events[: result.summary.read]
    assert result.failed_written == result.summary.read
    assert (accepted_rows(Path("ledger.sqlite3")), result.ledger_recorded) == ([], 0)
    with Ledger(Path("ledger.sqlite3"), create=False) as ledger:
        # A refusal is an answer: nothing is left uncertain for the next run.
        assert list(ledger.unsettled()) == []
        last_run = ledger.summary().last_run
    assert last_run is not None and last_run["stopped_by"] == "unauthorized"
    report = json.loads(Path("report.json").read_text())
    assert (report["stopped_by"], report["stop_detail"], report["read"]) == (
        "unauthorized",
        result.error.detail,
        result.summary.read,
    )
    assert report["totals"] == totals
    assert shown.closed == 1


# --- outputs checked before anything is read or sent ---------------------------------------------


@pytest.mark.parametrize(
    ("failed", "report"),
    [
        ("f.jsonl", "no/such/folder/report.json"),
        ("no/such/folder/failed.jsonl", "report.json"),
        ("f.jsonl", "events.jsonl"),
        ("events.jsonl", "report.json"),
        ("f.jsonl", "."),
    ],
    ids=["report-no-folder", "failed-no-folder", "report-is-input", "failed-is-input", "report-is-a-folder"],
)
def test_an_output_that_cannot_be_written_fails_the_run_before_anything_is_sent(
    courier: FakeCourier, failed: str, report: str
) -> None:
    events = write_events(identify(1, "u1"))
    before = events.read_bytes()
    options = send_to(
        courier,
        "events.jsonl",
        ledger_path=Path("ledger.sqlite3"),
        failed_path=Path(failed),
        report_path=Path(report),
    )
    shown = Shown()
    with pytest.raises(UsageError):
        run(options, shown, stdin=None)
    assert courier.received == []
    assert events.read_bytes() == before
    assert sorted(path.name for path in Path().iterdir()) == ["events.jsonl"]
    assert shown.closed == 0


# --- take_inventory ------------------------------------------------------------------------------


def test_an_inventory_counts_the_inputs_without_sending_or_making_a_ledger() -> None:
    write_events(checkout(1, "u1"), checkout(1, "u1"), identify(2, "u2"), b"{broken")
    Path("empty.jsonl").write_bytes(b"")
    inventory = take_inventory(
        dry_run("events.jsonl", "empty.jsonl", ledger_path=Path("ledger.sqlite3")), stdin=None
    )
    assert inventory.summary.outcomes == {
        ("planned", ""): 2,
        ("skipped", "duplicate"): 1,
        ("rejected", "invalid_json"): 1,
    }
    assert (inventory.types, inventory.notes, inventory.distinct_users) == (
        Counter({"track": 2, "identify": 1}),
        1,
        2,
    )
    assert inventory.rejected == {"invalid_json": ["events.jsonl:4"]}
    assert not Path("ledger.sqlite3").exists()


def test_an_inventory_counts_what_the_ledger_holds_as_sent_before_for_that_api_only(
    courier: FakeCourier,
) -> None:
    write_events(checkout(1, "u1"), identify(2, "u2"), checkout(3, "u3"))
    ledger = Path("ledger.sqlite3")
    go(send_to(courier, "events.jsonl", ledger_path=ledger, limit=2))
    assert len(courier.acted) == 2
    same_api = dry_run("events.jsonl", ledger_path=ledger)
    same_api.base_url = courier.url
    found = take_inventory(same_api, stdin=None).as_dict(CONFIG)
    assert found["requests_sent_before"] == {"automation order-confirmation": 1, "profile merge": 1}
    assert found["requests"] == {"automation order-confirmation": 1}
    assert found["outcomes"] == {"planned": {"ok": 1}, "skipped": {"already_sent": 2}}
    elsewhere = take_inventory(dry_run("events.jsonl", ledger_path=ledger), stdin=None).as_dict(CONFIG)
    assert elsewhere["requests_sent_before"] == {}
    assert elsewhere["requests"] == {"automation order-confirmation": 2, "profile merge": 1}
