"""The retry policy: what each answer calls for, how long to wait, what Courier holds under the key."""

from __future__ import annotations

import email.utils

import aiohttp

from segroute.retry import Attempt, Backoff, answered, classify, decide, retry_after_seconds, unanswered


def test_retry_after_forms() -> None:
    now = 1_800_000_000.0
    http_date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": "7"}, now=now) == 7.0
    assert retry_after_seconds({"Retry-After": http_date}, now=now) == 30.0
    assert retry_after_seconds({"Retry-After-Ms": "250", "Retry-After": "9"}, now=now) == 0.25
    assert retry_after_seconds({"Retry-After": email.utils.formatdate(now - 5, usegmt=True)}, now=now) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}, now=now) is None
    assert retry_after_seconds({}, now=now) is None


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    low, high = Backoff(0.5, 8.0, rng=lambda: 0.0), Backoff(0.5, 8.0, rng=lambda: 0.999999)
    assert [low.delay(n) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert [round(high.delay(n), 3) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_what_courier_holds_under_a_key_after_each_kind_of_attempt() -> None:
    """Only a 500 means Courier stored a failure (a new key is safe); a dropped answer or a gateway's
    502/504 leaves it unknown (only the same key is safe); a refusal or no connection means nothing."""
    from segroute.retry import Attempt, classify

    def answer(status: int) -> Attempt:
        return Attempt(status, classify(status))

    no_connection = Attempt(None, "retry", reached="no")
    no_answer = Attempt(None, "retry", reached="maybe")
    assert answer(200).key_state("unused") == "accepted"
    assert answer(500).key_state("unused") == "stored_failure"
    assert answer(500).key_state("unknown") == "stored_failure"  # its stored answer is the 500
    for status in (502, 504):
        assert answer(status).key_state("unused") == "unknown"
    assert no_answer.key_state("unused") == "unknown"
    for before in ("unused", "unknown"):
        # No connection, a 429, a 503, a 408: this attempt did not reach Courier's application.
        for attempt in (no_connection, answer(429), answer(503), answer(408)):
            assert attempt.key_state(before) == before
    # A refusal answers for the key: an earlier attempt Courier had acted on would be answered from
    # its store instead.
    assert answer(400).key_state("unknown") == "unused"
    assert answer(401).key_state("unknown") == "unused"
    # Once settled, later attempts change nothing, but an acceptance: after a 500 it means that 500
    # came from something in front of Courier, which stored nothing.
    assert answer(502).key_state("stored_failure") == "stored_failure"
    assert answer(200).key_state("stored_failure") == "accepted"


def test_the_retry_policy_in_one_table() -> None:
    assert {status: classify(status) for status in (None, 200, 202, 302, 400, 401, 403, 404, 408, 409)} == {
        None: "retry",
        200: "accepted",
        202: "accepted",
        302: "refused",
        400: "refused",
        401: "unauthorized",
        403: "unauthorized",
        404: "refused",
        408: "retry",
        409: "accepted",
    }
    assert [classify(status) for status in (429, 500, 502, 503, 504)] == ["throttled"] + ["retry"] * 4
    # The edges of the ranges: 2xx accepted, 3xx (redirects are not followed) and other 4xx refused.
    assert [classify(status) for status in (199, 299, 300, 499, 599)] == [
        *("refused", "accepted", "refused", "refused", "retry"),
    ]


def test_an_answer_becomes_an_attempt_with_courier_s_message_or_the_bare_status() -> None:
    accepted = answered(202, b'{"requestId": "r1"}', {})
    assert (accepted.verdict, accepted.reason, accepted.detail, accepted.body) == (
        *("accepted", "", ""),
        b'{"requestId": "r1"}',
    )
    refused = answered(400, b'{"message": "bad recipient"}', {})
    assert (refused.verdict, refused.reason, refused.detail) == (
        "refused",
        "http_400",
        "HTTP 400: bad recipient",
    )
    page = answered(502, b"<html><body>Bad Gateway</body></html>", {"Retry-After": "3"})
    assert (page.verdict, page.reason, page.detail, page.retry_after) == (
        "retry",
        "http_502",
        "HTTP 502",
        3.0,
    )
    assert answered(500, b'["message"]', {}).detail == "HTTP 500"  # JSON, but not Courier's shape
    assert answered(500, b'{"message": 7}', {}).detail == "HTTP 500"


def test_no_answer_says_whether_the_attempt_may_have_reached_courier() -> None:
    timeout = aiohttp.ClientTimeout(total=30.0, connect=10.0)
    connect = unanswered(aiohttp.ConnectionTimeoutError(), timeout)
    assert (connect.reason, connect.detail, connect.reached) == (
        "timeout",
        "could not connect within 10s",
        "no",
    )
    no_connect = aiohttp.ClientTimeout(total=5.0)
    assert unanswered(aiohttp.ConnectionTimeoutError(), no_connect).detail == "could not connect within 5s"
    slow = unanswered(TimeoutError(), timeout)
    assert (slow.reason, slow.detail, slow.reached) == ("timeout", "no answer within 30s", "maybe")
    dropped = unanswered(aiohttp.ServerDisconnectedError(), timeout)
    assert (dropped.reason, dropped.reached) == ("network", "maybe")


def test_decide_accepts_fails_stops_waits_or_retries_as_the_policy_says() -> None:
    def attempt(status: int | None) -> Attempt:
        return Attempt(status, classify(status))

    def decision(status: int | None, retries: int = 0, *, api_down: bool = False) -> str:
        return decide(attempt(status), retries=retries, max_retries=2, api_down=api_down)

    assert [decision(status) for status in (200, 409, 401, 403, 400, 404, 302, 429, 408, 500, None)] == [
        *("accept", "accept", "stop", "stop", "fail", "fail", "fail", "wait"),
        *("retry", "retry", "retry"),
    ]
    # Out of retries: a failure fails, unless the whole API is down (then it is waited out); a 429
    # never uses up retries.
    assert [decision(503, 2), decision(None, 2), decision(429, 2)] == ["fail", "fail", "wait"]
    assert [decision(503, 2, api_down=True), decision(None, 99, api_down=True)] == ["retry", "retry"]
    assert decision(503, 1) == "retry"
