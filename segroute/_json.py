"""JSON in and out, with one policy for every input shape.

`loads`: msgspec, which keeps integers of any size exact. If it refuses the text, orjson reads it
again to say why in plainer words, or to take what msgspec alone refuses (nesting past Python's
recursion limit); the standard library then re-reads text that may hold an integer past 64 bits,
which orjson would make a float. An integer longer than Python converts (4,300 digits unless
configured) is refused with `IntegerTooLongError`.

`dumps`: orjson; the standard library for what orjson cannot write (integers past 64 bits, nesting
past 255 levels).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import msgspec
import orjson

__all__ = [
    "IntegerTooLongError",
    "JSONDecodeError",
    "dumps",
    "loads",
]

_MAYBE_BIG_INT = re.compile(r"\d{20}|-\d{19}")
_MAYBE_BIG_INT_BYTES = re.compile(rb"\d{20}|-\d{19}")

JSONDecodeError = orjson.JSONDecodeError
_decode = msgspec.json.Decoder().decode


class IntegerTooLongError(ValueError):
    """JSON text that holds an integer with more digits than Python converts (its int-to-str limit)."""


def loads(text: bytes | str) -> Any:
    """Parse JSON text; a ValueError (`JSONDecodeError` for anything orjson refuses) when it can't,
    `IntegerTooLongError` when it is JSON but holds an integer too long to read."""
    try:
        return _decode(text)
    except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError; so are encoding errors
        pass
    try:
        value = orjson.loads(text)
    except JSONDecodeError:
        _refuse_long_integers(text)  # orjson reads such an integer as infinity, and says that
        raise
    try:
        if isinstance(text, bytes):
            if _MAYBE_BIG_INT_BYTES.search(text):
                return json.loads(text.decode("utf-8"))
        elif _MAYBE_BIG_INT.search(text):
            return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read its big integers exactly") from None
    return value


def _refuse_long_integers(text: bytes | str) -> None:
    """Raise `IntegerTooLongError` when the text is JSON that holds an integer longer than Python
    converts; the standard library would raise a ValueError that no reader expects."""
    limit = sys.get_int_max_str_digits()
    if not limit:
        return  # no limit: every integer converts
    run = f"(?<![0-9])[0-9]{{{limit + 1}}}"  # tried only where a run of digits starts: linear
    if (re.search(run.encode(), text) if isinstance(text, bytes) else re.search(run, text)) is None:
        return
    longest = 0

    def measure(digits: str) -> int:
        nonlocal longest
        longest = max(longest, len(digits.lstrip("-")))
        return 0

    try:
        json.loads(text, parse_int=measure)
    except (ValueError, RecursionError):
        return  # not JSON for another reason, which is what to say
    if longest > limit:
        raise IntegerTooLongError(
            f"holds an integer of {longest:,} digits; segroute reads integers of up to {limit:,} digits"
        )


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON bytes for a parsed value: key order kept, or sorted for a canonical form.

    ValueError when the value is nested too deeply to write.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys).encode()
    except RecursionError:
        raise ValueError("nested too deeply to write as JSON") from None
