"""What is printed: the JSONL lines a dry run writes."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from segroute.events import parse_event
from segroute.models import Event, Record, Target
from segroute.render import JsonlWriter
from segroute.routing import PROFILE
from segroute.transform import CONTENT_TYPE, build_requests

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)


@given(
    # "." and ".." are no user ids: parse_event refuses them (unsafe_id).
    user=texts.filter(lambda text: text not in (".", "..")),
    origin=texts,
    message_id=texts,
    automation=texts,
    brand=st.none() | texts,
)
def test_jsonl_lines_are_exactly_the_request_records(
    user: str, origin: str, message_id: str, automation: str, brand: str | None
) -> None:
    value: dict[str, Any] = {
        "type": "identify",
        "userId": user,
        "messageId": message_id,
        "traits": {"name": "Ana María", "n": 1},
    }
    event = parse_event(Record(origin, value, 100))
    assert isinstance(event, Event)
    requests = build_requests(
        event, (Target("automation", automation, brand), PROFILE), "https://api.example"
    )
    out = io.BytesIO()
    writer = JsonlWriter(out)
    writer.write(requests, event)
    writer.flush()
    lines = out.getvalue().splitlines(keepends=True)
    assert len(lines) == len(requests) == 2
    for line, request in zip(lines, requests, strict=True):
        record = json.loads(line)  # the standard library as the independent reader
        assert list(record) == ["method", "url", "headers", "body", "origin", "messageId"]
        assert record == {
            "method": "POST",
            "url": request.url,
            "headers": {"Idempotency-Key": request.idempotency_key, "Content-Type": CONTENT_TYPE},
            "body": json.loads(request.body),
            "origin": origin,
            "messageId": message_id,
        }
        # The body is the bytes to be sent, as they are, and each record is one line.
        assert b',"body":' + request.body + b',"origin":' in line
        assert line.endswith(b"}\n") and line.count(b"\n") == 1


def test_sizes_and_how_much_was_read_read_as_a_person_reads_them() -> None:
    from segroute.render import size
    from segroute.views import how_much_read

    assert [size(n) for n in (0, 999, 8_600, 36_000_000, 46_355_560, 1_234_000_000)] == [
        "0 B",
        "999 B",
        "8.6 KB",
        "36 MB",
        "46 MB",
        "1.2 GB",
    ]
    assert how_much_read(48, 8_600, 36_000_000) == "48 of about 200,900 records (8.6 KB of 36 MB)"
    assert how_much_read(1, 0, None) == "1 record (from stdin)"
    assert how_much_read(7, 700, 700) == "7 records (700 B of 700 B)"


def test_the_progress_line_gives_counts_current_rates_share_read_and_eta() -> None:
    from segroute.render import Rates, duration, progress_line
    from segroute.runner import Progress

    rates = Rates(5.0)
    assert rates.add(100.0, 0, 0, 0) == (0.0, 0.0, 0.0)
    assert rates.add(102.0, 2_000, 1_900, 1_000_000) == (1_000.0, 950.0, 500_000.0)
    # Samples from before the window drop out (the last one before it stays, to measure from): the
    # rate is the last seconds', not the run's.
    rates.add(106.0, 2_000, 1_900, 1_000_000)
    assert rates.add(108.0, 8_000, 7_900, 4_000_000) == (1_000.0, 1_000.0, 500_000.0)
    progress = Progress(
        48_000, 47_900, 3, 12, 30.0, read_bytes=11_000_000, total_bytes=36_000_000, already_sent=1_024
    )
    assert progress_line(progress, (1_200.0, 1_180.4, 500_000.0)) == (
        "read 48,000 events · 47,900 requests done · 1,200 events/s · 1,180 requests/s · 3 failed · "
        "12 retries · 31% of 36 MB read · ETA 50s · skipping already sent: 1,024 events"
    )
    stdin = Progress(5, 5, 0, 0, 1.0)  # no total: no share, no ETA
    assert progress_line(stdin, (5.0, 5.0, 0.0)) == (
        "read 5 events · 5 requests done · 5 events/s · 5 requests/s · 0 failed · 0 retries"
    )
    assert [duration(s) for s in (0.4, 45, 130, 3599, 3780, 90_000)] == [
        "0s",
        "45s",
        "2m 10s",
        "59m 59s",
        "1h 03m",
        "25h 00m",
    ]
