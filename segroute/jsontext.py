"""JSON text -> records: NDJSON lines, JSON arrays, and documents one after another.

`iter_values` takes a stream of text, its first chunk already read, and tells NDJSON (one value per
line) from pretty-printed JSON by its first two lines. NDJSON is split into lines by `_iter_lines`,
which never holds a line over MAX_LINE_BYTES; a JSON text is read value by value by `ValueReader`,
so a huge array never sits in memory whole. A ``/v1/batch`` body becomes its events (`expand`).
Every value that is not JSON becomes a `Rejected` record naming its line, and reading goes on.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Generator, Iterator
from typing import Any

from segroute import _json
from segroute.models import Item, Note, Record, Rejected
from segroute.names import ESCAPED_BYTE
from segroute.streams import CHUNK_BYTES, Prefixed, Readable

__all__ = ["MAX_DOCUMENT_CHARS", "MAX_LINE_BYTES", "WHITESPACE", "Cursor", "at", "iter_values"]

MAX_LINE_BYTES = 1024 * 1024
"""A longer line is rejected without being held in memory; a /v1/batch body (500 KB) fits."""
MAX_DOCUMENT_CHARS = 64 * 1024 * 1024
"""The largest single multi-line JSON value (a pretty-printed batch body, say) that is read whole."""
WHITESPACE = b" \t\r\n"
_NEWLINE = ord("\n")
_CR = ord("\r")
_JSON_WHITESPACE = " \t\r\n"


def _skip_int(digits: str) -> int:
    return 0


_SCANNER = json.JSONDecoder(parse_int=_skip_int)
"""The standard library's reader, used only to find where a value ends or why it is not JSON: it
leaves integers unconverted, so one too long for Python to convert does not stop it."""


class Cursor:
    """The line a reader has reached, so a read error can name it, and the bytes of text read up to
    it, so a meter can tell how far the reading has come."""

    __slots__ = ("line", "consumed")

    def __init__(self) -> None:
        self.line = 0
        self.consumed = 0


def at(name: str, line: int) -> str:
    """The origin of line ``line`` of input ``name``."""
    return f"{name}:{line}"


def iter_values(head: bytes, stream: Readable, name: str, cursor: Cursor) -> Iterator[Item]:
    """The records of a text whose first chunk, ``head``, was read from ``stream`` already."""
    # Leading blank lines are counted, not kept, however many there are.
    while not head.strip(WHITESPACE):
        cursor.line += head.count(b"\n")
        head = stream.read(CHUNK_BYTES)
        if not head:
            yield Note(name, "empty: holds no events")
            return
    skipped = len(head) - len(head.lstrip(WHITESPACE))
    cursor.line += head.count(b"\n", 0, skipped)
    head = head[skipped:]
    if head.startswith(b"["):
        yield from _ValueReader(head, stream, name, cursor, document=False).items()
        return
    eof = False
    while (document := _is_document(head, eof=eof)) is None:
        chunk = stream.read(CHUNK_BYTES)
        eof = not chunk
        head += chunk
    if document:
        yield from _ValueReader(head, stream, name, cursor, document=True).items()
    else:
        yield from _iter_ndjson(Prefixed(head, stream), name, cursor)


def _is_document(head: bytes, *, eof: bool) -> bool | None:
    """Whether text that starts with something other than '[' is pretty-printed JSON, not NDJSON.

    None while the first two lines are not read whole. A first line that starts an object but does
    not parse is the start of a multi-line document, or a broken NDJSON line; the next line tells:
    in NDJSON it parses on its own. (Should the guess be wrong, the document reader falls back.)
    """
    if len(head) > 2 * MAX_LINE_BYTES:
        return False
    lines = head.split(b"\n")
    if not eof:
        lines.pop()
    content = [line for line in lines if line.strip(WHITESPACE)][:2]
    if not content:
        return None
    if not content[0].startswith(b"{") or _parses(content[0]):
        return False
    if len(content) == 1:
        return True if eof else None
    return not _parses(content[1])


def _parses(line: bytes) -> bool:
    try:
        _json.loads(line)
    except _json.IntegerTooLongError:
        return True  # JSON, refused only for what it holds: a line of its own all the same
    except ValueError:
        return False
    return True


def _iter_lines(stream: Readable, cursor: Cursor) -> Iterator[bytes | None]:
    """Yield each line, with its newline when it has one; ``None`` for a line over MAX_LINE_BYTES,
    which is not kept.

    ``cursor.line`` is the number of the line just yielded.
    """
    pending: list[bytes] = []
    pending_size = 0
    too_long = False
    while chunk := stream.read(CHUNK_BYTES):
        # BytesIO.readlines finds newlines with memchr, bytes.split does not (benchmarks.md, 2nd pass).
        parts = io.BytesIO(chunk).readlines()
        tail = b"" if chunk.endswith(b"\n") else parts.pop()
        if not parts:
            if not too_long:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size > MAX_LINE_BYTES:
                    too_long, pending, pending_size = True, [], 0
            continue
        head = parts[0]
        cursor.line += 1
        cursor.consumed += pending_size + len(head)
        # Each line here still ends in its newline: one byte over MAX_LINE_BYTES.
        if too_long or pending_size + len(head) > MAX_LINE_BYTES + 1:
            yield None
        else:
            yield b"".join(pending) + head if pending else head
        too_long = False
        for line in parts[1:]:
            cursor.line += 1
            cursor.consumed += len(line)
            yield line if len(line) <= MAX_LINE_BYTES + 1 else None
        pending, pending_size = ([tail], len(tail)) if tail else ([], 0)
    if pending or too_long:
        cursor.line += 1
        cursor.consumed += pending_size
        yield None if too_long else b"".join(pending)


def _iter_ndjson(stream: Readable, name: str, cursor: Cursor) -> Iterator[Item]:
    """Newline-delimited JSON: each line is a record, or a /v1/batch body of records."""
    for line in _iter_lines(stream, cursor):
        if line is None:
            yield _too_long_line(at(name, cursor.line))
            continue
        if line.isspace() or not line:
            continue
        try:
            value = _json.loads(line)  # the newline is JSON whitespace
        except ValueError as exc:
            yield _bad_json(at(name, cursor.line), line.removesuffix(b"\n"), exc)
            continue
        size = len(line) - 1 if line[-1] == _NEWLINE else len(line)
        stripped = line.strip(WHITESPACE)
        # A line holding a CR is not kept as text: some readers take the CR for a line break.
        # (Searched for as an int, which is a memchr: docs/benchmarks.md, fifth pass.)
        text = None if _CR in stripped else stripped
        if type(value) is dict and "batch" in value:
            yield from _expand(value, f"{name}:{cursor.line}", size, text)
        else:
            yield Record(f"{name}:{cursor.line}", value, size, text)


def _bad_json(origin: str, text: bytes | str, exc: ValueError) -> Rejected:
    """Why a text is not JSON, as plainly as the standard library can say it."""
    if isinstance(exc, _json.IntegerTooLongError):
        return Rejected(origin, "too_large", str(exc))
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as bad:
            return Rejected(origin, "invalid_utf8", f"not valid UTF-8 (byte {bad.start + 1})")
    if ESCAPED_BYTE.search(text):
        return Rejected(origin, "invalid_utf8", "not valid UTF-8")
    try:
        _SCANNER.decode(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}" if error.lineno > 1 else f"column {error.colno}"
        return Rejected(origin, "invalid_json", f"not valid JSON: {error.msg} ({where})")
    except (ValueError, RecursionError):
        pass
    # The standard library accepts a few things JSON does not: NaN, Infinity, huge exponents, lone
    # surrogate escapes. orjson names which; its words for NaN are vague, so say it plainly.
    reason = str(exc).split(": line ", 1)[0]
    if re.search(r"\b(NaN|-?Infinity)\b", text):
        reason = "NaN and Infinity are not JSON values"
    return Rejected(origin, "invalid_json", f"not valid JSON: {reason}")


def _too_long_line(origin: str) -> Rejected:
    return Rejected(origin, "too_large", f"line longer than {MAX_LINE_BYTES // 1024} KiB; not read")


def _expand(value: Any, origin: str, size: int, text: bytes | None = None) -> Iterator[Item]:
    """A record (its ``text`` as read, if given), or the items of a /v1/batch body with the body's
    context and integrations merged into each: the item's own keys win, the body's fill in the rest
    (`_merged`)."""
    if not (isinstance(value, dict) and "type" not in value and isinstance(value.get("batch"), list)):
        yield Record(origin, value, size, text)
        return
    if not value["batch"]:
        yield Note(origin, "a /v1/batch body with no events")
        return
    shared = {key: value[key] for key in ("context", "integrations") if key in value}
    for index, item in enumerate(value["batch"]):
        if isinstance(item, dict):
            for key, shared_value in shared.items():
                item[key] = _merged(item[key], shared_value) if key in item else shared_value
        # The body's size bounds each item's: events.parse_event measures an item exactly when it matters.
        yield Record(f"{origin}[{index}]", item, size)


def _merged(own: Any, shared: Any) -> Any:
    """An item's context or integrations with the body's keys it lacks added after its own; as it is
    when either is not an object. One level deep: an item's ``library``
    replaces the body's whole."""
    if type(own) is not dict or type(shared) is not dict:
        return own
    return own | {key: value for key, value in shared.items() if key not in own}


class _ValueReader:
    """Streams concatenated JSON values, splitting top-level arrays into their items.

    The standard library's ``raw_decode`` finds where each value ends in a text buffer that is
    refilled as needed, so a huge array never sits in memory whole; each value's text is then read
    by `_json.loads`, the same as an NDJSON line. A value that does not parse is given more text
    (doubling) until it does, the stream ends, or it passes MAX_DOCUMENT_CHARS.
    """

    def __init__(self, head: bytes, stream: Readable, name: str, cursor: Cursor, *, document: bool) -> None:
        self._stream = stream
        self._name = name
        self._cursor = cursor
        self._document = document
        # Bytes that are not UTF-8 become lone surrogates; the first one's position is remembered, so
        # the values before it are still read and the value that holds it is named.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._bad_utf8: int | None = None
        self._text = ""
        self._pos = 0
        self._counted = 0
        self._line = cursor.line + 1
        self._eof = False
        self._head = head
        self._yielded = False

    def items(self) -> Iterator[Item]:
        """Every record, until the end or the first value that cannot be read."""
        self._feed(self._head)
        for item in self._items():
            if isinstance(item, Rejected) and self._document and not self._yielded:
                # Not a document after all: read it again, line by line, from what is held.
                self._cursor.line = self._line - 1
                held = self._text.encode("utf-8", "surrogateescape")
                yield from _iter_ndjson(Prefixed(held, self._stream), self._name, self._cursor)
                return
            self._yielded = True
            yield item

    def _feed(self, data: bytes) -> None:
        kept = self._text[self._pos :]
        new = self._decoder.decode(data, final=not data)
        if self._bad_utf8 is not None:
            self._bad_utf8 -= self._pos
        elif found := ESCAPED_BYTE.search(new):
            self._bad_utf8 = len(kept) + found.start()
        self._text = kept + new
        self._counted -= self._pos
        self._pos = 0

    def _fill(self, size: int = CHUNK_BYTES) -> bool:
        """Read more text; False at the end of the stream."""
        if self._eof:
            return False
        data = self._stream.read(size)
        self._eof = not data
        self._feed(data)
        return not self._eof

    def _origin(self, pos: int) -> str:
        """``name:line`` for a position at or after the last one asked about."""
        self._line += self._text.count("\n", self._counted, pos)
        self._counted = pos
        self._cursor.line = self._line
        return at(self._name, self._line)

    def _skip_whitespace(self) -> str:
        """Move past whitespace; the next character, or '' at the end."""
        while True:
            text, pos = self._text, self._pos
            while pos < len(text) and text[pos] in _JSON_WHITESPACE:
                pos += 1
            self._pos = pos
            if pos < len(text):
                return text[pos]
            if not self._fill():
                return ""

    def _decode(self, origin: str) -> Record | Rejected | None:
        """The next value as a record, a `Rejected` for a value that is not JSON, or None when the
        text cannot be read on (a broken structure: the rest of the file is lost)."""
        want = CHUNK_BYTES
        while True:
            try:
                _, end = _SCANNER.raw_decode(self._text, self._pos)
            except json.JSONDecodeError:
                if len(self._text) - self._pos > MAX_DOCUMENT_CHARS or not self._fill(want):
                    return None
                want = min(want * 2, MAX_DOCUMENT_CHARS)
                continue
            except RecursionError:
                return None
            start, self._pos = self._pos, end
            text = self._text[start:end]
            if self._bad_utf8 is not None and self._bad_utf8 < end:
                found = ESCAPED_BYTE.search(self._text, end)
                self._bad_utf8 = found.start() if found else None
                return Rejected(origin, "invalid_utf8", "not valid UTF-8")
            try:
                return Record(origin, _json.loads(text), len(text))
            except ValueError as exc:
                if isinstance(exc, _json.IntegerTooLongError):
                    self._yielded = True  # a whole JSON value was read: it is a document after all
                return _bad_json(origin, text, exc)

    def _broken(self) -> Rejected:
        """Why the text cannot be read on, at the position reached."""
        origin = self._origin(self._pos)
        if self._bad_utf8 is not None and self._bad_utf8 <= len(self._text):
            return Rejected(origin, "invalid_utf8", "not valid UTF-8; the rest of the file is not read")
        rest = self._text[self._pos :]
        if len(rest) > MAX_DOCUMENT_CHARS:
            mib = MAX_DOCUMENT_CHARS // (1024 * 1024)
            detail = f"a JSON value over {mib} MiB; write one event per line (NDJSON) instead"
            return Rejected(origin, "too_large", f"{detail}; the rest of the file is not read")
        try:
            _SCANNER.decode(rest)
        except json.JSONDecodeError as error:
            line = self._line + error.lineno - 1
            detail = f"not valid JSON: {error.msg} (line {line}, column {error.colno})"
        except (ValueError, RecursionError):
            detail = "not valid JSON: nested too deeply"
        else:
            detail = "not valid JSON"
        return Rejected(origin, "invalid_json", f"{detail}; the rest of the file is not read")

    def _items(self) -> Iterator[Item]:
        while char := self._skip_whitespace():
            origin = self._origin(self._pos)
            if char == "[":
                self._pos += 1
                if not (yield from self._array_items()):
                    return
                continue
            record = self._decode(origin)
            if record is None:
                yield self._broken()
                return
            yield from (
                _expand(record.value, origin, record.size) if isinstance(record, Record) else [record]
            )

    def _array_items(self) -> Generator[Item, None, bool]:
        """The items of one array; returns False when the array is broken and reading must stop."""
        if self._skip_whitespace() == "]":
            self._pos += 1
            yield Note(self._origin(self._pos), "an empty array: holds no events")
            return True
        index = 0
        while True:
            self._skip_whitespace()
            origin = f"{self._origin(self._pos)}[{index}]"
            record = self._decode(origin)
            if record is None:
                yield self._broken()
                return False
            yield from (
                _expand(record.value, origin, record.size) if isinstance(record, Record) else [record]
            )
            index += 1
            separator = self._skip_whitespace()
            self._pos += 1
            if separator == "]":
                return True
            if separator != ",":
                found = repr(separator) if separator else "the end of the file"
                yield Rejected(
                    self._origin(self._pos - 1),
                    "invalid_json",
                    f"not valid JSON: expected ',' or ']' after array item {index - 1}, "
                    f"found {found}; the rest of the file is not read",
                )
                return False
