"""Delivery against a real HTTP server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from segroute.cli import app
from segroute.config import Config, Link
from segroute.delivery import WINDOW_PER_WORKER, DeliveryOptions, DeliveryStats, deliver, open_session
from segroute.feeds import INLINE_BATCH, READ_BATCH
from segroute.ledger import Ledger
from segroute.models import Event, Record, Request, RequestResult
from segroute.pipeline import plan
from segroute.routing import Router
from segroute.throttle import Throttle
from tests.conftest import isolate, received_so_far
from tests.conftest import segroute_send as segroute_send  # test_health imports it from here
from tests.courier_server import API_KEY, FakeCourier, Received

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
[[links]]
event = "Checkout Complete"
automation = "order-confirmation"

[[links]]
event = "Checkout Complete"
automation = "loyalty points/eu"
brand = "shop"
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)
    monkeypatch.setenv("COURIER_API_KEY", API_KEY)
    Path("segroute.toml").write_text(CONFIG)


def checkout(n: int, user: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Checkout Complete",
        "userId": user,
        "messageId": f"msg-{n}",
        "properties": {"order": n},
    }


def identify(n: int, user: str) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "messageId": f"id-{n}", "traits": {"n": n}}


def write_events(events: list[dict[str, Any]], path: str = "events.jsonl") -> str:
    Path(path).write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def send(courier: FakeCourier, *args: str) -> Result:
    return runner.invoke(app, ["send", *args, "--api-url", courier.url])


def lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_each_key_acted_on_once(courier: FakeCourier, expected: int) -> None:
    assert len(courier.acted) == expected
    assert set(courier.acted.values()) == {1}


def never_leaks_the_key(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text


# --- the happy path ---------------------------------------------------------------------------


def test_sends_exactly_what_the_dry_run_shows(courier: FakeCourier) -> None:
    write_events([checkout(1, "ana maría/eu"), identify(2, "u2"), checkout(3, "u2")])
    dry = runner.invoke(app, ["send", "events.jsonl", "--dry-run", "-o", "jsonl", "--api-url", courier.url])
    result = send(courier, "events.jsonl", "-o", "jsonl")
    assert result.exit_code == 0, result.stderr
    planned = {(p["url"], p["headers"]["Idempotency-Key"], json.dumps(p["body"])) for p in lines(dry)}
    got = {(courier.url + r.path, r.key, json.dumps(r.json())) for r in courier.received}
    assert got == planned
    for received in courier.received:
        assert received.headers["Authorization"] == f"Bearer {API_KEY}"
        assert received.headers["Content-Type"] == "application/json"
    assert {r.path for r in courier.received} == {
        "/automations/order-confirmation/invoke",
        "/automations/loyalty%20points%2Feu/invoke",
        "/profiles/u2",
    }
    assert_each_key_acted_on_once(courier, 5)
    outputs = lines(result)
    assert len(outputs) == 5
    first = outputs[0]
    # The request as the dry run shows it, then what became of it.
    assert list(first) == [
        "method",
        "url",
        "headers",
        "body",
        "origin",
        "messageId",
        "outcome",
        "reason",
        "status",
        "attempts",
        "runId",
    ]
    dry_by_key = {line["headers"]["Idempotency-Key"]: line for line in lines(dry)}
    for record in outputs:
        request = {key: record[key] for key in ("method", "url", "headers", "body", "origin", "messageId")}
        assert request == dry_by_key[record["headers"]["Idempotency-Key"]]
    assert (first["status"], first["attempts"], first["outcome"], first["origin"]) == (
        200,
        1,
        "sent",
        "events.jsonl:1",
    )
    assert first["runId"].startswith("1-run-")
    rows = [line.split() for line in result.stderr.splitlines()]
    assert ["sent", "3"] in rows and ["read", "3"] in rows
    never_leaks_the_key(result.stdout, result.stderr)


def test_the_shipped_example_goes_out(courier: FakeCourier) -> None:
    result = runner.invoke(
        app,
        [
            "send",
            str(ROOT / "examples" / "events.jsonl"),
            "-c",
            str(ROOT / "config.example.toml"),
            "--api-url",
            courier.url,
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert_each_key_acted_on_once(courier, 8)


# --- misbehaving servers ----------------------------------------------------------------------


def test_429_and_5xx_bursts_are_retried_with_the_same_key(courier: FakeCourier) -> None:
    courier.fault("status", times=3, status=429, headers={"Retry-After-Ms": "20"})
    courier.fault("status", times=4, status=500)
    courier.fault("status", times=4, status=503, headers={"Retry-After": "0"})
    write_events([checkout(n, f"u{n % 3}") for n in range(10)])
    # Up to 11 faults could hit one request in a row: allow that many retries.
    result = send(
        courier, "events.jsonl", "--concurrency", "4", "--max-retries", "11", "--report", "report.json"
    )
    assert result.exit_code == 0, result.stderr
    assert_each_key_acted_on_once(courier, 20)
    assert len(courier.received) == 20 + 11
    by_key: dict[str, list[Received]] = defaultdict(list)
    for received in courier.received:
        by_key[received.key].append(received)
    retried = [r for r in by_key.values() if len(r) > 1]
    assert retried
    assert all(len({x.body for x in r}) == 1 for r in retried)
    report = json.loads(Path("report.json").read_text())
    assert report["retries"] == 11
    assert report["outcomes"]["sent"] == {"ok": 10}
    assert report["http_statuses"] == {"200": 20}


def test_a_slow_answer_past_the_timeout_is_retried_and_acted_on_once(courier: FakeCourier) -> None:
    courier.fault("delay", times=1, seconds=1.5)
    write_events([checkout(1, "u1")])
    result = send(courier, "events.jsonl", "--timeout", "0.3", "-o", "jsonl")
    assert result.exit_code == 0, result.stderr
    courier.wait_until_answered()  # the slow handler too: it must find the key already answered
    assert_each_key_acted_on_once(courier, 2)
    assert max(line["attempts"] for line in lines(result)) >= 2


@pytest.mark.parametrize("kind", ["drop", "drop_after"])
def test_dropped_connections_lose_nothing_and_send_nothing_twice(courier: FakeCourier, kind: Any) -> None:
    courier.fault(kind, times=3)
    write_events([checkout(n, f"u{n}") for n in range(4)])
    result = send(courier, "events.jsonl", "-o", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert_each_key_acted_on_once(courier, 8)
    assert sum(line["attempts"] for line in lines(result)) == 8 + 3


def test_a_400_is_not_retried_and_lands_in_the_failure_file(courier: FakeCourier) -> None:
    courier.rejected_recipients.add("bad-user")
    events = [checkout(1, "u1"), checkout(2, "bad-user"), identify(3, "u3")]
    write_events(events)
    result = send(courier, "events.jsonl", "--failed", "failed.jsonl", "--report", "report.json")
    assert result.exit_code == 1
    assert [json.loads(line) for line in Path("failed.jsonl").read_text().splitlines()] == [events[1]]
    # The event's line as it was read (json.dumps's spaces and all), not written again.
    assert Path("failed.jsonl").read_text().splitlines() == Path("events.jsonl").read_text().splitlines()[1:2]
    assert (
        sum(1 for r in courier.received if r.json().get("recipient") == "bad-user") == 2
    )  # one per automation
    assert "events.jsonl:2: failed (http_400): HTTP 400: invalid recipient bad-user" in result.stderr
    report = json.loads(Path("report.json").read_text())
    assert report["outcomes"]["failed"] == {"http_400": 1}
    assert report["problems"][0]["origin"] == "events.jsonl:2"
    # The failure file replays exactly what did not go out.
    courier.rejected_recipients.clear()
    again = send(courier, "failed.jsonl")
    assert again.exit_code == 0
    assert_each_key_acted_on_once(courier, 5)


def test_a_408_is_retried_under_the_same_key_then_accepted(courier: FakeCourier) -> None:
    courier.fault("status", times=1, status=408, message="Request Timeout")
    write_events([identify(1, "u1")])
    result = send(courier, "events.jsonl", "-o", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert [(line["status"], line["attempts"], line["outcome"]) for line in lines(result)] == [
        (200, 2, "sent")
    ]
    assert [r.path for r in courier.received] == ["/profiles/u1", "/profiles/u1"]
    assert len({r.key for r in courier.received}) == 1
    assert_each_key_acted_on_once(courier, 1)


def test_a_409_counts_as_delivered(courier: FakeCourier) -> None:
    courier.fault("status", times=1, status=409, match=lambda r: r.path == "/profiles/u3")
    write_events([identify(3, "u3")])
    result = send(courier, "events.jsonl", "-o", "jsonl")
    assert result.exit_code == 0
    assert lines(result)[0]["reason"] == "duplicate"
    assert ["sent", "duplicate", "1"] in [line.split() for line in result.stderr.splitlines()]


def test_retries_run_out_for_one_request_while_the_api_answers_others(courier: FakeCourier) -> None:
    courier.fault(
        "status",
        times=100,
        status=503,
        headers={"Retry-After": "0"},
        match=lambda r: r.path == "/profiles/u1",
    )
    write_events([identify(1, "u1"), identify(2, "u2")])
    result = send(courier, "events.jsonl", "--max-retries", "2", "--failed", "failed.jsonl")
    assert result.exit_code == 1
    assert [r.path for r in courier.received].count("/profiles/u1") == 3
    assert "failed (http_503): HTTP 503: Service Unavailable; gave up after 3 attempts" in result.stderr
    assert [json.loads(line)["userId"] for line in Path("failed.jsonl").read_text().splitlines()] == ["u1"]
    assert_each_key_acted_on_once(courier, 1)


@pytest.mark.parametrize("status", [401, 403])
def test_a_401_or_a_403_stops_the_run_and_nothing_is_lost(
    courier: FakeCourier, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    if status == 401:  # a key Courier does not know
        monkeypatch.setenv("COURIER_API_KEY", "sk_wrong_key_0000")
        message = "Unauthorized"
    else:  # a key Courier knows, without the right to send
        courier.fault("status", times=10**6, status=403, message="Forbidden")
        message = "Forbidden"
    events = [identify(n, f"u{n}") for n in range(300)]
    write_events(events)
    result = send(
        courier, "events.jsonl", "--concurrency", "2", "--failed", "failed.jsonl", "--report", "r.json"
    )
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: Courier refused the API key (HTTP {status}: {message}); check COURIER_API_KEY. "
        "The run stopped: what was not sent is counted as not attempted."
    ]
    assert len(courier.received) < 50
    assert courier.acted == {}
    failed = [json.loads(line) for line in Path("failed.jsonl").read_text().splitlines()]
    report = json.loads(Path("r.json").read_text())
    assert report["stopped_by"] == "unauthorized"
    read = report["read"]
    assert sum(report["totals"].values()) == read
    assert len(failed) == read
    # Everything read, and only that, is in the failure file (in the order the requests ended).
    assert sorted(failed, key=lambda e: e["traits"]["n"]) == events[:read]
    never_leaks_the_key(
        result.stdout, result.stderr, Path("r.json").read_text(), Path("failed.jsonl").read_text()
    )
    assert "sk_wrong_key_0000" not in result.stdout + result.stderr + Path("r.json").read_text()


def test_a_gateway_error_page_that_is_not_json_fails_the_request_with_one_clean_line(
    courier: FakeCourier,
) -> None:
    page = (
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    courier.fault(
        "status",
        times=100,
        status=502,
        body=page,
        headers={"Retry-After": "0"},
        match=lambda r: r.path == "/profiles/u1",
    )
    write_events([identify(1, "u1"), identify(2, "u2")])
    result = send(courier, "events.jsonl", "--max-retries", "2", "--report", "report.json", "-o", "jsonl")
    assert result.exit_code == 1
    assert [r.path for r in courier.received].count("/profiles/u1") == 3  # retried, then failed
    detail = "HTTP 502; gave up after 3 attempts"
    assert [line for line in result.stderr.splitlines() if "failed (" in line] == [
        f"events.jsonl:1: failed (http_502): {detail} [POST {courier.url}/profiles/u1]"
    ]
    assert "<" not in result.stderr + result.stdout
    ended = {line["url"].rsplit("/", 1)[1]: (line["outcome"], line.get("detail")) for line in lines(result)}
    assert ended == {"u1": ("failed", detail), "u2": ("sent", None)}
    assert [problem["detail"] for problem in json.loads(Path("report.json").read_text())["problems"]] == [
        detail
    ]


def test_a_send_with_a_rate_cap_spaces_its_starts_and_sends_everything(
    courier: FakeCourier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--rate 4: each request after the first starts a quarter of a second after the one before. The
    send keeps time by a clock of the test's, moved on only by the waits the send asks for."""
    from segroute import delivery

    now = [1000.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds
        await asyncio.sleep(0)

    real_deliver = delivery.deliver

    async def deliver_on_the_tests_clock(*args: Any, **kwargs: Any) -> DeliveryStats:
        return await real_deliver(*args, **kwargs, sleep=sleep, clock=lambda: now[0])

    monkeypatch.setattr(delivery, "deliver", deliver_on_the_tests_clock)
    write_events([identify(n, f"u{n}") for n in range(5)])
    result = send(courier, "events.jsonl", "--rate", "4", "--concurrency", "1", "--report", "r.json")
    assert result.exit_code == 0, result.stderr
    assert waits == [0.25] * 4
    assert_each_key_acted_on_once(courier, 5)
    assert json.loads(Path("r.json").read_text())["outcomes"] == {"sent": {"ok": 5}}


def test_per_recipient_order_holds_at_concurrency_16(courier: FakeCourier) -> None:
    rng = random.Random(7)
    events: list[dict[str, Any]] = []
    for n in range(300):
        user = f"user-{rng.randrange(12)}"
        events.append(identify(n, user) if rng.random() < 0.3 else checkout(n, user))
    # Random small delays let later requests overtake earlier ones, unless order is enforced.
    courier.fault("delay", times=120, seconds=0.02, match=lambda _: rng.random() < 0.5)
    write_events(events)
    result = send(courier, "events.jsonl", "--concurrency", "16")
    assert result.exit_code == 0, result.stderr
    index = {e["messageId"]: n for n, e in enumerate(events)}
    order_key = {r.key: n for n, r in enumerate(courier.acted_order)}
    assert len(order_key) == sum(2 if e["type"] == "track" else 1 for e in events)
    seen: dict[str, list[int]] = defaultdict(list)
    for received in courier.acted_order:
        body = received.json()
        user = body["recipient"] if "recipient" in body else received.path.rsplit("/", 1)[1]
        message = body["data"]["messageId"] if "data" in body else f"id-{body['profile']['n']}"
        seen[user].append(index[message])
    for user, positions in seen.items():
        assert positions == sorted(positions), user


def test_key_from_the_old_variable_and_region_and_plain_http(
    courier: FakeCourier, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_events([identify(1, "u1")])
    monkeypatch.delenv("COURIER_API_KEY")
    monkeypatch.setenv("COURIER_AUTH_TOKEN", API_KEY)
    assert send(courier, "events.jsonl").exit_code == 0
    remote = runner.invoke(app, ["send", "events.jsonl", "--api-url", "http://courier.example.com"])
    assert remote.exit_code == 2
    assert (
        remote.stderr
        == "error: refusing to send the API key over plain http to http://courier.example.com: use https\n"
    )
    both = runner.invoke(app, ["send", "events.jsonl", "--region", "eu", "--api-url", courier.url])
    assert both.exit_code == 2
    eu = runner.invoke(app, ["send", "events.jsonl", "--region", "eu", "--dry-run", "-o", "jsonl"])
    assert json.loads(eu.stdout)["url"] == "https://api.eu.courier.com/profiles/u1"


def test_ctrl_c_on_a_slow_server_stops_cleanly(courier: FakeCourier, tmp_path: Path) -> None:
    courier.fault("delay", times=10_000, seconds=0.3)
    events = [identify(n, f"u{n}") for n in range(5000)]
    write_events(events)
    env = dict(os.environ, COURIER_API_KEY=API_KEY)
    command = segroute_send(
        "events.jsonl",
        "--api-url",
        courier.url,
        "--concurrency",
        "4",
        "-o",
        "jsonl",
        "--failed",
        "failed.jsonl",
        "--report",
        "report.json",
    )
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # a request has completed: the run is under way
        proc.send_signal(signal.SIGINT)
        # Not communicate(): it would skip what readline() already buffered past the first line.
        out = proc.stdout.read()
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.wait(timeout=60)
    assert json.loads(first)["outcome"] == "sent"
    assert proc.returncode == 130, err
    assert b"stopping (SIGINT): no more events are read" in err
    # How far it read (of 5,000), and the command that resumes it, going where this run went; the
    # failure file holds only what was read, so it is not offered for a replay.
    assert re.search(rb"stopped by Ctrl-C \(SIGINT\): read [\d,]+ of about [\d,]+ records", err)
    lines = err.decode().splitlines()
    resume = lines[next(n for n, line in enumerate(lines) if "To resume" in line) + 1]
    assert resume.startswith("  segroute send events.jsonl ")
    for option in (f"--api-url {courier.url}", "--concurrency 4", "--failed failed.jsonl", "--ledger "):
        assert option in resume
    assert b"replay with" not in err
    report = json.loads(Path("report.json").read_text())
    assert report["stopped_by"] == "SIGINT"
    sent = report["totals"]["sent"]
    assert report["totals"]["not_attempted"] >= 1
    assert sent + report["totals"]["not_attempted"] == report["read"] < 5000
    failed = [json.loads(line)["messageId"] for line in Path("failed.jsonl").read_text().splitlines()]
    assert len(failed) == report["totals"]["not_attempted"]
    sent_ids = {
        json.loads(line)["messageId"]
        for line in (first + out).splitlines()
        if json.loads(line)["outcome"] == "sent"
    }
    assert sent_ids.isdisjoint(failed)
    assert len(sent_ids) == sent
    never_leaks_the_key(out.decode(), err.decode(), Path("report.json").read_text())


ODD_IDS = ["..", ".", "a/b", "a b", "a+b"]


def test_odd_user_ids_reach_the_server_percent_encoded_and_dot_segments_never_do(
    courier: FakeCourier,
) -> None:
    """The raw path the server got: a client or proxy that decoded or normalised it would merge these
    profiles into others ('a/b' into a path of two segments, '..' into the API's root)."""
    write_events([identify(n, user) for n, user in enumerate(ODD_IDS)])
    result = send(courier, "events.jsonl", "--report", "r.json")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:2] == [
        "events.jsonl:1: rejected (unsafe_id): userId '..' would name another URL path",
        "events.jsonl:2: rejected (unsafe_id): userId '.' would name another URL path",
    ]
    assert sorted(r.path for r in courier.received) == [
        "/profiles/a%20b",
        "/profiles/a%2Bb",
        "/profiles/a%2Fb",
    ]
    assert json.loads(Path("r.json").read_text())["totals"] == {"rejected": 2, "sent": 3}


def test_dot_user_ids_that_got_past_the_event_check_still_go_out_as_literal_segments(
    courier: FakeCourier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path is built and sent as it is encoded: '.' and '..' as %2E and %2E%2E, never resolved into
    /profiles/ or / on the way (as a URL parsed again would be)."""
    from segroute import events

    monkeypatch.setattr(events, "UNSAFE_IDS", ())  # as if the check on events were gone
    write_events([identify(n, user) for n, user in enumerate(ODD_IDS)])
    result = send(courier, "events.jsonl")
    assert result.exit_code == 0, result.stderr
    assert sorted(r.path for r in courier.received) == [
        "/profiles/%2E",
        "/profiles/%2E%2E",
        "/profiles/a%20b",
        "/profiles/a%2Bb",
        "/profiles/a%2Fb",
    ]


# --- the retry policy's parts, without a server ----------------------------------------------


def test_rate_limiter_spaces_starts_evenly() -> None:
    now = [100.0]
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = Throttle(concurrency=8, rate=4.0, clock=lambda: now[0], sleep=fake_sleep)

    async def start_five() -> None:
        for _ in range(5):
            await limiter.acquire()
            limiter.release()

    asyncio.run(start_five())
    assert waits == [0.25, 0.25, 0.25, 0.25]


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]])
def test_sigterm_stops_like_ctrl_c_and_a_second_ctrl_c_quits_at_once(
    courier: FakeCourier, tmp_path: Path, signals: list[signal.Signals]
) -> None:
    courier.fault("delay", times=10_000, seconds=2.0)
    write_events([identify(n, f"u{n}") for n in range(500)])
    command = segroute_send("events.jsonl", "--api-url", courier.url, "--report", "report.json")
    env = dict(os.environ, COURIER_API_KEY=API_KEY)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path
    ) as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while len(courier.received) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)  # wait until requests are in flight
        for signum in signals:
            proc.send_signal(signum)
            time.sleep(0.2)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == (143 if signals[0] == signal.SIGTERM else 130), err
    # One stop drains in-flight requests (2 s here) and writes the report; the second quits before that.
    assert Path("report.json").exists() is (len(signals) == 1)


def test_retry_after_beats_the_computed_backoff(courier: FakeCourier) -> None:
    """Straight through `deliver`, with a sleep that records what it was asked to wait."""
    from segroute.config import Config
    from segroute.delivery import DeliveryOptions, deliver, open_session
    from segroute.models import Delivered
    from segroute.pipeline import plan
    from segroute.routing import Router
    from segroute.sources import iter_items

    courier.fault("status", times=1, status=429, headers={"Retry-After": "7"})
    courier.fault("status", times=1, status=503)
    write_events([identify(1, "u1")])
    waits: list[float] = []
    ended: list[Any] = []
    now = [1000.0]

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    async def main() -> None:
        options = DeliveryOptions(backoff_initial=0.5, backoff_max=8.0)
        outcomes = plan(iter_items(["events.jsonl"]), Router(Config()), base_url=courier.url)
        async with open_session(API_KEY, options) as session:
            await deliver(
                outcomes,
                session=session,
                options=options,
                stop=asyncio.Event(),
                on_outcome=ended.append,
                on_request=lambda _: None,
                sleep=record_sleep,
                clock=lambda: now[0],
            )

    asyncio.run(main())
    assert waits[0] == 7.0  # the server's Retry-After
    assert 0.5 <= waits[1] <= 1.0  # then the backoff's second step, with jitter
    (delivered,) = ended
    assert isinstance(delivered, Delivered)
    assert (delivered.outcome, delivered.results[0].attempts) == ("sent", 3)


# --- what a second review found ---------------------------------------------------------------


def test_an_output_file_that_is_also_an_input_is_refused(courier: FakeCourier) -> None:
    write_events([identify(1, "u1")], "failed.jsonl")
    before = Path("failed.jsonl").read_text()
    result = send(courier, "failed.jsonl", "--failed", "failed.jsonl")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: failure file failed.jsonl is also an input: write it elsewhere, then replay it\n"
    )
    assert Path("failed.jsonl").read_text() == before
    unwritable = send(courier, "failed.jsonl", "--report", "no/such/folder/r.json")
    assert unwritable.exit_code == 2
    assert courier.received == []


def test_a_key_a_header_cannot_carry_is_refused(
    courier: FakeCourier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURIER_API_KEY", "sk_a\rb")
    write_events([identify(1, "u1")])
    result = send(courier, "events.jsonl")
    assert result.exit_code == 2
    assert "the API key holds characters an HTTP header cannot carry" in result.stderr
    assert "sk_a" not in result.stderr


def test_redirects_are_not_followed(courier: FakeCourier) -> None:
    courier.fault("status", times=1, status=302, headers={"Location": "/elsewhere"})
    write_events([identify(1, "u1")])
    result = send(courier, "events.jsonl", "-o", "jsonl")
    assert result.exit_code == 1
    assert [(line["status"], line["outcome"], line["reason"]) for line in lines(result)] == [
        (302, "failed", "http_302")
    ]
    assert [r.path for r in courier.received] == ["/profiles/u1"]


def test_duplicates_spilled_to_disk_work_with_a_host_name(
    courier: FakeCourier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The duplicate check's SQLite file lives on the reader's thread; host lookups use other threads."""
    from segroute import dedupe

    monkeypatch.setattr(dedupe, "DEDUPE_MEMORY", 5)
    events = [identify(n, f"u{n}") for n in range(40)]
    write_events(events + events[:3])
    result = runner.invoke(
        app, ["send", "events.jsonl", "--api-url", f"http://localhost:{courier.port}", "--report", "r.json"]
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(Path("r.json").read_text())
    assert report["outcomes"] == {"sent": {"ok": 40}, "skipped": {"duplicate": 3}}
    assert_each_key_acted_on_once(courier, 40)


def test_an_event_too_deep_to_write_does_not_break_the_failure_file(courier: FakeCourier) -> None:
    deep = json.dumps(dict(identify(1, "u1"), traits={"x": 1})).replace('{"x": 1}', "[" * 1000 + "]" * 1000)
    Path("events.jsonl").write_text(deep + "\n" + json.dumps(identify(2, "u2")) + "\n")
    result = send(courier, "events.jsonl", "--failed", "failed.jsonl", "--report", "r.json")
    assert result.exit_code == 1
    assert "events.jsonl:1: rejected (invalid_traits)" in result.stderr or "too_deep" in result.stderr
    assert "events nested too deeply to write back were left out" in result.stderr
    assert json.loads(Path("r.json").read_text())["totals"] == {"rejected": 1, "sent": 1}


def test_max_time_bounds_the_attempt_in_progress(courier: FakeCourier) -> None:
    courier.fault("delay", times=5, seconds=3.0)
    write_events([identify(1, "u1")])
    result = send(courier, "events.jsonl", "--timeout", "30", "--max-time", "0.5", "-o", "jsonl")
    assert result.exit_code == 1
    (line,) = lines(result)
    assert (line["outcome"], line["reason"], line["attempts"]) == ("failed", "timeout", 1)
    assert line["detail"].startswith("no answer within 0.")
    assert line["detail"].endswith("the next retry would pass the 0.5s limit")


def test_events_piped_in_go_out_as_they_come_and_ctrl_c_stops_a_waiting_run(
    courier: FakeCourier, tmp_path: Path
) -> None:
    command = segroute_send("-", "--api-url", courier.url, "-o", "jsonl", "--failed", "f.jsonl")
    env = dict(os.environ, COURIER_API_KEY=API_KEY)
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        for n in range(3):
            proc.stdin.write(json.dumps(identify(n, f"u{n}")).encode() + b"\n")
        proc.stdin.flush()
        got = [json.loads(proc.stdout.readline()) for _ in range(3)]  # sent while stdin is still open
        proc.send_signal(signal.SIGINT)
        proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(timeout=30)
    assert [line["outcome"] for line in got] == ["sent"] * 3
    assert proc.returncode == 130, err


def test_reading_waits_while_the_window_of_open_requests_is_full(courier: FakeCourier) -> None:
    """Events are read only as far ahead as WINDOW_PER_WORKER requests a worker: on a slow server the
    rest of the input waits unread, so memory holds a window, not the input."""
    courier.fault("delay", times=10**6, seconds=0.005)
    options = DeliveryOptions(concurrency=2)
    router = Router(Config(links=[Link(event="Checkout Complete", automation="a")]))
    count = 120
    read = ended = most_open = 0

    def records() -> Iterator[Record]:
        nonlocal read, most_open
        for n in range(count):
            read += 1
            most_open = max(most_open, read - ended)
            yield Record(f"events:{n + 1}", checkout(n, f"user-{n}"), 100)

    def on_request(result: RequestResult) -> None:
        nonlocal ended
        assert result.outcome == "sent", result
        ended += 1

    async def main() -> None:
        async with open_session(API_KEY, options) as session:
            await deliver(
                plan(records(), router, base_url=courier.url),
                session=session,
                options=options,
                stop=asyncio.Event(),
                on_outcome=lambda outcome: None,
                on_request=on_request,
                read_inline=True,
            )

    asyncio.run(main())
    assert ended == count
    assert_each_key_acted_on_once(courier, count)
    # The window, a batch the reader takes in one turn, and the event being read.
    window = options.concurrency * WINDOW_PER_WORKER
    assert window < most_open <= window + INLINE_BATCH + 1


# --- what an answer calls for, and what Courier then holds under the key ------------------------


# --- a stop: waits cut short, requests in flight cut off, nothing read lost ----------------------

HANGS = 3600.0
"""Seconds a scripted wait or answer takes: past any test's time-out, so a stop that did not end it
shows as a test that times out."""
LONG_OPTIONS = DeliveryOptions(
    attempt_timeout=HANGS, request_deadline=2 * HANGS, give_up_after=2 * HANGS, drain_timeout=0.1
)
"""Limits that never end a request by themselves: only the stop can."""


def deliver_until_stopped(
    courier: FakeCourier,
    records: Iterable[Record],
    options: DeliveryOptions,
    *,
    stop_when: Callable[[], bool] = lambda: False,
    stop_on_sleep: bool = False,
    ledger: Ledger | None = None,
) -> tuple[list[Any], list[RequestResult], DeliveryStats]:
    """`deliver` the records' identifies on the reader thread; stop once ``stop_when()`` holds (looked at
    every 10 ms), or, with ``stop_on_sleep``, as soon as a wait of a minute or more begins; with a
    ``ledger``, note each request in it as a send does. What ``on_outcome`` got, what ``on_request``
    got, and the stats."""
    ended: list[Any] = []
    results: list[RequestResult] = []

    def on_request(result: RequestResult) -> None:
        results.append(result)
        if ledger is not None:
            ledger.record(courier.url, result)

    def before_send(request: Request, event: Event) -> None:
        if ledger is not None:
            ledger.intend(courier.url, request, event, key_lifetime=24 * 3600)

    async def main() -> DeliveryStats:
        stop = asyncio.Event()

        async def sleep(seconds: float) -> None:
            if stop_on_sleep and seconds >= 60:
                asyncio.get_running_loop().call_soon(stop.set)
            await asyncio.sleep(seconds)

        async def stop_in_time() -> None:
            while not stop_when():
                await asyncio.sleep(0.01)
            stop.set()

        stopper = asyncio.create_task(stop_in_time())
        try:
            async with open_session(API_KEY, options) as session:
                return await deliver(
                    plan(records, Router(Config()), base_url=courier.url),
                    session=session,
                    options=options,
                    stop=stop,
                    on_outcome=ended.append,
                    on_request=on_request,
                    sleep=sleep,
                    before_send=before_send,
                )
        finally:
            stopper.cancel()

    stats = asyncio.run(main())
    return ended, results, stats


def identifies(count: int) -> Iterator[Record]:
    for n in range(count):
        yield Record(f"events:{n + 1}", identify(n, f"u{n}"), 100)


@pytest.mark.parametrize("wait", ["Retry-After", "backoff"])
def test_a_stop_wakes_a_request_waiting_to_retry_and_it_is_not_tried_again(
    courier: FakeCourier, wait: str
) -> None:
    """A 503 asks to wait an hour (or the backoff is that long): a stop during the wait ends the
    request at once as not attempted, after its one attempt."""
    headers = {"Retry-After": str(int(HANGS))} if wait == "Retry-After" else {}
    courier.fault("status", times=10**6, status=503, headers=headers)
    options = dataclasses.replace(LONG_OPTIONS, backoff_initial=HANGS, backoff_max=HANGS)
    _, results, stats = deliver_until_stopped(courier, identifies(1), options, stop_on_sleep=True)
    [result] = results
    assert (result.outcome, result.reason, result.status, result.attempts) == (
        "not_attempted",
        "stopped",
        503,
        1,
    )
    assert result.detail == "HTTP 503: Service Unavailable"
    assert received_so_far(courier) == 1
    assert (stats.retries, stats.failed) == (1, 0)


def test_requests_hanging_on_a_slow_server_are_cut_off_once_the_drain_time_is_up(
    courier: FakeCourier,
) -> None:
    """After a stop, requests in flight get ``drain_timeout`` (0.1 s here) to finish; those the server
    holds longer are cut off and end as not attempted."""
    courier.fault("delay", times=10**6, seconds=HANGS)
    options = dataclasses.replace(LONG_OPTIONS, concurrency=2)
    _, results, _ = deliver_until_stopped(
        courier, identifies(2), options, stop_when=lambda: received_so_far(courier) == 2
    )
    ends = sorted((r.event.user_id, r.outcome, r.reason, r.attempts, r.detail) for r in results)
    assert ends == [(user, "not_attempted", "stopped", 1, "cut off by the stop") for user in ("u0", "u1")]
    assert received_so_far(courier) == 2


def test_a_request_cut_off_in_flight_stays_uncertain_in_the_ledger(
    courier: FakeCourier, tmp_path: Path
) -> None:
    """Cut off while the server holds it, a request may have been acted on: the ledger must keep it as
    uncertain (sent again only under the same key, held back once that may have expired)."""
    courier.fault("delay", times=10**6, seconds=HANGS)
    ledger = Ledger(tmp_path / "l.sqlite3")
    try:
        ledger.start_run(api_url=courier.url, inputs=["events"], shard=None)
        _, results, _ = deliver_until_stopped(
            courier,
            identifies(1),
            LONG_OPTIONS,
            stop_when=lambda: received_so_far(courier) == 1,
            ledger=ledger,
        )
    finally:
        ledger.close()
    [result] = results
    assert (result.detail, result.key_state) == ("cut off by the stop", "unknown")
    opened = Ledger(tmp_path / "l.sqlite3", create=False)
    try:
        unsettled = list(opened.unsettled())
    finally:
        opened.close()
    assert [(row["idempotency_key"], row["state"]) for row in unsettled] == [
        (courier.received[0].key, "uncertain")
    ]


def test_at_a_stop_every_event_the_reader_handed_over_ends_once_as_not_attempted(
    courier: FakeCourier,
) -> None:
    """The reader runs ahead of the requests (here the server holds the first one for good). Stopped
    once the whole input was read, what was read ahead and not sent ends as not attempted: every
    event read is counted, once."""
    courier.fault("delay", times=10**6, seconds=HANGS)
    # A whole number of the reader's batches: when the input runs out, every event is handed over.
    count = 4 * READ_BATCH
    read = threading.Event()

    def records() -> Iterator[Record]:
        yield from identifies(count)
        read.set()

    options = dataclasses.replace(LONG_OPTIONS, concurrency=1)
    ended, results, stats = deliver_until_stopped(
        courier, records(), options, stop_when=lambda: read.is_set() and received_so_far(courier) == 1
    )
    assert sorted(delivered.event.origin for delivered in ended) == sorted(
        f"events:{n + 1}" for n in range(count)
    )
    assert Counter(delivered.outcome for delivered in ended) == {"not_attempted": count}
    assert Counter((r.outcome, r.reason) for r in results) == {("not_attempted", "stopped"): count}
    assert stats.read == count
    assert received_so_far(courier) == 1


def test_the_failure_file_or_the_report_may_be_stdout_but_only_one_thing_is(courier: FakeCourier) -> None:
    courier.rejected_recipients.add("bad-user")
    events = [checkout(1, "u1"), checkout(2, "bad-user"), identify(3, "u3")]
    write_events(events)
    failed = send(courier, "events.jsonl", "--failed", "-")
    assert failed.exit_code == 1
    assert failed.stdout.splitlines() == Path("events.jsonl").read_text().splitlines()[1:2]
    assert "stdout: 1 event that did not go out\n" in failed.stderr  # no replay command for stdout
    assert not Path("-").exists()
    dry = send(courier, "events.jsonl", "--dry-run", "--report", "-")
    assert dry.exit_code == 0
    report = json.loads(dry.stdout)  # the report alone: the dry run's requests make way for it
    # What is left after the send: the refused event; the two accepted are already sent.
    assert (report["mode"], report["read"], report["totals"]) == ("dry-run", 3, {"planned": 1, "skipped": 2})
    assert "stdout: the report of this run\n" in dry.stderr
    for args, names in (
        (["--failed", "-", "--report", "-"], "--failed and --report"),
        (["--output", "jsonl", "--failed", "-"], "--output and --failed"),
    ):
        both = send(courier, "events.jsonl", "--dry-run", *args)
        assert both.exit_code == 2
        assert both.stderr == f"error: {names} both write to stdout: give all but one a file\n"


def test_on_a_terminal_a_send_shows_a_bar_with_the_share_read_the_rates_and_an_eta(
    courier: FakeCourier,
) -> None:
    """The send runs with its stderr on a pseudo-terminal, as in a person's shell; what the terminal
    received, without its control codes, holds the progress bar's percent, the rates and the ETA."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    courier.fault("delay", times=10**6, seconds=0.002)
    write_events([identify(n, f"u{n}") for n in range(3000)])
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 220, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "220"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        segroute_send("events.jsonl", "--api-url", courier.url, "--concurrency", "2", "--no-ledger"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the other end closed: the send is over
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode("utf-8", "replace"))
    lines = [line for line in re.split(r"[\r\n]", text) if "requests done" in line]
    assert lines, text[-2000:]
    assert any(re.search(r"\b\d+%", line) for line in lines), lines[-3:]
    assert any(re.search(r"[\d,]+ events/s · [\d,]+ requests/s", line) for line in lines), lines[-3:]
    assert any(re.search(r"ETA \d+(s|m \d\ds)", line) for line in lines), lines[-3:]


def test_a_piped_send_prints_its_results_as_json_lines_as_a_piped_dry_run_prints_its_requests(
    courier: FakeCourier,
) -> None:
    write_events([identify(1, "u1"), checkout(2, "u2")])
    sent = send(courier, "events.jsonl")  # CliRunner's stdout is a pipe, not a terminal
    assert sent.exit_code == 0
    records = [json.loads(line) for line in sent.stdout.splitlines()]
    assert len(records) == 3 and {record["outcome"] for record in records} == {"sent"}
    quiet = send(courier, "events.jsonl", "--report", "-")  # stdout taken by the report
    assert json.loads(quiet.stdout)["mode"] == "send"  # the report alone: no result lines beside it
