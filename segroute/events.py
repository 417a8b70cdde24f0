"""Segment events: the few checks routing needs, done by hand on the parsed value.

The event itself stays the dict that was read, so the request's ``data`` is every field as it came;
an event that was a line of its own keeps that line's text too, which requests carry as it is.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from segroute._json import dumps
from segroute.models import Event, Record, Rejected

__all__ = [
    "DERIVED_ID_PREFIX",
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "UNSAFE_IDS",
    "derive_message_id",
    "json_kind",
    "parse_event",
]

EVENT_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})
MAX_EVENT_BYTES = 32 * 1024
"""Segment's limit for one message."""
_MAYBE_TOO_LARGE = MAX_EVENT_BYTES // 4
"""Characters of JSON text past which a value may be over MAX_EVENT_BYTES (UTF-8: up to 4 bytes each)."""
DERIVED_ID_PREFIX = "sr-"
UNSAFE_IDS = (".", "..")
"""Ids refused: in a request path, servers and proxies resolve them as a step along the path (the
official Courier SDK refuses them too)."""


def parse_event(record: Record) -> Event | Rejected:
    """Check a record against the Segment spec; a `Rejected` record names the first problem."""
    value = record.value
    if type(value) is not dict:  # what JSON reads is a dict exactly, or not an object at all
        return Rejected(record.origin, "not_object", f"not a JSON object but {json_kind(value)}", value)
    # A text of n characters holds at most 4n bytes of UTF-8: measure exactly only when it could matter.
    if record.size > _MAYBE_TOO_LARGE:
        too_large = _too_large(record.origin, value)
        if too_large is not None:
            return too_large
    kind = value.get("type")
    if type(kind) is not str or kind not in EVENT_TYPES:
        return _bad_type(record.origin, kind, value)
    if kind == "track":
        name = value.get("event")
        if type(name) is not str or not name:
            return Rejected(record.origin, "missing_event", "track event without an 'event' name", value)
    else:
        name = None
        if kind == "identify" and not isinstance(value.get("traits", {}), dict | None):
            return Rejected(record.origin, "invalid_traits", "identify 'traits' is not a JSON object", value)
    # The usual event has string ids: checked first, the rest only when they are not.
    user_id = value.get("userId")
    if type(user_id) is not str or not user_id:
        user_id = _identifier(user_id)
        if user_id is False:
            return Rejected(
                record.origin, "invalid_user_id", "'userId' is neither a string nor a number", value
            )
        if user_id is None and _identifier(value.get("anonymousId")) in (None, False):
            return Rejected(record.origin, "missing_user", "neither 'userId' nor 'anonymousId'", value)
    if user_id in UNSAFE_IDS:
        detail = f"userId {user_id!r} would name another URL path"
        return Rejected(record.origin, "unsafe_id", detail, value)
    message_id = value.get("messageId")
    if type(message_id) is not str or not message_id:
        try:
            message_id = _identifier(message_id) or derive_message_id(value)
        except ValueError as exc:
            return Rejected(record.origin, "too_deep", str(exc), value)
    return Event(record.origin, value, kind, message_id, user_id, name, record.text)


def _too_large(origin: str, value: dict[str, Any]) -> Rejected | None:
    try:
        size = len(dumps(value))
    except ValueError as exc:
        return Rejected(origin, "too_deep", str(exc), value)
    if size > MAX_EVENT_BYTES:
        detail = f"{size} bytes as compact JSON, over Segment's {MAX_EVENT_BYTES}-byte limit"
        return Rejected(origin, "too_large", detail, value)
    return None


def _bad_type(origin: str, kind: Any, value: dict[str, Any]) -> Rejected:
    if kind is None:
        return Rejected(origin, "missing_type", "no 'type'", value)
    if not isinstance(kind, str):
        return Rejected(origin, "unknown_type", f"'type' is not a string but {json_kind(kind)}", value)
    return Rejected(origin, "unknown_type", f"unknown type {kind!r}", value)


def _identifier(value: Any) -> str | None | Literal[False]:
    """A Segment id as a string (the clients stringify numbers); None when absent, False when invalid."""
    if isinstance(value, str):
        return value or None
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return False


def derive_message_id(event: dict[str, Any]) -> str:
    """A stable id for an event that has no ``messageId``: a hash of its canonical JSON."""
    canonical = dumps(event, sort_keys=True)
    return DERIVED_ID_PREFIX + hashlib.sha256(canonical).hexdigest()[:32]


def json_kind(value: Any) -> str:
    """A JSON value's kind in words: ``an object``, ``null``, ``a number`` ..."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
