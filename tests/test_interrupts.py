"""Sends stopped mid-way, then resumed: by SIGINT, by SIGKILL, by SIGINT while a request waits to
retry a 503, and a process writing the ledger killed at any moment. Each run that is signalled runs in
a process of its own against a real server on 127.0.0.1; the rerun that follows sends what is left,
and every request is acted on once.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segroute.cli import app
from segroute.ledger import Ledger
from tests.conftest import (
    assert_each_expected_key_acted_on_once,
    background,
    expected_keys,
    in_flight,
    integrity,
    ledger_keys,
    received_keys,
    received_so_far,
    report,
    requests_of,
    runner,
    send,
    table_rows,
    wait_until,
)
from tests.courier_server import FakeCourier

# _isolated: the delivery tests' autouse fixture (a tmp folder with their config and API key),
# brought in by name so it applies here too.
from tests.test_delivery import _isolated, identify, write_events  # noqa: F401

NEVER_SEEN = "did not finish (killed, or still running)"


# --- helpers ----------------------------------------------------------------------------------


def committed_rows(path: Path, keys: str = "%") -> int:
    """Rows committed so far whose key is LIKE ``keys``, read while the writer may still be running;
    0 when they cannot be read yet (no file, no tables, or a WAL only the writer may recover)."""
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as connection:
            query = "SELECT count(*) FROM requests WHERE key LIKE ?"
            found: int = connection.execute(query, (keys,)).fetchone()[0]
            return found
    except sqlite3.Error:
        return 0


def has_rows(path: Path, keys: str) -> Callable[[], bool]:
    return lambda: committed_rows(path, keys) > 0


def clear_faults(courier: FakeCourier) -> None:
    with courier.lock:
        courier.faults.clear()


# --- stopped mid-way, then resumed ------------------------------------------------------------


def test_sigint_mid_way_then_a_rerun_sends_only_the_rest_each_key_acted_on_once(
    courier: FakeCourier, segment_events: list[dict[str, Any]], ledger: Path
) -> None:
    write_events(segment_events)
    expected = expected_keys(courier, "events.jsonl")
    assert len(expected) > 150
    courier.fault("delay", times=100_000, seconds=0.05)
    with background(courier, "first", "events.jsonl", "--concurrency", "4", "--report", "first.json") as run:
        wait_until(lambda: len(courier.acted_keys()) >= 20, "some requests acted on")
        run.proc.send_signal(signal.SIGINT)
        code, err = run.finish()
    assert code == 130, err
    first = report("first.json")
    assert first["stopped_by"] == "SIGINT"
    assert first["totals"]["not_attempted"] >= 1
    assert integrity(ledger) == "ok"
    recorded = ledger_keys(ledger)
    # Every request that was answered got recorded at the stop, and nothing Courier did not act on.
    assert recorded == courier.acted_keys()
    assert 20 <= len(recorded) < len(expected)
    assert requests_of(first, "sent") == len(recorded)
    opened = Ledger(ledger, create=False)
    try:
        last = opened.summary().last_run
    finally:
        opened.close()
    assert last is not None
    assert (last["stopped_by"], last["counts"]) == ("SIGINT", first["totals"])

    clear_faults(courier)
    start = received_so_far(courier)
    again = send(courier, "events.jsonl", "--report", "second.json")
    assert again.exit_code == 0, again.stderr
    resent = received_keys(courier, start)
    assert set(resent) == expected - recorded
    assert set(resent.values()) == {1}
    second = report("second.json")
    assert requests_of(second, "already_sent") == len(recorded)
    assert requests_of(second, "sent") == len(expected) - len(recorded)
    done_events = second["outcomes"]["skipped"]["already_sent"]
    assert done_events >= 1
    assert ["skipped", "already_sent", str(done_events)] in table_rows(again.stderr)
    assert_each_expected_key_acted_on_once(courier, expected)
    assert ledger_keys(ledger) == expected


def test_sigkill_mid_way_leaves_a_ledger_never_ahead_and_in_flight_requests_go_again(
    courier: FakeCourier, segment_events: list[dict[str, Any]], ledger: Path
) -> None:
    write_events(segment_events)
    expected = expected_keys(courier, "events.jsonl")
    # Slow answers: at any moment of the run requests wait in the server, past the client's reach.
    courier.fault("delay", times=100_000, seconds=0.2)
    with background(courier, "first", "events.jsonl", "--concurrency", "8") as run:
        wait_until(
            lambda: committed_rows(ledger) >= 1 and in_flight(courier),
            "a committed batch and requests in flight",
        )
        run.proc.kill()
        code, _ = run.finish()
    assert code == -signal.SIGKILL
    # The server finishes what reached it (aiohttp does not cancel a handler whose client went away).
    wait_until(lambda: not in_flight(courier), "the server to act on what it received")
    assert integrity(ledger) == "ok"
    recorded = ledger_keys(ledger)
    acted = courier.acted_keys()
    assert recorded and recorded <= acted  # never ahead of Courier
    unrecorded = acted - recorded
    assert unrecorded  # at least the requests in flight at the kill
    opened = Ledger(ledger, create=False)
    try:
        last = opened.summary().last_run
    finally:
        opened.close()
    assert last is not None
    assert (last["ended_at"], last["stopped_by"], last["counts"]) == (None, NEVER_SEEN, None)
    shown = runner.invoke(app, ["ledger"])
    assert shown.exit_code == 0, shown.stderr
    assert shown.stdout.splitlines()[-1] == (
        f"last run (#1 of 1): {last['started_at']} to - ({NEVER_SEEN}); no counts; "
        f"to {courier.url}; inputs: events.jsonl"
    )

    clear_faults(courier)
    start = received_so_far(courier)
    again = send(courier, "events.jsonl", "--report", "second.json")
    assert again.exit_code == 0, again.stderr
    resent = received_keys(courier, start)
    assert set(resent) == expected - recorded
    # Acted on before the kill but not recorded: sent again with the same key, answered from the store.
    total = received_keys(courier)
    assert all(total[key] == 2 for key in unrecorded)
    second = report("second.json")
    assert second["http_statuses"] == {"200": len(expected) - len(recorded)}
    assert requests_of(second, "already_sent") == len(recorded)
    assert_each_expected_key_acted_on_once(courier, expected)
    assert ledger_keys(ledger) == expected


def test_sigint_while_retrying_a_503_then_a_rerun_acts_on_each_key_once(
    courier: FakeCourier, segment_events: list[dict[str, Any]], ledger: Path
) -> None:
    write_events(segment_events)
    expected = expected_keys(courier, "events.jsonl")
    blocked = {"/profiles/user-3", "/profiles/user-5"}
    courier.fault(
        "status", times=100_000, status=503, headers={"Retry-After": "1"}, match=lambda r: r.path in blocked
    )

    def retrying() -> bool:
        with courier.lock:
            counts = Counter(r.key for r in courier.received if r.path in blocked)
        return any(n >= 2 for n in counts.values())

    with background(courier, "first", "events.jsonl", "--report", "first.json") as run:
        wait_until(lambda: retrying() and len(courier.acted_keys()) >= 10, "a retry, and requests acted on")
        run.proc.send_signal(signal.SIGINT)  # the retry after the next Retry-After is pending
        code, err = run.finish()
    assert code == 130, err
    first = report("first.json")
    assert first["stopped_by"] == "SIGINT"
    assert first["retries"] >= 1
    assert "failed" not in first["totals"]  # a retry cut short is not attempted, not failed
    assert first["totals"]["not_attempted"] >= 1
    assert integrity(ledger) == "ok"
    recorded = ledger_keys(ledger)
    assert recorded == courier.acted_keys()
    with courier.lock:
        refused = {r.key for r in courier.received if r.path in blocked}
    assert refused and refused.isdisjoint(recorded)

    clear_faults(courier)
    again = send(courier, "events.jsonl", "--report", "second.json")
    assert again.exit_code == 0, again.stderr
    assert requests_of(report("second.json"), "already_sent") == len(recorded)
    assert_each_expected_key_acted_on_once(courier, expected)
    assert refused <= courier.acted_keys()
    assert ledger_keys(ledger) == expected


def test_sigint_while_a_request_waits_out_a_long_retry_after_ends_it_at_once_and_keeps_it(
    courier: FakeCourier,
) -> None:
    """Courier asked u1's request to wait 3,000 s before retrying. Ctrl-C ends that wait at once
    (before the 10 s the run gives requests in flight), with no second attempt: the request is not
    attempted, and its event is in the failure file."""
    courier.fault(
        "status",
        times=10**6,
        status=503,
        headers={"Retry-After": "3000"},
        match=lambda r: r.path == "/profiles/u1",
    )
    events = [identify(0, "u0"), identify(1, "u1"), identify(2, "u2")]
    write_events(events)
    args = ("events.jsonl", "-o", "jsonl", "--failed", "failed.jsonl", "--report", "report.json")
    with background(courier, "run", *args, "--max-time", "7200", "--give-up-after", "7200") as run:
        wait_until(
            lambda: received_keys(courier).total() == 3 and len(courier.acted_keys()) == 2,
            "u1's 503, and the others accepted",
        )
        run.proc.send_signal(signal.SIGINT)
        code, err = run.finish(timeout=30)
    assert code == 130, err
    assert [r.path for r in courier.received].count("/profiles/u1") == 1
    ended = {
        line["url"].rsplit("/", 1)[1]: line
        for line in map(json.loads, Path("run.out").read_text().splitlines())
    }
    assert {user: line["outcome"] for user, line in ended.items()} == {
        "u0": "sent",
        "u1": "not_attempted",
        "u2": "sent",
    }
    u1 = ended["u1"]
    # Ended by the stop during its wait, not cut off by the drain time-out after it.
    assert (u1["status"], u1["attempts"], u1["reason"], u1["detail"]) == (
        503,
        1,
        "stopped",
        "HTTP 503: Service Unavailable",
    )
    found = report("report.json")
    assert (found["stopped_by"], found["totals"]) == ("SIGINT", {"sent": 2, "not_attempted": 1})
    assert [json.loads(line) for line in Path("failed.jsonl").read_text().splitlines()] == [events[1]]


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from segroute import ledger as ledger_module
    from segroute.models import Event, Request, RequestResult, Target

    ledger_module.FLUSH_ROWS = int(sys.argv[3])
    ledger_module.FLUSH_SECONDS = 3600.0  # batches by size only, so each commit is FLUSH_ROWS rows
    url, path, round_ = "http://127.0.0.1:9", "/automations/order-confirmation/invoke", sys.argv[2]
    opened = ledger_module.Ledger(Path(sys.argv[1]))
    opened.start_run(api_url=url, inputs=["loop"], shard=None)
    target = Target("automation", "order-confirmation")
    print("ready", flush=True)
    n = 0
    while True:
        event = Event(f"loop:{n}", {"n": n}, "track", f"{round_}-{n}", f"user-{n % 7}", "Checkout Complete")
        request = Request("POST", url + path, path, b"{}", f"{round_}-key-{n}", target)
        opened.record(url, RequestResult(request, event, "sent", "", 200, 1, run_id=f"run-{n}"))
        n += 1
    """
)


def test_a_kill_at_any_moment_leaves_a_ledger_that_opens_with_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite3"
    batch = 100
    rng = random.Random(2026)
    rounds = 6
    for round_ in range(rounds):
        with subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), f"r{round_}", str(batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            wait_until(has_rows(path, f"r{round_}-%"), "a committed batch of this process")
            time.sleep(rng.uniform(0.0, 0.1))  # then anywhere in a batch or its commit
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
    opened = Ledger(path, create=False)
    try:
        rows = list(opened.export())
        summary = opened.summary()
    finally:
        opened.close()
    assert integrity(path) == "ok"
    assert len(rows) % batch == 0
    assert summary.runs == rounds
    assert summary.last_run is not None and summary.last_run["stopped_by"] == NEVER_SEEN
    per_round: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        round_, _, n = row["idempotency_key"].partition("-key-")
        number = int(n)
        assert row == {
            "api_url": "http://127.0.0.1:9",
            "idempotency_key": f"{round_}-key-{number}",
            "automation": "order-confirmation",
            "messageId": f"{round_}-{number}",
            "recipient": f"user-{number % 7}",
            "status": 200,
            "runId": f"run-{number}",
            "requestId": None,
            "accepted_at": row["accepted_at"],
            "run": int(round_[1:]) + 1,
        }
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row["accepted_at"])
        datetime.datetime.fromisoformat(row["accepted_at"])
        per_round[round_].append(number)
    # Each process committed whole batches, in order: a prefix of what it recorded.
    assert sorted(per_round) == [f"r{n}" for n in range(rounds)]
    for numbers in per_round.values():
        assert sorted(numbers) == list(range(len(numbers)))
        assert len(numbers) % batch == 0 and numbers
