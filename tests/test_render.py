"""What is printed: the JSONL lines a dry run writes, put together from bytes for speed."""

from __future__ import annotations

import io
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from segroute.events import Event, parse_event
from segroute.render import JsonlWriter
from segroute.routing import PROFILE, Target
from segroute.sources import Record
from segroute.transform import CONTENT_TYPE, Request, build_requests


def request_record(request: Request, event: Event) -> dict[str, object]:
    """What one line must be: the fields as a dict, the body embedded as the bytes to be sent."""
    return {
        "method": request.method,
        "url": request.url,
        "headers": {"Idempotency-Key": request.idempotency_key, "Content-Type": CONTENT_TYPE},
        "body": orjson.Fragment(request.body),
        "origin": event.origin,
        "messageId": event.message_id,
    }


texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)


@given(user=texts, origin=texts, message_id=texts, automation=texts, brand=st.none() | texts)
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
    expected = b"".join(
        orjson.dumps(request_record(r, event), option=orjson.OPT_APPEND_NEWLINE) for r in requests
    )
    assert out.getvalue() == expected
