"""The delivery ledger: duplicates across runs and files; dry runs and --no-ledger; shards and merge;
the ledger commands; and the Ledger itself: lookups, batches, a disk that fills, versions. (Sends
stopped by a signal or killed, then resumed, are in test_interrupts.py.)
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sqlite3
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from segroute import ledger as ledger_module
from segroute.cli import app
from segroute.errors import LedgerError
from segroute.ledger import Ledger
from segroute.models import Event, Request, RequestResult, Target
from tests.conftest import (
    assert_each_expected_key_acted_on_once,
    background,
    expected_keys,
    integrity,
    ledger_keys,
    ledger_rows,
    received_keys,
    received_so_far,
    report,
    requests_of,
    runner,
    segroute_send,
    send,
    table_rows,
)
from tests.courier_server import FakeCourier

# _isolated: the delivery tests' autouse fixture (a tmp folder with their config and API key),
# brought in by name so it applies here too.
from tests.test_delivery import CONFIG, _isolated, checkout, identify, write_events  # noqa: F401

HOW_MADE = "(a send creates it)"


# --- helpers ----------------------------------------------------------------------------------


def send_in_new_process(courier: FakeCourier, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        segroute_send(*args, "--api-url", courier.url), capture_output=True, env=dict(os.environ), timeout=60
    )
    return done.returncode, done.stderr.decode()


# --- duplicates -------------------------------------------------------------------------------


def test_duplicates_across_runs_use_the_ledger_and_within_a_run_across_files(
    courier: FakeCourier, ledger: Path
) -> None:
    old = [checkout(n, f"u{n % 3}") for n in range(6)] + [identify(n, f"u{n % 3}") for n in range(6)]
    new = [checkout(n, f"u{n % 3}") for n in range(6, 10)] + [identify(n, f"u{n % 3}") for n in range(6, 9)]
    write_events(old, "a.jsonl")
    write_events(old[:3] + new[:4] + old[3:] + new[4:], "b.jsonl")
    keys_a, keys_b = expected_keys(courier, "a.jsonl"), expected_keys(courier, "b.jsonl")
    assert keys_a < keys_b

    # Each run is a process of its own: what the second skips, it learned from the ledger file.
    code, err = send_in_new_process(courier, "a.jsonl", "--report", "r1.json")
    assert code == 0, err
    assert report("r1.json")["outcomes"] == {"sent": {"ok": 12}}
    start = received_so_far(courier)
    code, err = send_in_new_process(courier, "b.jsonl", "--report", "r2.json")
    assert code == 0, err
    assert report("r2.json")["outcomes"] == {"sent": {"ok": 7}, "skipped": {"already_sent": 12}}
    assert set(received_keys(courier, start)) == keys_b - keys_a
    assert_each_expected_key_acted_on_once(courier, keys_b)
    assert ledger_keys(ledger) == keys_b

    # Within one run, the same messageId in a second file is a duplicate.
    extra = [identify(n, f"u{n}") for n in range(20, 23)]
    write_events(extra, "c.jsonl")
    write_events([*extra, identify(23, "u23")], "d.jsonl")
    code, err = send_in_new_process(courier, "c.jsonl", "d.jsonl", "--report", "r3.json")
    assert code == 0, err
    assert report("r3.json")["outcomes"] == {"sent": {"ok": 4}, "skipped": {"duplicate": 3}}

    # Another ledger knows none of it: everything goes again, and only Courier's store answers.
    start = received_so_far(courier)
    code, err = send_in_new_process(courier, "b.jsonl", "--ledger", "other.sqlite3", "--report", "r4.json")
    assert code == 0, err
    assert report("r4.json")["outcomes"] == {"sent": {"ok": 19}}
    assert set(received_keys(courier, start)) == keys_b
    assert set(courier.acted.values()) == {1}


# --- dry runs, --no-ledger, the default path --------------------------------------------------


def test_a_dry_run_leaves_out_what_the_ledger_holds_and_creates_none(
    courier: FakeCourier, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_events([checkout(n, f"u{n % 2}") for n in range(3)], "a.jsonl")
    write_events([checkout(n, f"u{n % 2}") for n in range(5)] + [identify(9, "u9")], "b.jsonl")
    assert send(courier, "a.jsonl").exit_code == 0
    recorded = ledger_keys(ledger)
    assert len(recorded) == 6
    dry = send(courier, "b.jsonl", "--dry-run", "-o", "jsonl")
    assert dry.exit_code == 0, dry.stderr
    shown = {json.loads(line)["headers"]["Idempotency-Key"] for line in dry.stdout.splitlines()}
    assert shown == expected_keys(courier, "b.jsonl") - recorded
    assert len(shown) == 5
    assert ["skipped", "already_sent", "3"] in table_rows(dry.stderr)
    assert dry.stderr.splitlines()[-1] == (
        f"{ledger}: the ledger, read: 6 requests it holds as accepted were left out"
    )
    # Against another API, the same ledger holds none of these.
    other = runner.invoke(
        app, ["send", "b.jsonl", "--dry-run", "-o", "jsonl", "--api-url", "http://127.0.0.1:9"]
    )
    assert (
        other.stderr.splitlines()[-1]
        == f"{ledger}: the ledger, read: it holds none of these requests as accepted"
    )
    opened = Ledger(ledger, create=False)
    try:
        assert opened.summary().runs == 1  # a dry run records no run
    finally:
        opened.close()

    fresh = Path("fresh") / "ledger.sqlite3"
    fresh.parent.mkdir()
    monkeypatch.setenv("SEGROUTE_LEDGER", str(fresh))
    dry = send(courier, "b.jsonl", "--dry-run", "-o", "jsonl")
    assert dry.exit_code == 0, dry.stderr
    assert len(dry.stdout.splitlines()) == 11
    assert list(fresh.parent.iterdir()) == []
    assert "the ledger" not in dry.stderr


def test_no_ledger_creates_no_file_and_sends_again(
    courier: FakeCourier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGROUTE_LEDGER", str(tmp_path / "unused.sqlite3"))
    write_events([checkout(1, "u1"), identify(2, "u2")])
    for _ in range(2):
        result = send(courier, "events.jsonl", "--no-ledger")
        assert result.exit_code == 0, result.stderr
        assert "the ledger" not in result.stderr
    assert not any(p.name.endswith((".sqlite3", "-wal", "-shm")) for p in tmp_path.iterdir())
    assert len(courier.received) == 6
    assert_each_expected_key_acted_on_once(courier, expected_keys(courier, "events.jsonl"))
    both = send(courier, "events.jsonl", "--no-ledger", "--ledger", "x.sqlite3")
    assert both.exit_code == 2
    assert both.stderr == "error: --ledger and --no-ledger: give one\n"


def test_the_default_ledger_sits_beside_the_config(
    courier: FakeCourier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEGROUTE_LEDGER")
    Path("conf").mkdir()
    Path("conf/segroute.toml").write_text(CONFIG)
    write_events([checkout(1, "u1"), identify(2, "u2")])
    result = send(courier, "events.jsonl", "-c", "conf/segroute.toml")
    assert result.exit_code == 0, result.stderr
    beside = Path("conf") / "segroute-ledger.sqlite3"
    assert result.stderr.splitlines()[-1] == f"{beside}: the ledger: 3 accepted requests recorded this run"
    assert len(ledger_keys(beside)) == 3
    shown = runner.invoke(app, ["ledger", "-c", "conf/segroute.toml", "-o", "json"])
    assert shown.exit_code == 0, shown.stderr
    assert (json.loads(shown.stdout)["ledger"], json.loads(shown.stdout)["requests"]) == (str(beside), 3)
    assert not (tmp_path / "segroute-ledger.sqlite3").exists()
    # With the config of the working folder, the ledger is there too; a second run records nothing.
    write_events([identify(3, "u3")], "more.jsonl")
    result = send(courier, "more.jsonl")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "segroute-ledger.sqlite3: the ledger: 1 accepted request recorded this run"
    )
    again = send(courier, "more.jsonl")
    assert again.stderr.splitlines()[-1] == (
        "segroute-ledger.sqlite3: the ledger: 0 accepted requests recorded this run"
    )
    assert len(ledger_keys(tmp_path / "segroute-ledger.sqlite3")) == 1


# --- --idempotency-ttl ------------------------------------------------------------------------


def expiration(received_headers: dict[str, str]) -> str | None:
    lowered = {name.lower(): value for name, value in received_headers.items()}
    return lowered.get("x-idempotency-expiration")


def test_idempotency_ttl_sends_the_expiration_on_every_attempt(courier: FakeCourier) -> None:
    courier.fault("status", times=3, status=503, headers={"Retry-After": "0"})
    write_events([checkout(1, "u1"), identify(2, "u2"), checkout(3, "u3")])
    before = time.time()
    result = send(courier, "events.jsonl", "--idempotency-ttl", "30d")
    after = time.time()
    assert result.exit_code == 0, result.stderr
    assert len(courier.received) == 5 + 3
    assert max(received_keys(courier).values()) >= 2  # retries carry it too
    ttl = 30 * 86400
    for received in courier.received:
        value = expiration(received.headers)
        assert value is not None and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), value
        moment = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
        assert before + ttl - 60 <= moment.timestamp() <= after + ttl + 60

    start = received_so_far(courier)
    write_events([identify(4, "u4")], "plain.jsonl")
    assert send(courier, "plain.jsonl").exit_code == 0
    assert [expiration(r.headers) for r in courier.received[start:]] == [None]


@pytest.mark.parametrize("ttl", ["1h", "400d", "abc"])
def test_an_idempotency_ttl_out_of_range_is_a_usage_error(courier: FakeCourier, ttl: str) -> None:
    write_events([identify(1, "u1")])
    result = send(courier, "events.jsonl", "--idempotency-ttl", ttl)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --idempotency-ttl {ttl!r}: ")
    assert courier.received == []


# --- shards and merge -------------------------------------------------------------------------


def test_three_shards_send_everything_once_and_merge_into_one_ledger(
    courier: FakeCourier, segment_events: list[dict[str, Any]]
) -> None:
    # A line that is not JSON, and a record that is not an event (a track event without a name).
    bad = ["{not json", json.dumps({"type": "track", "userId": "user-1", "messageId": "no-name"})]
    lines = [json.dumps(event) for event in segment_events] + bad
    Path("events.jsonl").write_text("".join(line + "\n" for line in lines))
    records = len(segment_events) + len(bad)
    bad_origins = [f"events.jsonl:{len(segment_events) + n}" for n in (1, 2)]
    expected = expected_keys(courier, "events.jsonl")
    dry = send(courier, "events.jsonl", "--dry-run", "--no-ledger", "-o", "jsonl", "--report", "dry.json")
    dry_report = report("dry.json")

    with contextlib.ExitStack() as stack:
        shards = [
            stack.enter_context(
                background(
                    courier,
                    f"shard-{k}",
                    "events.jsonl",
                    "--shard",
                    f"{k}/3",
                    "--ledger",
                    f"s{k}.sqlite3",
                    "--report",
                    f"r{k}.json",
                )
            )
            for k in (1, 2, 3)
        ]
        ended = [shard.finish() for shard in shards]
    assert dry.exit_code == 1
    assert dry_report["totals"]["rejected"] == len(bad)

    reports = [report(f"r{k}.json") for k in (1, 2, 3)]
    errs = [err for _, err in ended]
    for origin in bad_origins:  # each bad record is reported by exactly one shard
        assert sum(f"{origin}: rejected" in err for err in errs) == 1, origin
    assert sum(found["totals"].get("rejected", 0) for found in reports) == len(bad)
    for (code, err), found in zip(ended, reports, strict=True):
        assert code == (1 if found["totals"].get("rejected") else 0), err
        assert found["read"] == records
    # The shares add up to the whole: what each did not skip as another shard's, and what it sent.
    mine = [found["read"] - found["outcomes"]["skipped"]["other_shard"] for found in reports]
    assert sum(mine) == records
    assert sum(found["totals"]["sent"] for found in reports) == dry_report["totals"]["planned"]
    assert sum(requests_of(found, "sent") for found in reports) == len(expected)

    per_shard = {k: ledger_rows(Path(f"s{k}.sqlite3")) for k in (1, 2, 3)}
    keys = {k: {row["idempotency_key"] for row in rows} for k, rows in per_shard.items()}
    assert all(keys.values())
    assert keys[1].isdisjoint(keys[2]) and keys[1].isdisjoint(keys[3]) and keys[2].isdisjoint(keys[3])
    assert keys[1] | keys[2] | keys[3] == expected
    assert_each_expected_key_acted_on_once(courier, expected)
    shards_of: dict[str | None, set[int]] = defaultdict(set)
    for k, rows in per_shard.items():
        for row in rows:
            shards_of[row["recipient"]].add(k)
    assert None not in shards_of
    assert len(shards_of) >= 7
    assert all(len(found) == 1 for found in shards_of.values()), shards_of

    merged = runner.invoke(app, ["ledger", "merge", "all.sqlite3", "s1.sqlite3", "s2.sqlite3", "s3.sqlite3"])
    assert merged.exit_code == 0, merged.stderr
    assert merged.stderr == f"all.sqlite3: {len(expected):,} accepted requests and 3 runs merged in\n"
    assert integrity(Path("all.sqlite3")) == "ok"
    with contextlib.closing(sqlite3.connect("all.sqlite3")) as connection:
        runs = connection.execute("SELECT id, shard FROM runs ORDER BY id").fetchall()
        run_of = dict(connection.execute("SELECT key, run FROM requests").fetchall())
    assert runs == [(1, "1/3"), (2, "2/3"), (3, "3/3")]
    assert len(run_of) == sum(len(rows) for rows in per_shard.values())
    for k, shard_keys in keys.items():
        assert {run_of[key] for key in shard_keys} == {k}

    start = received_so_far(courier)
    resume = send(courier, "events.jsonl", "--ledger", "all.sqlite3", "--report", "resume.json")
    assert resume.exit_code == 1, resume.stderr  # the bad line is rejected again
    assert received_so_far(courier) == start
    found = report("resume.json")
    assert "sent" not in found["totals"]
    assert found["outcomes"]["skipped"]["already_sent"] == dry_report["totals"]["planned"]
    assert requests_of(found, "already_sent") == len(expected)


@pytest.mark.parametrize("shard", ["0/3", "4/3", "x"])
def test_a_bad_shard_is_a_usage_error(courier: FakeCourier, shard: str) -> None:
    write_events([identify(1, "u1")])
    result = send(courier, "events.jsonl", "--shard", shard)
    assert result.exit_code == 2
    assert result.stderr == f"error: --shard {shard!r}: give K/N with K from 1 to N, e.g. 2/4\n"
    assert courier.received == []


# --- segroute ledger --------------------------------------------------------------------------


def test_ledger_shows_exports_and_names_a_missing_file(courier: FakeCourier, ledger: Path) -> None:
    for args in (["ledger"], ["ledger", "-o", "json"], ["ledger", "export"]):
        missing = runner.invoke(app, args)
        assert missing.exit_code == 2
        assert missing.stderr == f"error: ledger {ledger}: no such file {HOW_MADE}\n"
        assert missing.stdout == ""
    assert not ledger.exists()
    events = [checkout(1, "u0"), checkout(2, "u1"), identify(3, "u0"), checkout(4, "u0"), identify(5, "u1")]
    write_events(events)
    for _ in range(2):
        assert send(courier, "events.jsonl").exit_code == 0
    exported = runner.invoke(app, ["ledger", "export"])
    assert exported.exit_code == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(rows) == 8
    assert {row["idempotency_key"] for row in rows} == courier.acted_keys()
    assert list(rows[0]) == [
        "api_url",
        "idempotency_key",
        "automation",
        "messageId",
        "recipient",
        "status",
        "runId",
        "requestId",
        "accepted_at",
        "run",
    ]
    assert Counter(row["automation"] for row in rows) == {
        "order-confirmation": 3,
        "loyalty points/eu": 3,
        "(profile)": 2,
    }
    assert {(row["api_url"], row["status"], row["run"]) for row in rows} == {(courier.url, 200, 1)}
    assert all(row["runId"].startswith("1-run-") for row in rows if row["automation"] != "(profile)")
    day = rows[0]["accepted_at"][:10]
    assert {row["accepted_at"][:10] for row in rows} == {day}

    shown = runner.invoke(app, ["ledger", "-o", "json"])
    assert shown.exit_code == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert list(found) == ["ledger", "requests", "per_target_day", "runs", "last_run"]
    assert (found["ledger"], found["requests"], found["runs"]) == (str(ledger), 8, 2)
    assert found["per_target_day"] == [
        {"api_url": courier.url, "automation": "(profile)", "day": day, "requests": 2},
        {"api_url": courier.url, "automation": "loyalty points/eu", "day": day, "requests": 3},
        {"api_url": courier.url, "automation": "order-confirmation", "day": day, "requests": 3},
    ]
    last = found["last_run"]
    assert list(last) == [
        "run",
        "started_at",
        "ended_at",
        "api_url",
        "inputs",
        "shard",
        "stopped_by",
        "counts",
    ]
    assert (last["run"], last["api_url"], last["inputs"], last["shard"], last["stopped_by"]) == (
        2,
        courier.url,
        ["events.jsonl"],
        None,
        None,
    )
    assert last["counts"] == {"skipped": 5}

    table = runner.invoke(app, ["ledger"])
    assert table.exit_code == 0, table.stderr
    assert f"{ledger}: accepted requests" in table.stdout
    table_lines = table_rows(table.stdout)
    assert [courier.url, day, "order-confirmation", "3"] in table_lines
    assert [courier.url, day, "loyalty", "points/eu", "3"] in table_lines
    assert [courier.url, day, "(profile)", "2"] in table_lines
    assert ["total", "8"] in table_lines
    assert table.stdout.splitlines()[-1] == (
        f"last run (#2 of 2): {last['started_at']} to {last['ended_at']}; skipped 5; "
        f"to {courier.url}; inputs: events.jsonl"
    )

    for args in (
        ["ledger", "--ledger", "missing.sqlite3"],
        ["ledger", "export", "--ledger", "missing.sqlite3"],
    ):
        missing = runner.invoke(app, args)
        assert missing.exit_code == 2
        assert missing.stderr == f"error: ledger missing.sqlite3: no such file {HOW_MADE}\n"
        assert missing.stdout == ""
    assert not Path("missing.sqlite3").exists()
    merge = runner.invoke(app, ["ledger", "merge", "all.sqlite3", "missing.sqlite3"])
    assert merge.exit_code == 2
    assert merge.stderr == "error: missing.sqlite3: no such ledger\n"


def test_merging_a_ledger_into_itself_is_refused_and_changes_nothing(
    courier: FakeCourier, ledger: Path
) -> None:
    write_events([identify(1, "u1"), checkout(2, "u2")])
    assert send(courier, "events.jsonl").exit_code == 0
    before = ledger_rows(ledger)
    assert len(before) == 3
    for output, source in ((str(ledger), str(ledger)), (f"./{ledger.name}", str(ledger))):
        merged = runner.invoke(app, ["ledger", "merge", output, source])
        assert merged.exit_code == 2
        assert merged.stderr == f"error: ledger merge: {source} is the output too\n"
    assert ledger_rows(ledger) == before
    shown = runner.invoke(app, ["ledger", "-o", "json"])
    assert json.loads(shown.stdout)["runs"] == 1


def test_a_database_that_is_not_a_ledger_is_refused_and_left_alone() -> None:
    """`segroute ledger` only reads: pointed at another program's SQLite file, it must not add tables."""
    with contextlib.closing(sqlite3.connect("other.db")) as connection:
        connection.execute("CREATE TABLE contacts (email TEXT)")
        connection.commit()
    before = Path("other.db").read_bytes()
    for args in (
        ["ledger", "--ledger", "other.db"],
        ["ledger", "export", "--ledger", "other.db"],
        ["ledger", "merge", "out.sqlite3", "other.db"],
        ["send", "events.jsonl", "--dry-run", "--ledger", "other.db"],
    ):
        Path("events.jsonl").write_text("")
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.stdout
        assert result.stderr.startswith("error: ledger other.db: ")
    # Not a byte changed (not even the journal mode), and merge made no output.
    assert Path("other.db").read_bytes() == before
    assert not Path("out.sqlite3").exists()


def test_inspect_counts_what_the_ledger_holds_as_sent_before(courier: FakeCourier, ledger: Path) -> None:
    events = write_events([checkout(n, f"u{n % 3}") for n in range(6)])
    before = json.loads(runner.invoke(app, ["inspect", events, "-o", "json"]).stdout)
    assert before["requests_sent_before"] == {} and sum(before["requests"].values()) > 0
    assert send(courier, events).exit_code == 0
    # The ledger is kept per API: another URL has sent nothing.
    elsewhere = json.loads(runner.invoke(app, ["inspect", events, "-o", "json"]).stdout)
    assert elsewhere["requests"] == before["requests"]
    after = runner.invoke(app, ["inspect", events, "-o", "json", "--api-url", courier.url])
    assert after.exit_code == 0, after.stderr
    found = json.loads(after.stdout)
    assert found["requests"] == {}
    assert found["requests_sent_before"] == before["requests"]
    assert found["outcomes"]["skipped"]["already_sent"] == 6


def fill_the_disk(ledger: Path, *, when: str = "1") -> None:
    """A new ledger where what a full disk looks like from here happens: every write of a request
    for which ``when`` holds fails."""
    Ledger(ledger).close()
    with contextlib.closing(sqlite3.connect(ledger)) as connection:
        connection.execute(
            f"CREATE TRIGGER full BEFORE INSERT ON requests WHEN {when} "
            "BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
        )
        connection.commit()


def test_a_ledger_that_cannot_be_written_stops_the_run_with_exit_1(
    courier: FakeCourier, ledger: Path
) -> None:
    fill_the_disk(ledger)
    events = write_events([checkout(n, f"u{n}") for n in range(3)])
    result = send(courier, events)
    assert result.exit_code == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: ledger {ledger}: cannot write: database or disk is full; the run stops"
    )
    assert ledger_keys(ledger) == set()


def test_lookups_answer_from_the_filter_and_the_database_alike(tmp_path: Path) -> None:
    url, other, path = "http://127.0.0.1:9", "http://127.0.0.1:8", "/automations/a/invoke"
    written = Ledger(tmp_path / "l.sqlite3")
    assert not written.accepted(url, "k-0")  # an empty ledger: no query at all
    for n in range(700):  # more rows than one batch holds
        event = Event(f"f:{n}", {}, "track", f"m-{n}", "u", "E")
        request = Request("POST", url + path, path, b"{}", f"k-{n}", Target("automation", "a"))
        written.record(url, RequestResult(request, event, "sent", "", 200, 1))
    written.close()
    opened = Ledger(tmp_path / "l.sqlite3", create=False)
    try:
        assert all(opened.accepted(url, f"k-{n}") for n in range(700))
        assert not any(opened.accepted(url, f"new-{n}") for n in range(5000))
        assert not any(opened.accepted(other, f"k-{n}") for n in range(700))
    finally:
        opened.close()


def test_a_key_the_filter_takes_for_a_sent_one_is_looked_up_and_sent(
    courier: FakeCourier, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filter in front of the ledger answers "maybe sent" now and then for a key never sent: the
    database decides. Forced here, as if every key collided: each one hashes alike."""
    write_events([identify(1, "u1")], "first.jsonl")
    assert send(courier, "first.jsonl").exit_code == 0
    hashed: list[object] = []

    def one_hash_for_all(value: object) -> int:
        hashed.append(value)
        return 0

    monkeypatch.setattr(ledger_module, "hash", one_hash_for_all, raising=False)
    opened = Ledger(ledger, create=False)
    try:
        assert opened.prior(courier.url, "sr1-never-sent") is None
        assert "sr1-never-sent" in hashed  # the filter was asked, and said "maybe"
    finally:
        opened.close()
    write_events([identify(1, "u1"), identify(2, "u2")], "second.jsonl")
    start = received_so_far(courier)
    result = send(courier, "second.jsonl", "--report", "r.json")
    assert result.exit_code == 0, result.stderr
    assert report("r.json")["outcomes"] == {"sent": {"ok": 1}, "skipped": {"already_sent": 1}}
    assert [r.path for r in courier.received[start:]] == ["/profiles/u2"]


def test_each_row_is_written_as_it_was_recorded(tmp_path: Path) -> None:
    """A batch goes to SQLite as one JSON text: every column must come back with its value and type."""
    url, path = "http://127.0.0.1:9/v1", "/profiles/ana%20mar%C3%ADa"
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.start_run(api_url=url, inputs=["in.jsonl"], shard=None)
    recorded = [
        (Target("automation", 'order "confirmation"/eu'), "ana maría 🎉", "run-1", None, 202),
        (Target("profile"), None, None, "req-2", 409),
    ]
    before = time.time()
    for n, (target, user, run_id, request_id, status) in enumerate(recorded):
        event = Event(f"in.jsonl:{n}", {}, "identify", f'm-{n}-\\"ü', user, None)
        request = Request("POST", url + path, path, b"{}", f"sr1-{n}", target)
        ledger.record(url, RequestResult(request, event, "sent", "", status, 1, run_id, request_id))
    ledger.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "l.sqlite3")) as connection:
        rows = connection.execute(
            "SELECT api_url, key, target, message_id, recipient, status, courier_run_id,"
            " courier_request_id, accepted_at, run, typeof(status), typeof(run) FROM requests ORDER BY key"
        ).fetchall()
    assert [row[:8] + row[9:] for row in rows] == [
        (
            url,
            "sr1-0",
            'order "confirmation"/eu',
            'm-0-\\"ü',
            "ana maría 🎉",
            202,
            "run-1",
            None,
            1,
            "integer",
            "integer",
        ),
        (url, "sr1-1", "(profile)", 'm-1-\\"ü', None, 409, None, "req-2", 1, "integer", "integer"),
    ]
    for row in rows:
        accepted = datetime.datetime.strptime(row[8], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
        assert before - 1 <= accepted.timestamp() <= time.time() + 1


def test_a_batch_that_fails_on_the_writing_thread_stops_the_ledger_at_a_whole_prefix(tmp_path: Path) -> None:
    url, path = "http://127.0.0.1:9", "/automations/a/invoke"
    ledger_path = tmp_path / "l.sqlite3"
    fill_the_disk(ledger_path, when="NEW.key = 'k-700'")

    def record(ledger: Ledger, n: int) -> None:
        event = Event(f"f:{n}", {}, "track", f"m-{n}", "u", "E")
        request = Request("POST", url + path, path, b"{}", f"k-{n}", Target("automation", "a"))
        ledger.record(url, RequestResult(request, event, "sent", "", 200, 1))

    ledger = Ledger(ledger_path)
    for n in range(500):  # the first batch, handed to the writing thread as it fills
        record(ledger, n)
    ledger.flush()  # waits: it is committed
    # The second batch fails at k-700; the third is not written after it. The error comes at the next
    # flush after the failure: a later record's, or the close's, whichever the thread's timing makes it.
    with pytest.raises(LedgerError, match="cannot write: database or disk is full"):
        try:
            for n in range(500, 1500):
                record(ledger, n)
        finally:
            ledger.close()
    assert ledger_keys(ledger_path) == {f"k-{n}" for n in range(500)}


def test_merging_a_ledger_again_adds_nothing_and_keeps_its_unsettled_requests(tmp_path: Path) -> None:
    """A shard's ledger merged twice (a re-run of the merge step, say) adds its runs once, and its
    unsettled requests, held already, are kept once and not refused as duplicates."""
    url, path = "http://127.0.0.1:9", "/profiles/u1"
    event = Event("f:1", {}, "identify", "m-1", "u1", None)
    target = Target("profile")
    sent = Request("POST", url + path, path, b"{}", "sr1-sent", target)
    unknown = Request("POST", url + path, path, b"{}", "sr1-unknown", target)
    shard = tmp_path / "shard-1.sqlite3"
    with Ledger(shard) as opened:
        opened.start_run(api_url=url, inputs=["in.jsonl"], shard="1/2")
        for request in (sent, unknown):
            opened.intend(url, request, event, key_lifetime=3600)
        opened.record(url, RequestResult(sent, event, "sent", "", 202, 1, key_state="accepted"))
        opened.end_run(counts={"sent": 1}, stopped_by="SIGINT")
    out = tmp_path / "all.sqlite3"
    first = runner.invoke(app, ["ledger", "merge", str(out), str(shard)])
    again = runner.invoke(app, ["ledger", "merge", str(out), str(shard)])
    assert (first.exit_code, again.exit_code) == (0, 0), again.stderr
    assert first.stderr == f"{out}: 1 accepted requests and 1 runs merged in\n"
    assert again.stderr == f"{out}: 0 accepted requests and 0 runs merged in\n"
    with Ledger(out, create=False) as merged:
        assert [row["idempotency_key"] for row in merged.export()] == ["sr1-sent"]
        assert [row["idempotency_key"] for row in merged.unsettled()] == ["sr1-unknown"]
        assert merged.summary().as_dict()["runs"] == 1
    twice = runner.invoke(app, ["ledger", "merge", str(tmp_path / "other.sqlite3"), str(shard), str(shard)])
    assert twice.exit_code == 2
    assert twice.stderr == f"error: ledger merge: {shard} is named twice (as {shard} too)\n"
    assert not (tmp_path / "other.sqlite3").exists()


def test_a_run_merged_before_it_ended_is_finished_and_keeps_its_requests_at_the_next_merge(
    tmp_path: Path,
) -> None:
    url = "http://127.0.0.1:9"
    event = Event("f:1", {}, "identify", "m-1", "u1", None)
    shard = tmp_path / "shard-1.sqlite3"
    with Ledger(shard) as opened:
        opened.start_run(api_url=url, inputs=["in.jsonl"], shard="1/2")
        for n in (1, 2):
            path = f"/profiles/u{n}"
            request = Request("POST", url + path, path, b"{}", f"sr1-{n}", Target("profile"))
            opened.intend(url, request, event, key_lifetime=3600)
            opened.record(url, RequestResult(request, event, "sent", "", 202, 1, key_state="accepted"))
        opened.end_run(counts={"sent": 2}, stopped_by=None)
    with contextlib.closing(sqlite3.connect(shard)) as connection, connection:
        # As the shard's ledger was while its run went on: unfinished, the second acceptance to come.
        connection.execute("UPDATE runs SET ended_at = NULL, counts = NULL")
        connection.execute("CREATE TABLE later AS SELECT * FROM requests WHERE key = 'sr1-2'")
        connection.execute("DELETE FROM requests WHERE key = 'sr1-2'")
    out = tmp_path / "all.sqlite3"
    assert runner.invoke(app, ["ledger", "merge", str(out), str(shard)]).exit_code == 0
    with contextlib.closing(sqlite3.connect(shard)) as connection, connection:
        connection.execute("INSERT INTO requests SELECT * FROM later")
        connection.execute("UPDATE runs SET ended_at = '2026-12-04T10:00:00.000Z', counts = '{\"sent\": 2}'")
    again = runner.invoke(app, ["ledger", "merge", str(out), str(shard)])
    assert again.stderr == f"{out}: 1 accepted requests and 0 runs merged in\n"
    with contextlib.closing(sqlite3.connect(out)) as connection:
        runs = connection.execute("SELECT id, ended_at, counts FROM runs").fetchall()
        requests = connection.execute("SELECT key, run FROM requests ORDER BY key").fetchall()
    assert runs == [(1, "2026-12-04T10:00:00.000Z", '{"sent": 2}')]
    assert requests == [("sr1-1", 1), ("sr1-2", 1)]


def test_a_journal_that_cannot_be_read_is_an_error_naming_it_not_a_traceback(ledger: Path) -> None:
    Ledger(ledger).close()
    Path(f"{ledger}.intents").mkdir()
    shown = runner.invoke(app, ["ledger", "--ledger", str(ledger)])
    assert shown.exit_code == 2
    assert (
        shown.stderr == f"error: ledger {ledger}: cannot use its journal {ledger}.intents: Is a directory\n"
    )
