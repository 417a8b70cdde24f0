"""How Courier is doing as a whole, and each target: when a run waits, and when it stops trying.

Retries are for trouble with one request. When the API itself is down (nothing answers, or only
5xx), every request fails alike: retrying each until its retries run out would turn an outage into
thousands of failures, and a dead URL into days of trying. `ApiHealth` tells the two apart. When one
target refuses every request the same way (a mistyped automation: 404 for everyone), sending it more
only floods; `TargetWatch` notices that, and the rest of the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

__all__ = [
    "DEFAULT_GIVE_UP_AFTER",
    "MAX_KINDS_OF_REFUSAL",
    "REFUSALS_TO_STOP",
    "ApiHealth",
    "TargetWatch",
]

DEFAULT_GIVE_UP_AFTER = 30.0
"""Seconds with failures and no answer after which a run stops (``--give-up-after``)."""
REFUSALS_TO_STOP = 10
"""Recipients refused alike, with no success, after which a target is given up."""
MAX_KINDS_OF_REFUSAL = 100
"""Different refusals tracked per target; past that, new ones are not counted."""


class ApiHealth:
    """Whether Courier answers, from how attempts end.

    An answer is anything that ends a request: an acceptance, or a refusal of it (a 4xx). A failure
    is what a retry may mend: no connection, a timeout, a 5xx, 408 or 429. While failures come and no
    answer, the API is failing; once requests to two different recipients have failed in a row, it is
    *down*: the failures are the API's, not the requests', and do not use up their retries. (One
    recipient's requests failing alone, at the end of a run say, are that recipient's trouble.) Failing for
    ``give_up_after`` seconds, it has *given up*: the run stops, to be resumed later.
    """

    def __init__(
        self, give_up_after: float = DEFAULT_GIVE_UP_AFTER, *, clock: Callable[[], float] = time.monotonic
    ):
        self.give_up_after = give_up_after
        self._clock = clock
        self._failing_since: float | None = None
        """When the first attempt that failed since the last answer started."""
        self._failed: set[Hashable] = set()
        """Recipients whose requests failed since the last answer (two are enough to know)."""
        self.last_failure = ""
        """What the latest failure was, for the message that says why the run stopped."""

    def answered(self) -> None:
        """Courier answered an attempt: it is up."""
        self._failing_since = None
        self._failed.clear()

    def failed(self, recipient: Hashable, started: float, failure: str) -> None:
        """An attempt of a request to ``recipient`` that started at ``started`` failed."""
        if self._failing_since is None:
            self._failing_since = started
        if len(self._failed) < 2:
            self._failed.add(recipient)
        self.last_failure = failure

    @property
    def down(self) -> bool:
        """Whether requests to different recipients keep failing with no answer between them."""
        return len(self._failed) >= 2

    def failing_for(self) -> float:
        """Seconds since the first failure with no answer after it; 0 when Courier answers."""
        if self._failing_since is None:
            return 0.0
        return max(0.0, self._clock() - self._failing_since)

    @property
    def gave_up(self) -> bool:
        """Whether the API has failed long enough that the run should stop."""
        return self.failing_for() >= self.give_up_after


class TargetWatch:
    """Targets that refuse every request the same way.

    A target (an automation, or profile merges) that answered the same non-retryable error (same
    status, same message) to REFUSALS_TO_STOP different recipients, and never accepted a request in
    the run, is *failing*: a missing template, or a body it can never take. One bad recipient among
    good ones never makes it so: a single acceptance clears the target for the run.
    """

    def __init__(self, threshold: int = REFUSALS_TO_STOP) -> None:
        self._threshold = threshold
        self._working: set[str] = set()
        self._refusals: dict[str, dict[tuple[int, str], set[str]]] = {}
        self.failing: dict[str, str] = {}
        """Target label -> the refusal that made it failing."""

    def accepted(self, target: str) -> None:
        """The target accepted a request: it works, whatever it refuses."""
        if target not in self._working:
            self._working.add(target)
            self._refusals.pop(target, None)

    def refused(self, target: str, recipient: str, status: int, message: str) -> bool:
        """The target refused a request to ``recipient``; whether that made it failing, just now."""
        if target in self._working or target in self.failing:
            return False
        kinds = self._refusals.setdefault(target, {})
        recipients = kinds.get((status, message))
        if recipients is None:
            if len(kinds) >= MAX_KINDS_OF_REFUSAL:
                return False
            recipients = kinds[status, message] = set()
        recipients.add(recipient)
        if len(recipients) < self._threshold:
            return False
        self.failing[target] = message
        del self._refusals[target]
        return True
