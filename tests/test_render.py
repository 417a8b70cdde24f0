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
