"""Event + target -> the exact request Courier's Segment integration would make. Pure."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from urllib.parse import quote

from segroute._json import dumps
from segroute.events import Event
from segroute.routing import Target

IDEMPOTENCY_KEY_PREFIX = "sr1-"
CONTENT_TYPE = "application/json"


@dataclass(slots=True)  # not frozen: made per event, and frozen costs 4x
class Request:
    """One planned HTTP request, its body serialized once."""

    method: str
    url: str
    path: str
    body: bytes
    idempotency_key: str
    target: Target


def idempotency_key(message_id: str, method: str, path: str) -> str:
    """``sr1-`` + the first 32 hex digits of SHA-256 over ``"<messageId>\\n<METHOD> <path>"``.

    The same on every run and every machine for the same event and target, whatever the base URL.
    """
    digest = hashlib.sha256(f"{message_id}\n{method} {path}".encode()).hexdigest()
    return IDEMPOTENCY_KEY_PREFIX + digest[:32]


@functools.lru_cache(maxsize=65536)
def path_segment(value: str) -> str:
    """One percent-encoded path segment: '/', spaces and unicode encoded, and '.' or '..' too, which
    servers and proxies would otherwise resolve as a step up the path."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


def target_path(event: Event, target: Target) -> str:
    """The API path for a target, its variable segment percent-encoded."""
    if target.kind == "automation":
        return _invoke(target)[0]
    return f"/profiles/{path_segment(event.user_id or '')}"


@functools.lru_cache(maxsize=4096)
def _invoke(target: Target) -> tuple[str, bytes]:
    """An automation target's path and the start of its body: the same for every event it gets."""
    return f"/automations/{path_segment(target.automation or '')}/invoke", b'{"brand":' + dumps(target.brand)


def build_requests(event: Event, targets: tuple[Target, ...], base_url: str) -> tuple[Request, ...]:
    """The requests for a routed event; the event is serialized once however many targets it has."""
    requests = []
    data: bytes | None = None
    for target in targets:
        if target.kind == "automation":
            path, head = _invoke(target)
            if data is None:
                data = b"".join((b',"data":', dumps(event.data), b',"profile":null,"recipient":'))
                data += dumps(event.user_id) + b"}"
            body = head + data
        else:
            path = target_path(event, target)
            body = b'{"profile":' + dumps(event.data.get("traits")) + b"}"
        key = idempotency_key(event.message_id, "POST", path)
        requests.append(Request("POST", base_url + path, path, body, key, target))
    return tuple(requests)
