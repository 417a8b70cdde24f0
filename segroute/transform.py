"""Event + target -> the exact request Courier's Segment integration would make. Pure."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

import msgspec

from segroute._json import dumps
from segroute.models import Event, Mapped, Request, Target

__all__ = [
    "CONTENT_TYPE",
    "IDEMPOTENCY_KEY_PREFIX",
    "INTAKE_PATH",
    "build_requests",
    "idempotency_key",
    "path_segment",
    "rekeyed",
]

IDEMPOTENCY_KEY_PREFIX = "sr1-"
CONTENT_TYPE = "application/json"


def idempotency_key(message_id: str, method: str, path: str, generation: int = 0) -> str:
    """``sr1-`` + the first 32 hex digits of SHA-256 over ``"<messageId>\\n<METHOD> <path>"``, with
    ``"\\n<generation>"`` after it for a generation past 0.

    The same on every run and every machine for the same event and target, whatever the base URL.
    """
    return _key(message_id.encode(), _after_id(method, path, generation))


def _after_id(method: str, path: str, generation: int = 0) -> bytes:
    """What a key hashes after the messageId."""
    suffix = f"\n{generation}" if generation else ""
    return f"\n{method} {path}{suffix}".encode()


def _key(message_id: bytes, after_id: bytes) -> str:
    digest: str = hashlib.sha256(message_id + after_id).hexdigest()
    return IDEMPOTENCY_KEY_PREFIX + digest[:32]


def rekeyed(request: Request, message_id: str, generation: int) -> Request:
    """The request under its key of another generation. Courier keeps a key's first answer, a 500
    too, and gives it back to every repeat: a request it failed that way goes out again under a new
    key, which no earlier run used."""
    if generation == request.generation:
        return request
    key = idempotency_key(message_id, request.method, request.path, generation)
    return msgspec.structs.replace(
        request, idempotency_key=key, generation=generation, first_key=request.ledger_key
    )


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
"""What `quote` never encodes: most user ids are only this, and are their own segment."""


def path_segment(value: str) -> str:
    """One percent-encoded path segment: '/', spaces and unicode encoded, and '.' or '..' too, which
    servers and proxies would otherwise resolve as a step up the path."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    # No cache: one entry per user would grow with the users a replay meets.
    if _UNRESERVED.fullmatch(value):
        return value
    return quote(value, safe="")


INTAKE_PATH = "/inbound/segment"
"""Courier's Segment intake, which Segment's Courier (Actions) destination posts events to."""

_INVOKES: dict[Target, tuple[str, bytes, bytes]] = {}
"""An automation or a journey -> its invoke path, the start of its body, and what its keys hash after
the messageId: the same for every event it gets."""


def _invoke(target: Target) -> tuple[str, bytes, bytes]:
    found = _INVOKES.get(target)
    if found is None:
        path = f"/{target.kind}s/{path_segment(target.template or '')}/invoke"
        # An automation's body starts with the brand; a journey's carries none.
        head = b'{"brand":' + dumps(target.brand) + b"," if target.kind == "automation" else b"{"
        found = _INVOKES[target] = (path, head, _after_id("POST", path))
    return found


def build_requests(event: Event, targets: tuple[Target | Mapped, ...], base_url: str) -> tuple[Request, ...]:
    """The requests for a routed event; the event is serialized at most once however many targets it
    has, and not at all when its text as read is at hand (`Event.text`).

    - an automation: ``{"brand", "data", "profile", "recipient"}``, as Courier's Segment integration
      invokes it: the whole event as ``data``, its userId as ``recipient``;
    - a journey: ``{"data", "user_id"}``, with ``"profile"`` between them when a link maps one;
    - a profile merge: ``{"profile": <traits>}``;
    - Courier's Segment intake: the event itself.

    A `Mapped` target's data, recipient and profile replace those of the event. Keys are
    `idempotency_key`'s, from parts made once per target.
    """
    requests = []
    event_text: bytes | None = None
    message_id = event.message_id.encode()
    for routed in targets:
        target = routed.target if type(routed) is Mapped else routed
        assert type(target) is Target
        if target.kind in ("automation", "journey"):
            path, head, after_id = _invoke(target)
            if event_text is None:
                # The event's text as read, when there is one: it is the event's JSON already, the
                # bytes Segment's own client sent.
                event_text = event.text if event.text is not None else dumps(event.data)
            if type(routed) is Mapped:
                data = event_text if routed.data is None else routed.data
                parts = (data, dumps(routed.recipient), routed.profile)
            else:
                parts = (event_text, dumps(event.user_id), None)
            body = head + _invoke_body(target.kind, *parts)
        elif target.kind == "profile":
            path = f"/profiles/{path_segment(event.user_id or '')}"
            after_id = _after_id("POST", path)
            body = b'{"profile":' + dumps(event.data.get("traits")) + b"}"
        else:
            path, after_id = INTAKE_PATH, _INTAKE_AFTER_ID
            body = event.text if event.text is not None else dumps(event.data)
        requests.append(Request("POST", base_url + path, path, body, _key(message_id, after_id), target))
    return tuple(requests)


_INTAKE_AFTER_ID = _after_id("POST", INTAKE_PATH)


def _invoke_body(kind: str, data: bytes, recipient: bytes, profile: bytes | None) -> bytes:
    """An invoke body after its head: the keys in the order Courier's SDKs write them."""
    if kind == "automation":
        profile = profile or b"null"
        return b"".join((b'"data":', data, b',"profile":', profile, b',"recipient":', recipient, b"}"))
    if profile is None:
        return b"".join((b'"data":', data, b',"user_id":', recipient, b"}"))
    return b"".join((b'"data":', data, b',"profile":', profile, b',"user_id":', recipient, b"}"))
