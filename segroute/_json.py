"""JSON in and out, with one policy for every input shape.

orjson does the work. It reads integers past 64 bits as floats and cannot write them, so text that
may hold one is read again with the standard library, which keeps them exact; and it writes at most
255 levels of nesting, so deeper values are written by the standard library too.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_MAYBE_BIG_INT = re.compile(r"\d{20}|-\d{19}")
_MAYBE_BIG_INT_BYTES = re.compile(rb"\d{20}|-\d{19}")
# A big integer needs 19 digits in a row. Mapping every digit to "0" and looking for 19 zeros is
# 20 times faster than the regex, which then runs only on the rare text that passes.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19

JSONDecodeError = orjson.JSONDecodeError


def loads(text: bytes | str) -> Any:
    """Parse JSON text; `JSONDecodeError` (a ValueError) for anything orjson refuses."""
    value = orjson.loads(text)
    if isinstance(text, bytes):
        if _NINETEEN_DIGITS in text.translate(_DIGITS_TO_ZERO) and _MAYBE_BIG_INT_BYTES.search(text):
            return json.loads(text.decode("utf-8"))
    elif _MAYBE_BIG_INT.search(text):
        return json.loads(text)
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
