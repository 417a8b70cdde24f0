"""A run against a Courier that misbehaves as a whole: unreachable, down for a while, answering only
5xx, refusing every request to one automation; and the watches behind it (`segroute.health`)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from segroute.cli import app
from segroute.health import ApiHealth, TargetWatch
from tests.courier_server import FakeCourier, Received

# _isolated: the delivery tests' autouse fixture (a tmp folder with their config and API key).
from tests.test_delivery import _isolated, checkout, identify, segroute_send, send, write_events  # noqa: F401

runner = CliRunner()


def resume_command(stderr: str) -> list[str]:
    """The command a stopped run says resumes it, as arguments to segroute."""
    lines = stderr.splitlines()
    index = next(n for n, line in enumerate(lines) if "To resume" in line)
    words = shlex.split(lines[index + 1])
    assert words[:2] == ["segroute", "send"]
    return words[1:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Outage:
    """Courier answers 503 to everything from the moment ``after`` requests were acted on, for
    ``seconds`` (or until `end`)."""

    def __init__(self, courier: FakeCourier, *, after: int, seconds: float = float("inf")) -> None:
        self._courier = courier
        self._after = after
        self._seconds = seconds
        self.began: float | None = None
        self._lock = threading.Lock()
        self._ended = False

    def __call__(self, received: Received) -> bool:
        with self._lock:
            if self._ended:
                return False
            if self.began is None:
                if len(self._courier.acted) < self._after:  # read under the server's own lock
                    return False
                self.began = time.monotonic()
            return time.monotonic() < self.began + self._seconds

    def end(self) -> None:
        with self._lock:
            self._ended = True


# --- the API as a whole -------------------------------------------------------------------------


def test_a_dead_url_stops_the_run_with_exit_75_and_the_command_that_resumes(courier: FakeCourier) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    write_events([identify(n, f"u{n}") for n in range(500)])
    result = runner.invoke(
        app, ["send", "events.jsonl", "--api-url", dead, "--give-up-after", "1", "--failed", "failed.jsonl"]
    )
    assert result.exit_code == 75, result.stderr
    assert "stopped: Courier failed every attempt (for " in result.stderr
    assert "Cannot connect to host" in result.stderr
    assert re.search(r"read \d+ of about [\d,]+ records \(.+ of .+\); the rest was not read\.", result.stderr)
    assert "Try again later. To resume, run the same command again" in result.stderr
    # The command goes where this run went, with the same ledger; the failure file is not offered
    # as the way to resume, since the input was not read to its end.
    command = resume_command(result.stderr)
    assert command[command.index("--api-url") + 1] == dead
    assert command[command.index("--config") + 1] == "segroute.toml"
    assert "--ledger" in command
    assert "replay with" not in result.stderr
    failed = Path("failed.jsonl").read_text().splitlines()
    assert 0 < len(failed) < 500  # what was read and did not go out
    # Nothing reached Courier, so nothing is uncertain: resumed against a live Courier, it all goes.
    command[command.index("--api-url") + 1] = courier.url
    again = runner.invoke(app, command)
    assert again.exit_code == 0, again.stderr
    assert len(courier.acted) == 500 and set(courier.acted.values()) == {1}


def test_only_5xx_stops_with_75_then_the_resume_command_sends_the_rest_once(courier: FakeCourier) -> None:
    outage = Outage(courier, after=40)
    courier.fault("status", times=10**6, status=503, match=outage)
    events = [checkout(n, f"user-{n % 50}") for n in range(300)]
    write_events(events)
    first = send(courier, "events.jsonl", "--give-up-after", "1.5", "--report", "first.json")
    assert first.exit_code == 75, first.stderr
    report = json.loads(Path("first.json").read_text())
    assert report["stopped_by"] == "unavailable"
    assert report["stop_detail"].endswith("the last: HTTP 503: Service Unavailable")
    assert "HTTP 503: Service Unavailable" in first.stderr
    assert "failed" not in report["totals"]  # waited for the API: no request used up its retries
    before = set(courier.acted)
    outage.end()
    again = runner.invoke(app, resume_command(first.stderr))
    assert again.exit_code == 0, again.stderr
    assert len(courier.acted) == 600 and set(courier.acted.values()) == {1}
    assert before < set(courier.acted)


def test_an_outage_shorter_than_the_give_up_time_is_ridden_out(courier: FakeCourier) -> None:
    """Even with one retry a request: while the whole API fails, failures are the API's, not the
    requests', and the run waits for it."""
    outage = Outage(courier, after=30, seconds=2.0)
    courier.fault("status", times=10**6, status=503, match=outage)
    write_events([identify(n, f"u{n}") for n in range(200)])
    result = send(
        courier, "events.jsonl", "--max-retries", "1", "--give-up-after", "20", "--report", "r.json"
    )
    assert result.exit_code == 0, result.stderr
    assert outage.began is not None
    report = json.loads(Path("r.json").read_text())
    assert report["totals"] == {"sent": 200}
    assert report["retries"] >= 2
    assert len(courier.acted) == 200 and set(courier.acted.values()) == {1}


def test_retries_still_run_out_for_a_request_the_api_keeps_failing_while_it_answers_others(
    courier: FakeCourier,
) -> None:
    courier.fault("status", times=10**6, status=502, match=lambda r: r.path == "/profiles/u7")
    write_events([identify(n, f"u{n}") for n in range(20)])
    result = send(courier, "events.jsonl", "--max-retries", "1", "--give-up-after", "20")
    assert result.exit_code == 1
    assert [r.path for r in courier.received].count("/profiles/u7") == 2
    assert "events.jsonl:8: failed (http_502): HTTP 502: Service Unavailable; gave up after 2 attempts" in (
        result.stderr
    )
    assert len(courier.acted) == 19


# --- one target ---------------------------------------------------------------------------------


MISTYPED = """
[[links]]
event = "Checkout Complete"
automation = "order-confirmation"

[[links]]
event = "Checkout Complete"
automation = "welcom-flow"
"""


def test_a_missing_automation_is_given_up_and_the_other_targets_go_on(courier: FakeCourier) -> None:
    Path("segroute.toml").write_text(MISTYPED)
    courier.fault(
        "status",
        times=10**6,
        status=404,
        message="Automation template not found: welcom-flow",
        match=lambda r: r.path == "/automations/welcom-flow/invoke",
    )
    events = [checkout(n, f"user-{n}") for n in range(300)]
    write_events(events)
    result = send(
        courier, "events.jsonl", "--concurrency", "4", "--failed", "failed.jsonl", "--report", "r.json"
    )
    assert result.exit_code == 1
    futile = [r for r in courier.received if r.path == "/automations/welcom-flow/invoke"]
    assert 10 <= len(futile) <= 10 + 4  # ten recipients, and what was in flight when it was given up
    assert sum(1 for r in courier.acted_order if r.path == "/automations/order-confirmation/invoke") == 300
    report = json.loads(Path("r.json").read_text())
    assert report["outcomes"]["failed"] == {"http_404": len(futile)}
    assert report["outcomes"]["skipped"] == {"target_failing": 300 - len(futile)}
    assert report["targets"]["automation welcom-flow"] == {
        "failed": len(futile),
        "skipped": 300 - len(futile),
    }
    stderr = result.stderr.splitlines()
    assert len(stderr) < 60  # one line a failure for the first ten, then the target is given up
    assert (
        "automation welcom-flow: stopped sending to it: HTTP 404: Automation template not found: "
        "welcom-flow to every recipient; its other requests were skipped (target_failing) and their "
        "events are in failed.jsonl. Check the link, then replay them"
    ) in stderr
    assert len(Path("failed.jsonl").read_text().splitlines()) == 300
    # Mended (the template was created): the replay sends what did not go out, and only that.
    courier.faults.clear()
    replay = send(courier, "failed.jsonl")
    assert replay.exit_code == 0, replay.stderr
    assert len(courier.acted) == 600 and set(courier.acted.values()) == {1}


def test_bad_recipients_never_stop_a_target_that_takes_the_others(courier: FakeCourier) -> None:
    bad = {f"bad-{n}" for n in range(15)}
    courier.rejected_recipients |= bad
    events = [identify(n, f"bad-{n}") for n in range(15)] + [identify(n, f"u{n}") for n in range(15, 40)]
    write_events(events)
    result = send(courier, "events.jsonl", "--concurrency", "2", "--report", "r.json")
    assert result.exit_code == 1
    report = json.loads(Path("r.json").read_text())
    assert report["outcomes"] == {"failed": {"http_400": 15}, "sent": {"ok": 25}}
    assert "target_failing" not in result.stderr


def test_repeated_failures_show_twenty_lines_then_a_count(courier: FakeCourier) -> None:
    bad = {f"bad-{n}" for n in range(45)}
    courier.rejected_recipients |= bad
    write_events([identify(n, f"bad-{n}") for n in range(45)])
    result = send(courier, "events.jsonl", "-q")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert sum(1 for line in lines if ": failed (http_400): " in line) == 20
    assert lines[-1] == "... and 25 more failed (http_400) for profile merge"


# --- the watches themselves -----------------------------------------------------------------------


def test_api_health_is_down_only_when_different_recipients_fail_with_no_answer_between() -> None:
    now = [0.0]
    health = ApiHealth(30.0, clock=lambda: now[0])
    health.failed("a", 0.0, "HTTP 503")
    health.failed("a", 1.0, "HTTP 503")
    assert not health.down  # one request's trouble
    health.failed("b", 1.5, "HTTP 503")
    assert health.down
    now[0] = 29.9
    assert not health.gave_up
    now[0] = 30.0
    assert health.gave_up and health.failing_for() == 30.0
    health.answered()
    assert not health.down and not health.gave_up and health.failing_for() == 0.0


def test_target_watch_needs_the_same_refusal_from_different_recipients_and_no_success() -> None:
    watch = TargetWatch(threshold=3)
    assert not watch.refused("automation a", "u1", 404, "HTTP 404: not found")
    assert not watch.refused("automation a", "u1", 404, "HTTP 404: not found")  # the same recipient
    assert not watch.refused("automation a", "u2", 400, "HTTP 400: bad")  # another refusal
    assert not watch.refused("automation a", "u2", 404, "HTTP 404: not found")
    assert watch.refused("automation a", "u3", 404, "HTTP 404: not found")
    assert watch.failing == {"automation a": "HTTP 404: not found"}
    assert not watch.refused("automation a", "u4", 404, "HTTP 404: not found")  # said once
    working = TargetWatch(threshold=3)
    working.accepted("profile merge")
    for user in ("u1", "u2", "u3", "u4"):
        assert not working.refused("profile merge", user, 400, "HTTP 400: bad")
    assert working.failing == {}


# --- stopped from outside, and runs that would do nothing -------------------------------------------


def test_sigterm_while_reading_tells_how_far_it_read_and_the_command_that_resumes(
    courier: FakeCourier, tmp_path: Path
) -> None:
    courier.fault("delay", times=10**6, seconds=0.02)
    write_events([identify(n, f"u{n}") for n in range(1000)])
    command = [
        *segroute_send("events.jsonl", "--api-url", courier.url, "--concurrency", "4"),
        *("--failed", "failed.jsonl"),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ), cwd=tmp_path
    ) as proc:
        while len(courier.acted_keys()) < 20:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert proc.returncode == 143, stderr
    assert re.search(
        r"stopped by SIGTERM: read [\d,]+ of about [\d,]+ records \(.+\); the rest was not read", stderr
    )
    assert "failed.jsonl: " in stderr and "replay with" not in stderr  # the file holds only what was read
    courier.faults.clear()
    again = runner.invoke(app, resume_command(stderr))
    assert again.exit_code == 0, again.stderr
    assert len(courier.acted) == 1000 and set(courier.acted.values()) == {1}


def test_a_real_send_with_no_config_is_refused_and_a_dry_run_notes_it(courier: FakeCourier) -> None:
    Path("segroute.toml").unlink()
    write_events([checkout(1, "u1"), identify(2, "u2")])
    refused = send(courier, "events.jsonl")
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"error: no segroute.toml in {Path.cwd()}: a send without links skips every track event. Name the "
        "config with -c PATH or $SEGROUTE_CONFIG, or create it here with: segroute link EVENT AUTOMATION "
        "(an empty segroute.toml sends identify events only)\n"
    )
    assert courier.received == []
    assert not Path(os.environ["SEGROUTE_LEDGER"]).exists()
    dry = send(courier, "events.jsonl", "--dry-run", "-o", "jsonl")
    assert dry.exit_code == 0
    assert "note: no segroute.toml here, so no links: track events are skipped" in dry.stderr
    Path("segroute.toml").write_text("")  # identify events only, on purpose
    assert send(courier, "events.jsonl").exit_code == 0
    assert [r.path for r in courier.received] == ["/profiles/u2"]


def test_an_empty_folder_reads_nothing_and_fails_unless_that_is_allowed(courier: FakeCourier) -> None:
    Path("half-synced").mkdir()
    empty = send(courier, "half-synced")
    assert empty.exit_code == 1
    assert empty.stderr.splitlines()[-1] == (
        "warning: no records read from half-synced: nothing to send. An empty folder may be an unfinished "
        "copy; pass --allow-empty when an empty input is expected"
    )
    assert send(courier, "half-synced", "--allow-empty").exit_code == 0
