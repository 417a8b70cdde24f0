"""The retry policy, in one place: what an attempt's answer (or its failure) calls for.

`classify` reads an HTTP status; `answered` and `unanswered` make an `Attempt` of an answer or of
the exception that came instead; `decide` says what the sender does next. `Backoff` and
`retry_after_seconds` say how long it waits first. Nothing here waits or sends: `delivery.Sender`
does, and tells the run's health watches (`health`, `throttle`) what happened.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from typing import Any, Literal, final

import aiohttp
import msgspec
import orjson

from segroute.models import KeyState

__all__ = [
    "AUTH_STATUSES",
    "Attempt",
    "Backoff",
    "Decision",
    "Verdict",
    "answered",
    "classify",
    "decide",
    "retry_after_seconds",
    "unanswered",
]

AUTH_STATUSES = frozenset({401, 403})


Verdict = Literal["accepted", "refused", "unauthorized", "throttled", "retry"]


def classify(status: int | None) -> Verdict:
    """What an attempt's answer calls for (None: no answer came); the retry policy in one place.

    2xx, and 409 (Courier has seen the key or the messageId), are acceptances; 401 and 403 mean the
    key is refused and so will every request be; a 429 asks to slow down; no answer, 408 and 5xx may
    go better on another attempt; any other status (4xx, and 3xx: redirects are not followed)
    refuses this request for good.
    """
    if status is None or status == 408 or status >= 500:
        return "retry"
    if 200 <= status < 300 or status == 409:
        return "accepted"
    if status == 429:
        return "throttled"
    return "unauthorized" if status in AUTH_STATUSES else "refused"


@final
class Attempt(msgspec.Struct, frozen=True):
    """How one attempt ended: Courier's answer, or why none came."""

    status: int | None
    """The HTTP status; None when no answer came."""
    verdict: Verdict
    """`classify`'s."""
    detail: str = ""
    """Courier's message, or what went wrong on the way."""
    reason: str = ""
    """``http_NNN``, ``network`` or ``timeout``."""
    retry_after: float | None = None
    reached: Literal["no", "maybe", "yes"] = "yes"
    """Whether the request reached Courier: ``no`` when the connection could not even be made."""
    body: bytes = b""

    def key_state(self, before: KeyState) -> KeyState:
        """What Courier holds under the key after this attempt, given what it held before.

        An acceptance settles it. A 500 is Courier's own failure, which it stores for the key. A
        refusal, a 429, a 503, a 408 or no connection at all say Courier did not act on this attempt,
        and a refusal that it did not act on an earlier one either (it would have answered from its
        store). Anything else (a timeout, a dropped connection, a gateway's 502 or 504) leaves it
        unknown whether Courier acted.
        """
        verdict, status = self.verdict, self.status
        if verdict == "accepted":
            return "accepted"  # after a 500 too: that one came from something in front of Courier
        if before in ("accepted", "stored_failure"):
            return before
        if status == 500:
            return "stored_failure"
        if verdict in ("refused", "unauthorized"):
            return "unused"
        if self.reached == "no" or status in (408, 429, 503):
            return before
        return "unknown"


def answered(status: int, body: bytes, headers: Any) -> Attempt:
    """The attempt an HTTP answer ends."""
    verdict = classify(status)
    if verdict == "accepted":
        return Attempt(status, verdict, body=body)
    return Attempt(
        status, verdict, _error_message(status, body), f"http_{status}", retry_after_seconds(headers)
    )


def unanswered(exc: aiohttp.ClientError | TimeoutError, timeout: aiohttp.ClientTimeout) -> Attempt:
    """The attempt an exception ends, with no answer: whether it may have reached Courier, and what
    went wrong."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        detail = f"could not connect within {timeout.connect or timeout.total:g}s"
        return Attempt(None, "retry", detail, "timeout", reached="no")
    if isinstance(exc, TimeoutError):
        return Attempt(None, "retry", f"no answer within {timeout.total:g}s", "timeout", reached="maybe")
    reached: Literal["no", "maybe"] = "no" if isinstance(exc, aiohttp.ClientConnectorError) else "maybe"
    return Attempt(None, "retry", _describe(exc), "network", reached=reached)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_message(status: int, body: bytes) -> str:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("message"), str):
        return f"HTTP {status}: {answer['message']}"
    return f"HTTP {status}"


def retry_after_seconds(headers: Any, *, now: float | None = None) -> float | None:
    """The wait a response asks for: ``Retry-After-Ms``, or ``Retry-After`` in seconds or as an HTTP date."""
    millis = headers.get("Retry-After-Ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of min(max, initial * 2^n)."""

    def __init__(self, initial: float, maximum: float, rng: Callable[[], float] = random.random) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (from 0)."""
        ceiling: float = min(self._maximum, self._initial * 2.0**retry)
        return ceiling * (0.5 + self._rng() / 2)


Decision = Literal["accept", "fail", "stop", "wait", "retry"]


def decide(attempt: Attempt, *, retries: int, max_retries: int, api_down: bool) -> Decision:
    """What to do after an attempt that ended so, the request having been retried ``retries`` times.

    - ``accept``: Courier accepted it: done.
    - ``stop``: Courier refused the API key: every other request will be refused too.
    - ``fail``: Courier refused this request, or it is out of retries.
    - ``wait``: Courier asked to slow down (429): the throttle holds the next attempt, and it uses
      up no retry (only the request's deadline bounds it).
    - ``retry``: no answer, a 408 or a 5xx: try again after a backoff. While the whole API is down
      (`health.ApiHealth`), failures are waited out and use up no retry either.
    """
    match attempt.verdict:
        case "accepted":
            return "accept"
        case "unauthorized":
            return "stop"
        case "refused":
            return "fail"
        case "throttled":
            return "wait"
        case "retry":
            return "retry" if api_down or retries < max_retries else "fail"
