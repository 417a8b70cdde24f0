"""JSON in and out, with one policy for every input shape.

msgspec reads: it is the fastest reader that keeps integers of any size exact (orjson reads those
past 64 bits as floats). What msgspec refuses, orjson reads again, to say why in plainer words, or
to take the little msgspec refuses and orjson does not (nesting past Python's recursion limit); text
orjson takes that may hold a big integer is read once more with the standard library.

orjson writes. It cannot write integers past 64 bits, and writes at most 255 levels of nesting, so
such values are written by the standard library.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import orjson

_MAYBE_BIG_INT = re.compile(r"\d{20}|-\d{19}")
_MAYBE_BIG_INT_BYTES = re.compile(rb"\d{20}|-\d{19}")
# A big integer needs 19 digits in a row. Mapping every digit to "0" and looking for 19 zeros is
# 20 times faster than the regex, which then runs only on the rare text that passes.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19

JSONDecodeError = orjson.JSONDecodeError
_decode = msgspec.json.Decoder().decode


def loads(text: bytes | str) -> Any:
    """Parse JSON text; a ValueError (`JSONDecodeError` for anything orjson refuses) when it can't."""
    try:
        return _decode(text)
    except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError; so are encoding errors
        pass
    value = orjson.loads(text)
    try:
        if isinstance(text, bytes):
            if _NINETEEN_DIGITS in text.translate(_DIGITS_TO_ZERO) and _MAYBE_BIG_INT_BYTES.search(text):
                return json.loads(text.decode("utf-8"))
        elif _MAYBE_BIG_INT.search(text):
            return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read its big integers exactly") from None
    return value


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
