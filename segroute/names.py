"""How the names of inputs are shown: paths and bundle members as they can be printed and written as
JSON. A module of its own so that showing a name loads nothing else (`links` shows them)."""

from __future__ import annotations

import re

__all__ = [
    "ESCAPED_BYTE",
    "display_name",
]

ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
"""A byte that was not UTF-8, as Python's ``surrogateescape`` keeps it in a str."""
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def display_name(name: str) -> str:
    """A path as it can be shown and written as JSON: undecodable bytes and control characters escaped."""
    if ESCAPED_BYTE.search(name):
        name = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], name)
