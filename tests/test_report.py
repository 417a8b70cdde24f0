"""The files a send leaves behind: the failure file that replays what did not go out, and the report."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest

from segroute import __version__
from segroute.errors import OutputError, UsageError
from segroute.events import parse_event
from segroute.models import (
    NOT_JSON,
    SKIP_REASONS,
    Delivered,
    Event,
    Planned,
    Record,
    Rejected,
    RequestResult,
    Skipped,
    Target,
)
from segroute.report import (
    MAX_LISTED_PROBLEMS,
    FailedWriter,
    ProblemLog,
    build_report,
    check_outputs,
    write_report,
)
from segroute.routing import PROFILE
from segroute.summary import Summary
from segroute.transform import build_requests

BASE = "https://api.courier.com"
WELCOME = Target("automation", "welcome-flow")
STARTED = datetime.datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=datetime.UTC)


def event_of(value: dict[str, Any], origin: str = "in.jsonl:1", *, text: bytes | None = None) -> Event:
    """The event the parser makes of a record; ``text`` is its line as read, when it had one."""
    parsed = parse_event(Record(origin, value, len(text or json.dumps(value)), text))
    assert isinstance(parsed, Event)
    return parsed


def track(n: int, user: str = "u1") -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Signed Up",
        "userId": user,
        "messageId": f"m{n}",
        "properties": {"n": n},
    }


def identify(n: int, user: str = "u1") -> dict[str, Any]:
    return {"type": "identify", "userId": user, "messageId": f"i{n}", "traits": {"n": n}}


def result_of(
    event: Event,
    outcome: Literal["sent", "failed", "not_attempted", "skipped"],
    reason: str = "",
    *,
    target: Target = WELCOME,
    status: int | None = None,
    attempts: int = 1,
    detail: str = "",
) -> RequestResult:
    (request,) = build_requests(event, (target,), BASE)
    return RequestResult(request, event, outcome, reason, status=status, attempts=attempts, detail=detail)


def delivered(event: Event, *results: RequestResult) -> Delivered:
    return Delivered(event, results)


def failed_file(path: Path, *outcomes: Any) -> tuple[bytes, int, int]:
    """What a FailedWriter writes for these outcomes: its bytes, ``written`` and ``unwritable``."""
    writer = FailedWriter(path)
    for outcome in outcomes:
        writer.add(outcome)
    writer.close()
    return path.read_bytes(), writer.written, writer.unwritable


# --- FailedWriter --------------------------------------------------------------------------------


def test_an_event_that_failed_is_written_as_its_line_was_read(tmp_path: Path) -> None:
    line = b'{"type": "track",   "event": "Signed Up", "userId": "u1", "messageId": "m1"}'
    event = event_of(json.loads(line), text=line)
    content, written, unwritable = failed_file(
        tmp_path / "failed.jsonl", delivered(event, result_of(event, "failed", "http_400", status=400))
    )
    assert content == line + b"\n"
    assert (written, unwritable) == (1, 0)


def test_an_event_without_a_line_of_its_own_is_written_as_compact_json_in_its_field_order(
    tmp_path: Path,
) -> None:
    value = {"userId": "u1", "type": "identify", "traits": {"b": 1, "a": "é"}, "messageId": "i1"}
    event = event_of(value)
    content, written, _ = failed_file(
        tmp_path / "failed.jsonl", delivered(event, result_of(event, "not_attempted", "stopped", attempts=0))
    )
    assert content == '{"userId":"u1","type":"identify","traits":{"b":1,"a":"é"},"messageId":"i1"}\n'.encode()
    assert written == 1


def test_only_what_did_not_go_out_is_kept_one_event_a_line_in_the_order_given(tmp_path: Path) -> None:
    events = [event_of(track(n), f"in.jsonl:{n}") for n in range(1, 11)]
    outcomes = [
        delivered(events[0], result_of(events[0], "sent", status=200)),
        delivered(events[1], result_of(events[1], "failed", "http_503", status=503, attempts=6)),
        delivered(events[2], result_of(events[2], "not_attempted", "stopped", attempts=0)),
        delivered(events[3], result_of(events[3], "skipped", "target_failing", attempts=0)),
        Skipped(events[4].origin, "uncertain", events[4].message_id, events[4]),
        Skipped(events[5].origin, "target_failing", events[5].message_id, events[5]),
        Skipped(events[6].origin, "duplicate", events[6].message_id, events[6]),
        Skipped(events[7].origin, "already_sent", events[7].message_id, events[7]),
        Planned(events[8], build_requests(events[8], (WELCOME,), BASE)),
        # One request of two failed: the event is kept whole, to be replayed.
        delivered(
            events[9],
            result_of(events[9], "sent", status=200),
            result_of(events[9], "failed", "http_400", target=PROFILE, status=400),
        ),
    ]
    content, written, unwritable = failed_file(tmp_path / "failed.jsonl", *outcomes)
    kept = [events[n].data for n in (1, 2, 3, 4, 5, 9)]
    assert [json.loads(line) for line in content.splitlines()] == kept
    assert (written, unwritable) == (6, 0)


def test_a_rejected_record_is_kept_when_it_is_json_and_left_out_when_it_is_not(tmp_path: Path) -> None:
    content, written, _ = failed_file(
        tmp_path / "failed.jsonl",
        Rejected("in.jsonl:1", "invalid_json", "not valid JSON"),
        Rejected("in.jsonl:2", "not_object", "not a JSON object but an array", [1, "two", None]),
        Rejected("in.jsonl:3", "unknown_type", "unknown type 'tack'", {"type": "tack", "userId": "u"}),
        Rejected("in.jsonl:4", "invalid_json", "not valid JSON", NOT_JSON),
    )
    assert content == b'[1,"two",null]\n{"type":"tack","userId":"u"}\n'
    assert written == 2


def test_a_skipped_event_that_should_have_gone_but_has_no_event_is_not_written(tmp_path: Path) -> None:
    content, written, _ = failed_file(tmp_path / "failed.jsonl", Skipped("in.jsonl:1", "uncertain", "m1"))
    assert (content, written) == (b"", 0)


def test_a_value_too_deep_to_write_is_counted_as_unwritable_and_the_rest_is_written(tmp_path: Path) -> None:
    deep: Any = []
    for _ in range(1000):
        deep = [deep]
    content, written, unwritable = failed_file(
        tmp_path / "failed.jsonl",
        Rejected("in.jsonl:1", "not_object", "not a JSON object but an array", deep),
        Rejected("in.jsonl:2", "not_object", "not a JSON object but an array", [2]),
    )
    assert content == b"[2]\n"
    assert (written, unwritable) == (1, 1)


def test_the_failure_file_is_emptied_when_it_is_opened(tmp_path: Path) -> None:
    path = tmp_path / "failed.jsonl"
    path.write_bytes(b'{"left": "from before"}\n')
    assert failed_file(path) == (b"", 0, 0)


def test_a_failure_file_that_cannot_be_made_is_an_output_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "failed.jsonl"
    with pytest.raises(OutputError, match=f"^failure file {path}: cannot write: No such file or directory$"):
        FailedWriter(path)


# --- ProblemLog ----------------------------------------------------------------------------------


def test_a_rejected_record_is_listed_with_its_origin_reason_and_detail() -> None:
    problems = ProblemLog()
    problems.add_rejected(Rejected("in.jsonl:4", "invalid_json", "not valid JSON (column 2)"))
    assert problems.items == [
        {
            "origin": "in.jsonl:4",
            "outcome": "rejected",
            "reason": "invalid_json",
            "detail": "not valid JSON (column 2)",
        }
    ]
    assert problems.unlisted == 0


def test_a_request_that_did_not_go_out_is_listed_with_what_was_sent_and_how_it_ended() -> None:
    event = event_of(track(7, "ana"), "in.jsonl:7")
    problems = ProblemLog()
    problems.add_result(result_of(event, "failed", "http_400", status=400, attempts=1, detail="HTTP 400: no"))
    problems.add_result(result_of(event, "not_attempted", "stopped", target=PROFILE, attempts=0))
    assert problems.items == [
        {
            "origin": "in.jsonl:7",
            "outcome": "failed",
            "reason": "http_400",
            "detail": "HTTP 400: no",
            "messageId": "m7",
            "method": "POST",
            "url": "https://api.courier.com/automations/welcome-flow/invoke",
            "status": 400,
            "attempts": 1,
        },
        {
            "origin": "in.jsonl:7",
            "outcome": "not_attempted",
            "reason": "stopped",
            "detail": "",
            "messageId": "m7",
            "method": "POST",
            "url": "https://api.courier.com/profiles/ana",
            "status": None,
            "attempts": 0,
        },
    ]


def test_the_listing_stops_at_max_listed_problems_and_counts_the_rest() -> None:
    problems = ProblemLog()
    for n in range(MAX_LISTED_PROBLEMS + 3):
        if n % 2:
            problems.add_rejected(Rejected(f"in.jsonl:{n}", "invalid_json", "not valid JSON"))
        else:
            problems.add_result(result_of(event_of(track(n), f"in.jsonl:{n}"), "failed", "network"))
    assert len(problems.items) == MAX_LISTED_PROBLEMS
    assert [item["origin"] for item in problems.items] == [
        f"in.jsonl:{n}" for n in range(MAX_LISTED_PROBLEMS)
    ]
    assert problems.unlisted == 3


# --- build_report and write_report ---------------------------------------------------------------


def stopped_run() -> tuple[Summary, ProblemLog]:
    """A send Ctrl-C stopped: two sent (one after two retries), one 400, one never attempted, a
    duplicate, an identify with no traits and a line that was not JSON."""
    summary, problems = Summary(), ProblemLog()
    sent = event_of(track(1), "in.jsonl:1")
    retried = event_of(identify(2), "in.jsonl:2")
    refused = event_of(track(3, "bad"), "in.jsonl:3")
    stopped = event_of(track(4), "in.jsonl:4")
    results = [
        result_of(sent, "sent", status=200),
        result_of(retried, "sent", target=PROFILE, status=200, attempts=3),
        result_of(refused, "failed", "http_400", status=400, detail="HTTP 400: invalid recipient bad"),
        result_of(stopped, "not_attempted", "stopped", attempts=0),
    ]
    for result in results:
        summary.add(delivered(result.event, result))
        if result.outcome != "sent":
            problems.add_result(result)
    summary.add(Skipped("in.jsonl:5", "duplicate", "m1", event_of(track(1), "in.jsonl:5")))
    summary.add(Skipped("in.jsonl:6", "no_traits", "i6", event_of({"type": "identify", "userId": "u"})))
    rejected = Rejected("in.jsonl:7", "invalid_json", "not valid JSON")
    summary.add(rejected)
    problems.add_rejected(rejected)
    return summary, problems


def test_the_report_of_a_stopped_run_holds_every_count_and_why_it_stopped() -> None:
    summary, problems = stopped_run()
    found = build_report(
        summary,
        problems,
        api_url="http://127.0.0.1:9999",
        dry_run=False,
        started=STARTED,
        seconds=1.23456,
        stopped_by="SIGINT",
        stop_detail="",
        throttled=4,
        failing_targets={"automation welcome-flow": "HTTP 404: no such automation"},
    )
    assert found == {
        "segroute": __version__,
        "mode": "send",
        "api_url": "http://127.0.0.1:9999",
        "started_at": "2026-03-02T09:30:15+00:00",
        "duration_seconds": 1.235,
        "stopped_by": "SIGINT",
        "stop_detail": "",
        "read": 7,
        "totals": {"failed": 1, "not_attempted": 1, "rejected": 1, "sent": 2, "skipped": 2},
        "outcomes": {
            "failed": {"http_400": 1},
            "not_attempted": {"stopped": 1},
            "rejected": {"invalid_json": 1},
            "sent": {"ok": 2},
            "skipped": {"duplicate": 1, "no_traits": 1},
        },
        "targets": {
            "automation welcome-flow": {"failed": 1, "not_attempted": 1, "sent": 1},
            "profile merge": {"sent": 1},
        },
        "http_statuses": {"200": 2, "400": 1},
        "requests": 3,
        "retries": 2,
        "throttled": 4,
        "failing_targets": {"automation welcome-flow": "HTTP 404: no such automation"},
        "requests_per_second": 2.4,
        "skip_reasons": {"duplicate": SKIP_REASONS["duplicate"], "no_traits": SKIP_REASONS["no_traits"]},
        "link_failures": [],
        "problems": problems.items,
        "problems_not_listed": 0,
    }
    assert [item["origin"] for item in found["problems"]] == ["in.jsonl:3", "in.jsonl:4", "in.jsonl:7"]


def test_the_report_of_a_dry_run_counts_planned_requests_and_no_rate() -> None:
    summary = Summary()
    for n in range(3):
        event = event_of(track(n), f"in.jsonl:{n + 1}")
        summary.add(Planned(event, build_requests(event, (WELCOME, PROFILE), BASE)))
    found = build_report(
        summary, ProblemLog(), api_url=BASE, dry_run=True, started=STARTED, seconds=0.0, stopped_by=None
    )
    assert (found["mode"], found["read"], found["totals"]) == ("dry-run", 3, {"planned": 3})
    assert found["outcomes"] == {"planned": {"ok": 3}}
    assert found["targets"] == {"automation welcome-flow": {"planned": 3}, "profile merge": {"planned": 3}}
    assert (found["requests"], found["requests_per_second"], found["retries"]) == (0, None, 0)
    assert (found["stopped_by"], found["failing_targets"], found["skip_reasons"]) == (None, {}, {})
    assert (found["problems"], found["problems_not_listed"]) == ([], 0)


def test_the_report_counts_the_problems_it_does_not_list() -> None:
    problems = ProblemLog()
    summary = Summary()
    for n in range(MAX_LISTED_PROBLEMS + 2):
        rejected = Rejected(f"in.jsonl:{n + 1}", "invalid_json", "not valid JSON")
        summary.add(rejected)
        problems.add_rejected(rejected)
    found = build_report(
        summary, problems, api_url=BASE, dry_run=True, started=STARTED, seconds=1.0, stopped_by=None
    )
    assert (len(found["problems"]), found["problems_not_listed"]) == (MAX_LISTED_PROBLEMS, 2)
    assert found["outcomes"] == {"rejected": {"invalid_json": MAX_LISTED_PROBLEMS + 2}}


def test_the_report_is_written_as_indented_json_that_reads_back_the_same(tmp_path: Path) -> None:
    summary, problems = stopped_run()
    built = build_report(
        summary, problems, api_url=BASE, dry_run=False, started=STARTED, seconds=2.0, stopped_by="SIGTERM"
    )
    path = tmp_path / "report.json"
    write_report(path, built)
    assert path.read_bytes() == orjson.dumps(built, option=orjson.OPT_INDENT_2) + b"\n"
    assert path.read_text().startswith('{\n  "segroute": ')
    assert json.loads(path.read_text()) == built


def test_a_report_that_cannot_be_written_is_an_output_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=f"^report {tmp_path}: cannot write: Is a directory$"):
        write_report(tmp_path, {"read": 0})


# --- check_outputs -------------------------------------------------------------------------------


def test_a_new_file_in_a_folder_that_exists_may_be_written(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    check_outputs({"failure file": tmp_path / "failed.jsonl"}, inputs=[str(events), "-"], ledger=None)
    check_outputs({"report": events.with_name("other.jsonl")}, inputs=["-"], ledger=None)
    assert sorted(os.listdir(tmp_path)) == ["events.jsonl"]  # only checked, never made


def test_an_output_that_is_also_an_input_is_refused_however_it_is_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("events.jsonl").write_text('{"type": "identify"}\n')
    Path("link.jsonl").symlink_to("events.jsonl")
    for output, inputs in [
        (Path("events.jsonl"), ["events.jsonl"]),
        (tmp_path / "events.jsonl", ["./events.jsonl"]),
        (Path("link.jsonl"), ["other.jsonl", str(tmp_path / "events.jsonl")]),
    ]:
        with pytest.raises(UsageError, match="is also an input"):
            check_outputs({"failure file": output}, inputs=inputs, ledger=None)
    assert Path("events.jsonl").read_text() == '{"type": "identify"}\n'


@pytest.mark.parametrize("where", ["no/such/folder/report.json", "folder", "file.txt/report.json"])
def test_an_output_that_cannot_be_made_there_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("folder").mkdir()
    Path("file.txt").write_text("")
    with pytest.raises(UsageError, match=f"^report {where}: cannot write there$"):
        check_outputs({"report": Path(where)}, inputs=["-"], ledger=None)


def test_an_output_in_an_input_folder_is_refused_as_it_would_be_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("logs/day").mkdir(parents=True)
    growing = {"failure file"}
    for output in (Path("logs/failed.jsonl"), Path("logs/day/failed.jsonl"), tmp_path / "logs" / "f.jsonl"):
        with pytest.raises(UsageError, match=f"^failure file {output} is in an input folder"):
            check_outputs(
                {"failure file": output}, inputs=["logs"], ledger=None, written_while_reading=growing
            )
    check_outputs(
        {"failure file": Path("logs-failed.jsonl")},
        inputs=["logs"],
        ledger=None,
        written_while_reading=growing,
    )
    # A report is written once everything was read: in the input folder, it is read by no run but the
    # next (as a record that is not an event), which is the user's to choose.
    check_outputs(
        {"report": Path("logs/report.json")}, inputs=["logs"], ledger=None, written_while_reading=growing
    )


def test_outputs_that_are_the_ledger_or_one_another_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ledger = Path("segroute-ledger.sqlite3")
    with pytest.raises(UsageError, match=f"^report {ledger} is also the ledger: give each its own file$"):
        check_outputs({"failure file": None, "report": ledger}, inputs=["-"], ledger=ledger)
    absolute = tmp_path / "segroute-ledger.sqlite3"
    with pytest.raises(UsageError, match=f"^failure file {absolute} is also the ledger"):
        check_outputs({"failure file": absolute}, inputs=["-"], ledger=ledger)
    with pytest.raises(
        UsageError, match="^report out.json is also the failure file: give each its own file$"
    ):
        check_outputs(
            {"failure file": tmp_path / "out.json", "report": Path("out.json")}, inputs=["-"], ledger=ledger
        )
    check_outputs(
        {"failure file": Path("failed.jsonl"), "report": Path("r.json")}, inputs=["-"], ledger=ledger
    )


def test_a_report_through_a_broken_link_is_refused_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("r.json").symlink_to(tmp_path / "gone" / "r.json")
    with pytest.raises(UsageError, match="^report r.json: cannot write there$"):
        check_outputs({"report": Path("r.json")}, inputs=["-"], ledger=None)


def test_a_hidden_failure_file_in_an_input_folder_is_allowed_as_the_walk_leaves_it_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("logs/.segroute").mkdir(parents=True)
    for output in (Path("logs/.failed.jsonl"), Path("logs/.segroute/failed.jsonl")):
        check_outputs(
            {"failure file": output}, inputs=["logs"], ledger=None, written_while_reading={"failure file"}
        )


def test_an_output_behind_a_loop_of_links_is_refused_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("loop.json").symlink_to("loop.json")
    with pytest.raises(UsageError, match="^report loop.json: cannot follow the path: "):
        check_outputs({"report": Path("loop.json")}, inputs=["-"], ledger=None)
