"""What a run counts: one outcome per record, and what became of the requests per target."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from segroute.errors import ExitCode
from segroute.models import (
    Delivered,
    Event,
    Note,
    Planned,
    Request,
    RequestResult,
    Skipped,
    Target,
)
from segroute.summary import Summary
from tests.test_pipeline import lines, run, track


def test_summary_counts_add_up_and_set_the_exit_code() -> None:
    summary = Summary()
    for outcome in run(lines(track("m1"), track("m1"), b"nope", track("m2", name="Other"))):
        assert not isinstance(outcome, Note)
        summary.add(outcome)
    assert summary.read == 4
    assert dict(summary.outcomes) == {
        ("planned", ""): 1,
        ("skipped", "duplicate"): 1,
        ("skipped", "unlinked"): 1,
        ("rejected", "invalid_json"): 1,
    }
    assert dict(summary.targets) == {("automation order-confirmation", "planned"): 1}
    assert summary.exit_code is ExitCode.FAILED
    clean = Summary()
    clean.add(Skipped("x:1", "unlinked", "m"))
    assert clean.exit_code is ExitCode.OK


def test_summary_counts_what_a_send_delivered() -> None:
    automation, profile = Target("automation", "order-confirmation"), Target("profile")
    event = Event("in.jsonl:1", {"type": "identify"}, "identify", "m1", "u1", None)

    def request(target: Target, key: str) -> Request:
        return Request("POST", "https://x/p", "/p", b"{}", key, target)

    summary = Summary()
    first, second, earlier = request(automation, "k1"), request(profile, "k2"), request(profile, "k0")
    summary.add(
        Delivered(
            event,
            (
                RequestResult(first, event, "sent", "", 202, attempts=3),
                RequestResult(second, event, "failed", "http_500", 500, attempts=2),
            ),
            sent_before=(earlier,),
        )
    )
    summary.add(Delivered(event, (RequestResult(first, event, "sent", "duplicate", 409, attempts=1),)))
    summary.add(Delivered(event, (RequestResult(second, event, "not_attempted", "stopped"),)))
    summary.add(Skipped("in.jsonl:4", "already_sent", "m4", event, (earlier,)))
    assert summary.outcomes == {
        ("failed", "http_500"): 1,
        ("sent", "duplicate"): 1,
        ("not_attempted", "stopped"): 1,
        ("skipped", "already_sent"): 1,
    }
    assert summary.targets == {
        ("automation order-confirmation", "sent"): 2,
        ("profile merge", "failed"): 1,
        ("profile merge", "not_attempted"): 1,
        ("profile merge", "already_sent"): 2,
    }
    assert summary.statuses == {202: 1, 500: 1, 409: 1}
    assert summary.retries == 3
    assert summary.read == 4 and summary.exit_code is ExitCode.FAILED


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(track, st.sampled_from(["m1", "m2", "m3", "m4"]), st.sampled_from(["u1", None])),
            st.just({"type": "page", "userId": "u"}),
            st.just(b"not json"),
            st.just(b""),
            st.just({"type": "bogus"}),
        ),
        max_size=30,
    ),
    st.sets(st.integers(0, 30)),
)
def test_outcomes_add_up_to_what_was_read(events: list[Any], read_after: set[int]) -> None:
    data = lines(*events)
    outcomes = [o for o in run(data) if not isinstance(o, Note)]
    non_blank = [e for e in events if e != b""]
    assert len(outcomes) == len(non_blank)
    summary = Summary()
    expected: Counter[tuple[str, str]] = Counter()
    planned: Counter[tuple[str, str]] = Counter()
    for n, outcome in enumerate(outcomes):
        summary.add(outcome)
        if isinstance(outcome, Planned):
            expected["planned", ""] += 1
            planned.update((request.target.label, "planned") for request in outcome.requests)
        else:
            expected["skipped" if isinstance(outcome, Skipped) else "rejected", outcome.reason] += 1
        if n in read_after:  # reading in the middle of a run changes nothing that is counted after
            assert summary.outcomes == expected and summary.targets == planned
    assert summary.outcomes == expected and summary.targets == planned
    assert summary.read == len(non_blank)
    assert summary.count("planned") + summary.count("skipped") + summary.count("rejected") == summary.read
