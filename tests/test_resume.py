"""Resuming after a kill or a failure never notifies anyone twice: intents written before requests go
out, the uncertain ones a killed run leaves, keys that expired, a 500 Courier stored under a key, and
ledgers from before all this (and API URLs typed two ways)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from segroute.cli import app
from segroute.ledger import Ledger
from segroute.models import Event, Request, RequestResult, Target
from tests.conftest import (
    background,
    expected_keys,
    in_flight,
    ledger_keys,
    received_keys,
    received_so_far,
    send,
    wait_until,
)
from tests.courier_server import FakeCourier, Received

# _isolated: the delivery tests' autouse fixture (a tmp folder with their config and API key).
from tests.test_delivery import (
    CONFIG,
    _isolated,  # noqa: F401
    checkout,
    identify,
    write_events,
)

runner = CliRunner()


def pending(path: Path) -> dict[str, dict[str, Any]]:
    """The ledger's requests sent and not known to be accepted, by the key they went out under."""
    opened = Ledger(path, create=False)
    try:
        return {row["idempotency_key"]: row for row in opened.unsettled()}
    finally:
        opened.close()


def expire_every_key(path: Path) -> None:
    """As if a day and more had passed since the requests went out."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("UPDATE pending SET expires_at = 0")
        connection.commit()


# --- written ahead ------------------------------------------------------------------------------


def test_a_request_is_in_the_ledger_before_it_reaches_courier(courier: FakeCourier, ledger: Path) -> None:
    """Killed the moment a request reaches Courier, the run leaves that request in the ledger as
    uncertain: its intent was written before it went out."""
    write_events(
        [checkout(n, f"u{n % 9}") for n in range(60)] + [identify(n, f"u{n}") for n in range(60, 80)]
    )
    victim: list[str] = []
    pid: list[int] = []

    def kill_on_arrival(received: Received) -> bool:
        if victim or not pid or len(courier.received) < 30:  # called under the server's lock
            return False
        victim.append(received.key)
        os.kill(pid[0], signal.SIGKILL)
        return True  # and the connection is dropped: Courier never acts on it

    courier.fault("drop", times=10**6, match=kill_on_arrival)
    with background(courier, "first", "events.jsonl", "--concurrency", "8") as run:
        pid.append(run.proc.pid)
        code, _ = run.finish()
    assert code == -signal.SIGKILL
    assert Path(f"{ledger}.intents").exists()  # the killed run's journal
    unsettled = pending(ledger)  # opening the ledger folds the journal in
    assert not Path(f"{ledger}.intents").exists()
    assert unsettled[victim[0]]["state"] == "uncertain"
    recorded = ledger_keys(ledger)
    assert set(unsettled).isdisjoint(recorded)
    # Whatever reached Courier is accepted in the ledger or named as uncertain.
    assert {r.key for r in courier.received} <= set(unsettled) | recorded
    courier.faults.clear()
    again = send(courier, "events.jsonl")
    assert again.exit_code == 0, again.stderr
    assert len(courier.acted) == 140 and set(courier.acted.values()) == {1}
    assert pending(ledger) == {}


# --- killed -------------------------------------------------------------------------------------


def test_a_kill_at_full_speed_leaves_exactly_the_unanswered_requests_uncertain(
    courier: FakeCourier, segment_events: list[dict[str, Any]], ledger: Path
) -> None:
    events = segment_events * 1  # the official client's events, several hundred requests
    write_events(events)
    expected = expected_keys(courier, "events.jsonl")
    with background(courier, "first", "events.jsonl", "--concurrency", "16") as run:
        wait_until(lambda: len(courier.acted_keys()) >= len(expected) // 3, "a third acted on")
        run.proc.kill()
        code, _ = run.finish()
    assert code == -signal.SIGKILL
    recorded = ledger_keys(ledger)
    unsettled = pending(ledger)
    acted = courier.acted_keys()
    assert recorded <= acted  # never ahead of Courier
    # Whatever Courier acted on and the ledger did not record as accepted, it holds as uncertain.
    assert acted - recorded <= set(unsettled)
    assert {row["state"] for row in unsettled.values()} <= {"uncertain"}
    # At most what was in flight, and what was accepted in the last moments before the kill.
    assert len(unsettled) <= 16 + 200
    start = received_so_far(courier)
    again = send(courier, "events.jsonl", "--report", "second.json")
    assert again.exit_code == 0, again.stderr
    resent = received_keys(courier, start)
    assert set(resent) == expected - recorded
    # Re-posted (sent before): exactly the uncertain ones; Courier answers those it acted on from
    # its store, so each key is acted on once.
    twice = {key for key in resent if received_keys(courier)[key] > 1}
    assert twice <= set(unsettled)
    assert set(courier.acted) == expected and set(courier.acted.values()) == {1}
    assert pending(ledger) == {}


def test_after_a_kill_and_a_day_the_uncertain_are_held_back_until_asked(
    courier: FakeCourier, ledger: Path
) -> None:
    events = [identify(n, f"u{n}") for n in range(40)]
    write_events(events)
    courier.fault("delay", times=10**6, seconds=0.5)
    with background(courier, "first", "events.jsonl", "--concurrency", "4") as run:
        wait_until(lambda: in_flight(courier) and len(courier.acted_keys()) >= 4, "requests in flight")
        run.proc.kill()
        run.finish()
    wait_until(lambda: not in_flight(courier), "the server to act on what it received")
    courier.faults.clear()
    unsettled = pending(ledger)
    assert 1 <= len(unsettled) <= 4 + 4
    expire_every_key(ledger)
    start = received_so_far(courier)
    held = send(courier, "events.jsonl", "--failed", "failed.jsonl", "--report", "held.json")
    assert held.exit_code == 1
    report = json.loads(Path("held.json").read_text())
    assert report["outcomes"]["skipped"]["uncertain"] == len(unsettled)
    assert set(received_keys(courier, start)).isdisjoint(unsettled)  # not one of them was sent
    assert "held back (uncertain)" in held.stderr
    assert "--resend-uncertain" in held.stderr
    failed = [json.loads(line)["userId"] for line in Path("failed.jsonl").read_text().splitlines()]
    assert sorted(failed) == sorted(row["recipient"] for row in unsettled.values())
    listed = runner.invoke(app, ["ledger", "unsettled"])
    assert listed.exit_code == 0, listed.stderr
    assert {json.loads(line)["idempotency_key"] for line in listed.stdout.splitlines()} == set(unsettled)
    # Asked for, they go (and Courier, which acted on some before the kill, answers those from its store).
    asked = send(courier, "failed.jsonl", "--resend-uncertain")
    assert asked.exit_code == 0, asked.stderr
    assert set(courier.acted.values()) == {1} and len(courier.acted) == 40
    assert pending(ledger) == {}


# --- a 500 Courier stored -------------------------------------------------------------------------


def test_a_stored_500_is_replayed_under_a_new_key_and_nothing_accepted_goes_again(
    courier: FakeCourier, ledger: Path
) -> None:
    Path("segroute.toml").write_text(CONFIG)  # two automations for each checkout
    courier.failing_recipients.add("u3")
    events = [checkout(n, f"u{n}") for n in range(6)]
    write_events(events)
    first = send(courier, "events.jsonl", "--failed", "failed.jsonl", "--max-retries", "1")
    assert first.exit_code == 1
    assert "failed (http_500): HTTP 500: Internal Server Error; gave up after 2 attempts" in first.stderr
    burnt = pending(ledger)
    assert {row["state"] for row in burnt.values()} == {"stored_failure"} and len(burnt) == 2
    # Within a day the same key only gets Courier's stored 500 back; the application is mended.
    courier.failing_recipients.clear()
    start = received_so_far(courier)
    dry = runner.invoke(app, ["send", "failed.jsonl", "--dry-run", "-o", "jsonl", "--api-url", courier.url])
    keys = {json.loads(line)["headers"]["Idempotency-Key"] for line in dry.stdout.splitlines()}
    assert len(keys) == 2 and keys.isdisjoint(burnt)
    replay = send(courier, "failed.jsonl", "--report", "replay.json")
    assert replay.exit_code == 0, replay.stderr
    assert set(received_keys(courier, start)) == keys
    assert len(courier.acted) == 12 and set(courier.acted.values()) == {1}
    exported = {
        json.loads(line)["idempotency_key"]
        for line in runner.invoke(app, ["ledger", "export"]).stdout.splitlines()
    }
    assert keys <= exported and exported.isdisjoint(burnt)
    assert pending(ledger) == {}


def test_a_request_courier_acted_on_behind_a_failing_gateway_goes_again_under_its_own_key(
    courier: FakeCourier, ledger: Path
) -> None:
    """A 504 or a dropped connection after Courier acted: the replay must not use a new key."""
    courier.fault("drop_after", times=10**6, match=lambda r: r.path == "/profiles/u1")
    write_events([identify(1, "u1"), identify(2, "u2")])
    first = send(courier, "events.jsonl", "--failed", "failed.jsonl", "--max-retries", "1")
    assert first.exit_code == 1
    (row,) = pending(ledger).values()
    assert row["state"] == "uncertain" and row["recipient"] == "u1"
    courier.faults.clear()
    replay = send(courier, "failed.jsonl")
    assert replay.exit_code == 0, replay.stderr
    assert courier.received[-1].key == row["idempotency_key"]  # the same key: answered from the store
    assert set(courier.acted.values()) == {1} and len(courier.acted) == 2


# --- ledgers from before, and URLs typed two ways ----------------------------------------------------


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, ended_at TEXT, api_url TEXT NOT NULL,
    inputs TEXT NOT NULL, shard TEXT, stopped_by TEXT, counts TEXT);
CREATE TABLE requests (api_url TEXT NOT NULL, key TEXT NOT NULL, target TEXT NOT NULL,
    message_id TEXT NOT NULL, recipient TEXT, status INTEGER NOT NULL, courier_run_id TEXT,
    courier_request_id TEXT, accepted_at TEXT NOT NULL, run INTEGER,
    PRIMARY KEY (api_url, key)) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema', '1');
"""


def test_a_ledger_of_version_1_keeps_working_with_its_urls_in_one_spelling(
    courier: FakeCourier, ledger: Path
) -> None:
    write_events([identify(n, f"u{n}") for n in range(5)])
    keys = sorted(expected_keys(courier, "events.jsonl"))
    typed = f"http://LOCALHOST:{courier.port}"  # as segroute 0.1 kept it: host as typed
    with contextlib.closing(sqlite3.connect(ledger)) as connection:
        connection.executescript(V1_SCHEMA)
        connection.execute(
            "INSERT INTO runs VALUES (1, '2026-11-30T10:00:00.000Z', '2026-11-30T10:00:01.000Z', ?, '[]', "
            "NULL, NULL, '{}')",
            (typed,),
        )
        for n, key in enumerate(keys[:3]):
            connection.execute(
                "INSERT INTO requests VALUES (?, ?, '(profile)', ?, ?, 200, NULL, NULL, "
                "'2026-11-30T10:00:00.500Z', 1)",
                (typed, key, f"id-{n}", f"u{n}"),
            )
        connection.commit()
    result = runner.invoke(app, ["send", "events.jsonl", "--api-url", f"http://localhost:{courier.port}/"])
    assert result.exit_code == 0, result.stderr
    assert len(courier.acted) == 2  # three were accepted before, under the URL's other spelling
    with contextlib.closing(sqlite3.connect(ledger)) as connection:
        assert connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
        urls = {
            row[0]
            for row in connection.execute("SELECT api_url FROM requests UNION SELECT api_url FROM runs")
        }
    assert urls == {f"http://localhost:{courier.port}"}


def test_two_spellings_of_one_url_share_the_ledger(courier: FakeCourier) -> None:
    write_events([identify(n, f"u{n}") for n in range(5)])
    first = runner.invoke(app, ["send", "events.jsonl", "--api-url", f"http://LOCALHOST:{courier.port}/"])
    assert first.exit_code == 0, first.stderr
    again = runner.invoke(app, ["send", "events.jsonl", "--api-url", f"http://localhost:{courier.port}"])
    assert again.exit_code == 0, again.stderr
    assert ["skipped", "already_sent", "5"] in [line.split() for line in again.stderr.splitlines()]
    assert len(courier.received) == 5


def test_a_ledger_of_a_newer_version_is_refused(ledger: Path) -> None:
    Ledger(ledger).close()
    with contextlib.closing(sqlite3.connect(ledger)) as connection:
        connection.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
        connection.commit()
    shown = runner.invoke(app, ["ledger"])
    assert shown.exit_code == 2
    assert shown.stderr == f"error: ledger {ledger}: schema version 3; this segroute reads 2\n"


def test_a_ledger_that_names_no_schema_version_is_refused_as_it_is(ledger: Path) -> None:
    """No version row: neither taken for the current version nor for version 1 (and "upgraded"), but a
    clear error, for every command that opens the ledger."""
    Ledger(ledger).close()
    with contextlib.closing(sqlite3.connect(ledger)) as connection:
        connection.execute("DELETE FROM meta WHERE key = 'schema'")
        connection.commit()
    write_events([identify(1, "u1")])
    for args in (["ledger"], ["ledger", "export"], ["send", "events.jsonl", "--dry-run", "-o", "jsonl"]):
        result = runner.invoke(app, args)
        assert (result.exit_code, result.stdout) == (2, ""), args
        assert result.stderr.splitlines()[-1] == (
            f"error: ledger {ledger}: schema version none; this segroute reads 2"
        ), args
    with contextlib.closing(sqlite3.connect(ledger)) as connection:
        assert connection.execute("SELECT * FROM meta").fetchall() == []


def test_one_ledger_takes_one_send_at_a_time_and_can_be_looked_at_meanwhile(
    courier: FakeCourier, ledger: Path
) -> None:
    courier.fault("delay", times=10**6, seconds=0.05)
    write_events([identify(n, f"u{n}") for n in range(200)])
    with background(courier, "first", "events.jsonl", "--concurrency", "2") as run:
        wait_until(lambda: len(courier.acted_keys()) >= 5, "the first send under way")
        Path("keep.jsonl").write_text("an earlier run's failures\n")
        second = send(courier, "events.jsonl", "--failed", "keep.jsonl")
        shown = runner.invoke(app, ["ledger"])
        assert Path(f"{ledger}.intents").exists()  # looked at, not folded in under the running send
        run.proc.send_signal(signal.SIGINT)
        code, _ = run.finish()
    assert code == 130
    assert second.exit_code == 2
    assert second.stderr == (
        f"error: ledger {ledger}: another send is using it (its journal is locked); wait for it, or give "
        "this send a ledger of its own\n"
    )
    assert shown.exit_code == 0, shown.stderr
    assert not Path(f"{ledger}.intents").exists()  # folded in by the run when it stopped
    # Refused before it opened its failure file: the file is as it was.
    assert Path("keep.jsonl").read_text() == "an earlier run's failures\n"


def _result(request: Request, event: Event, **fields: Any) -> RequestResult:
    return RequestResult(request, event, fields.pop("outcome", "not_attempted"), "", **fields)


def test_a_request_sent_again_keeps_the_uncertainty_and_the_key_lifetime_of_its_first_send(
    tmp_path: Path,
) -> None:
    """An earlier run left a request uncertain. A later run that stops before sending it again must
    not forget that; one that sends it again with no answer must not make its key look younger than
    it is: Courier's clock for the key started with the first send."""
    url, path = "http://127.0.0.1:9", "/profiles/u1"
    event = Event("f:1", {}, "identify", "m-1", "u1", None)
    request = Request("POST", url + path, path, b"{}", "sr1-k", Target("profile"))
    ledger_path = tmp_path / "l.sqlite3"

    def run(*, lifetime: float, ended: RequestResult | None) -> None:
        ledger = Ledger(ledger_path)
        ledger.start_run(api_url=url, inputs=["in"], shard=None)
        ledger.intend(url, request, event, key_lifetime=lifetime)
        if ended is not None:
            ledger.record(url, ended)
        ledger.close()

    def expiry() -> float:
        opened = Ledger(ledger_path, create=False)
        try:
            found = opened.prior(url, "sr1-k")
        finally:
            opened.close()
        assert found is not None and not found.accepted and not found.stored_failure
        return found.expires_at

    run(lifetime=3600, ended=None)  # the answer never came: uncertain
    first = expiry()
    # Stopped before the attempt (or cut off before it began): nothing changed for Courier.
    run(lifetime=10 * 86400, ended=_result(request, event, attempts=0, key_state="unused"))
    assert expiry() == first
    # Sent again, and again no answer: still uncertain, and the key no younger than it was.
    run(lifetime=10 * 86400, ended=_result(request, event, outcome="failed", attempts=1, key_state="unknown"))
    assert expiry() == first
    # Refused this time: Courier holds nothing for the key, so nothing is uncertain any more.
    run(lifetime=3600, ended=_result(request, event, outcome="failed", attempts=1, key_state="unused"))
    opened = Ledger(ledger_path, create=False)
    try:
        assert opened.prior(url, "sr1-k") is None
    finally:
        opened.close()
