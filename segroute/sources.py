"""Inputs -> a stream of JSON records, each with the place it came from.

The shape of an input is decided from its content, never from its name: gzip by its magic bytes,
then newline-delimited JSON, a JSON array, one JSON document, or several concatenated ones. A
``/v1/batch`` body is expanded into its items. Everything is read as a stream: memory holds one
chunk and one record at a time, whatever the size of the input.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from segroute._json import dumps
from segroute.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 256 * 1024
MAX_LINE_BYTES = 1024 * 1024
"""A longer line is rejected without being held in memory; a /v1/batch body (500 KB) fits."""
MAX_INFLATE_BYTES = 4 * 1024 * 1024
"""The most one read decompresses, so a small gzip member cannot blow up in memory."""
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
"""The largest single multi-line JSON value (a pretty-printed batch body, say) that is read whole."""
STDIN_NAME = "<stdin>"
_WHITESPACE = b" \t\r\n"
_JSON_WHITESPACE = " \t\r\n"
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class Record:
    """One JSON value read from an input."""

    origin: str
    """Where it was read: ``file:line``, with ``[N]`` for item N of an array or a batch."""
    value: Any
    size: int
    """Bytes of its JSON text as read (a lower bound when that text is far below any limit)."""


@dataclass(frozen=True, slots=True)
class BadRecord:
    """Something read that is not a JSON value, or could not be read at all."""

    origin: str
    reason: str
    """``invalid_json``, ``invalid_utf8``, ``too_large`` or ``unreadable``."""
    detail: str


@dataclass(frozen=True, slots=True)
class Note:
    """Something about an input worth telling the user that is not a record (an empty file)."""

    origin: str
    message: str


Item = Record | BadRecord | Note


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Prefixed:
    """A stream with some bytes already read from it put back in front."""

    def __init__(self, prefix: bytes, stream: _Readable) -> None:
        self._prefix = prefix
        self._stream = stream

    def read(self, size: int = -1, /) -> bytes:
        if not self._prefix:
            return self._stream.read(size)
        if size < 0:
            data, self._prefix = self._prefix + self._stream.read(), b""
            return data
        data, self._prefix = self._prefix[:size], self._prefix[size:]
        return data


class _Gunzip:
    """Streaming gzip (several members too) that hands out every byte before it reports a cut-off end.

    ``gzip.GzipFile`` drops the last block it decompressed when the file turns out to be truncated;
    here everything before the cut is read, then EOFError says what happened.
    """

    def __init__(self, raw: _Readable) -> None:
        self._raw = raw
        self._inflater = zlib.decompressobj(wbits=31)

    def read(self, size: int = -1, /) -> bytes:
        while True:
            if self._inflater.eof:
                data = self._inflater.unused_data or self._raw.read(CHUNK_BYTES)
                if not data:
                    return b""
                self._inflater = zlib.decompressobj(wbits=31)
            else:
                data = self._inflater.unconsumed_tail or self._raw.read(CHUNK_BYTES)
                if not data:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
            out = self._inflater.decompress(data, MAX_INFLATE_BYTES)
            if out:
                return out


class _Cursor:
    """The line a reader has reached, so a read error can name it."""

    __slots__ = ("line",)

    def __init__(self) -> None:
        self.line = 0


def check_inputs(inputs: Iterable[str]) -> None:
    """Raise `InputError` for the first input that does not exist, before anything is read."""
    for name in inputs:
        if name != "-" and not os.path.exists(name):
            raise InputError(f"{name}: no such file or directory")


def iter_items(inputs: Iterable[str], *, stdin: BinaryIO | None = None) -> Iterator[Item]:
    """Read every input in order: files, directories (recursively, sorted), and ``-`` for stdin."""
    for name in inputs:
        if name == "-":
            if stdin is None:
                raise InputError("'-' names stdin, but there is no stdin to read")
            yield from iter_stream(stdin, STDIN_NAME)
            continue
        path = Path(name)
        if path.is_dir():
            for file in _walk(path):
                yield from _iter_file(file)
        else:
            yield from _iter_file(path)


def _walk(folder: Path) -> Iterator[Path]:
    """Files below a folder in sorted order, leaving out hidden ones and not following folder links."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise InputError(f"{folder}: cannot list folder: {exc.strerror}") from exc
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if not entry.is_symlink():
                yield from _walk(entry)
        elif entry.is_file():
            yield entry


def _iter_file(path: Path) -> Iterator[Item]:
    name = str(path)
    try:
        stream = path.open("rb")
    except OSError as exc:
        yield BadRecord(name, "unreadable", f"cannot open: {exc.strerror or exc}")
        return
    with stream:
        yield from iter_stream(stream, name)


def iter_stream(stream: _Readable, name: str) -> Iterator[Item]:
    """Read one input stream (a file's bytes, gzip'd or not) into records."""
    cursor = _Cursor()
    try:
        head = _read_at_least(stream, len(GZIP_MAGIC))
        source: _Readable = _Prefixed(head, stream)
        if head.startswith(GZIP_MAGIC):
            source = _Gunzip(source)
        yield from _iter_content(source, name, cursor)
    except (EOFError, zlib.error) as exc:
        yield BadRecord(_at(name, cursor.line + 1), "unreadable", _gzip_problem(exc))
    except OSError as exc:
        yield BadRecord(_at(name, cursor.line + 1), "unreadable", f"read failed: {exc.strerror or exc}")


def _gzip_problem(exc: Exception) -> str:
    if isinstance(exc, EOFError):
        return "truncated gzip stream: the file ends before the compressed data does"
    return f"corrupt gzip stream: {exc}"


def _read_at_least(stream: _Readable, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(max(size - len(data), CHUNK_BYTES))
        if not chunk:
            break
        data += chunk
    return data


def _at(name: str, line: int) -> str:
    return f"{name}:{line}"


def _iter_content(stream: _Readable, name: str, cursor: _Cursor) -> Iterator[Item]:
    head = b""
    while not head.lstrip(_WHITESPACE) and (chunk := stream.read(CHUNK_BYTES)):
        head += chunk
        head = head.removeprefix(UTF8_BOM)
    start = head.lstrip(_WHITESPACE)
    if not start:
        yield Note(name, "empty: holds no events")
        return
    if start.startswith(b"["):
        yield from _ValueReader(head, stream, name, cursor).items()
        return
    eof = False
    while (document := _is_document(head, eof=eof)) is None:
        chunk = stream.read(CHUNK_BYTES)
        eof = not chunk
        head += chunk
    if document:
        yield from _ValueReader(head, stream, name, cursor).items()
    else:
        yield from _iter_ndjson(_iter_lines(_Prefixed(head, stream), cursor), name, cursor)


def _is_document(head: bytes, *, eof: bool) -> bool | None:
    """Whether text that starts with something other than '[' is pretty-printed JSON, not NDJSON.

    None while the first line is not read whole. Pretty-printers end the first line with the
    opening brace (``{``, or ``{"batch": [``); a broken NDJSON line does not parse either, but
    does not end so, and is rejected alone while the lines after it are read.
    """
    if len(head) > MAX_LINE_BYTES:
        return False
    lines = head.split(b"\n")
    if not eof:
        lines.pop()
    for line in lines:
        first = line.strip(_WHITESPACE)
        if first:
            return first.startswith(b"{") and first.endswith((b"{", b"[")) and _parses(first) is _NO_VALUE
    return None


_NO_VALUE = object()


def _parses(line: bytes) -> Any:
    """The value a line holds, or _NO_VALUE when it is not JSON."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return _NO_VALUE


def _iter_lines(stream: _Readable, cursor: _Cursor) -> Iterator[bytes | None]:
    """Yield each line without its newline; ``None`` for a line over MAX_LINE_BYTES, which is not kept.

    ``cursor.line`` is the number of the line just yielded.
    """
    pending: list[bytes] = []
    pending_size = 0
    too_long = False
    while chunk := stream.read(CHUNK_BYTES):
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            if not too_long:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size > MAX_LINE_BYTES:
                    too_long, pending, pending_size = True, [], 0
            continue
        head = parts[0]
        cursor.line += 1
        if too_long or pending_size + len(head) > MAX_LINE_BYTES:
            yield None
        else:
            yield b"".join(pending) + head if pending else head
        too_long = False
        for line in parts[1:-1]:
            cursor.line += 1
            yield line if len(line) <= MAX_LINE_BYTES else None
        tail = parts[-1]
        pending, pending_size = ([tail], len(tail)) if tail else ([], 0)
    if pending or too_long:
        cursor.line += 1
        yield None if too_long else b"".join(pending)


def _iter_ndjson(lines: Iterator[bytes | None], name: str, cursor: _Cursor) -> Iterator[Item]:
    """Newline-delimited JSON: each line is a record, or a /v1/batch body of records."""
    for line in lines:
        if line is None:
            yield _too_long_line(_at(name, cursor.line))
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            if line.strip(_WHITESPACE):
                yield _bad_json(_at(name, cursor.line), line)
            continue
        yield from _expand(value, _at(name, cursor.line), len(line))


def _bad_json(origin: str, text: bytes) -> BadRecord:
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRecord(origin, "invalid_utf8", f"not valid UTF-8 (column {exc.start + 1})")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return BadRecord(origin, "invalid_json", f"not valid JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        return BadRecord(origin, "invalid_json", "not valid JSON: nested too deeply")
    # orjson refuses a few things the standard library accepts (NaN, deep nesting): say so plainly.
    return BadRecord(origin, "invalid_json", "not valid JSON (NaN, Infinity or nesting too deep)")


def _too_long_line(origin: str) -> BadRecord:
    return BadRecord(origin, "too_large", f"line longer than {MAX_LINE_BYTES // 1024} KiB; not read")


def _expand(value: Any, origin: str, size: int) -> Iterator[Record]:
    """A record, or the items of a /v1/batch body with the body's context and integrations filled in."""
    if isinstance(value, dict) and "type" not in value and isinstance(value.get("batch"), list):
        shared = {key: value[key] for key in ("context", "integrations") if key in value}
        for index, item in enumerate(value["batch"]):
            item_size = len(dumps(item))
            if isinstance(item, dict):
                for key, shared_value in shared.items():
                    item.setdefault(key, shared_value)
            yield Record(f"{origin}[{index}]", item, item_size)
        return
    yield Record(origin, value, size)


class _NotJSONError(ValueError):
    """NaN and Infinity: the standard library reads them, JSON has no such values."""


def _refuse_constant(name: str) -> Any:
    raise _NotJSONError(f"{name} is not a JSON value")


class _ValueReader:
    """Streams concatenated JSON values, splitting top-level arrays into their items.

    The standard library's ``raw_decode`` parses one value at a time from a text buffer that is
    refilled as needed, so a huge array never sits in memory whole. A value that does not parse is
    given more text (doubling) until it does, the stream ends, or it passes MAX_DOCUMENT_BYTES.
    """

    def __init__(self, head: bytes, stream: _Readable, name: str, cursor: _Cursor) -> None:
        self._stream = stream
        self._name = name
        self._cursor = cursor
        # Bytes that are not UTF-8 become lone surrogates; the first one's position is remembered, so
        # the values before it are still read and the value that holds it is named.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._bad_utf8: int | None = None
        self._json = json.JSONDecoder(parse_constant=_refuse_constant)
        self._text = ""
        self._pos = 0
        self._counted = 0
        self._line = 1
        self._eof = False
        self._head = head

    def items(self) -> Iterator[Item]:
        """Every record, until the end or the first value that cannot be read."""
        self._feed(self._head)
        yield from self._items()

    def _feed(self, data: bytes) -> None:
        kept = self._text[self._pos :]
        new = self._decoder.decode(data, final=not data)
        if self._bad_utf8 is not None:
            self._bad_utf8 -= self._pos
        elif found := _ESCAPED_BYTE.search(new):
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
        return _at(self._name, self._line)

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

    def _decode(self) -> tuple[Any, int] | BadRecord:
        """The next JSON value and the length of its text, or why it cannot be read."""
        want = CHUNK_BYTES
        while True:
            try:
                value, end = self._json.raw_decode(self._text, self._pos)
            except _NotJSONError as exc:
                return self._broken("invalid_json", f"not valid JSON: {exc}")
            except json.JSONDecodeError as exc:
                if self._bad_utf8 is not None and exc.pos >= self._bad_utf8:
                    return self._broken("invalid_utf8", "not valid UTF-8")
                if len(self._text) - self._pos > MAX_DOCUMENT_BYTES:
                    mib = MAX_DOCUMENT_BYTES // (1024 * 1024)
                    return self._broken(
                        "too_large",
                        f"a JSON value over {mib} MiB; write one event per line (NDJSON) instead",
                    )
                if not self._fill(want):
                    return self._broken("invalid_json", f"not valid JSON: {exc.msg}")
                want *= 2
                continue
            except RecursionError:
                return self._broken("invalid_json", "not valid JSON: nested too deeply")
            if self._bad_utf8 is not None and self._bad_utf8 < end:
                return self._broken("invalid_utf8", "not valid UTF-8")
            length = end - self._pos
            self._pos = end
            return value, length

    def _broken(self, reason: str, detail: str) -> BadRecord:
        return BadRecord(self._origin(self._pos), reason, f"{detail}; the rest of the file is not read")

    def _items(self) -> Iterator[Item]:
        while char := self._skip_whitespace():
            origin = self._origin(self._pos)
            if char == "[":
                self._pos += 1
                if not (yield from self._array_items()):
                    return
                continue
            decoded = self._decode()
            if isinstance(decoded, BadRecord):
                yield decoded
                return
            value, length = decoded
            yield from _expand(value, origin, length)

    def _array_items(self) -> Generator[Item, None, bool]:
        """The items of one array; False when the array is broken and reading must stop."""
        if self._skip_whitespace() == "]":
            self._pos += 1
            return True
        index = 0
        while True:
            self._skip_whitespace()
            origin = f"{self._origin(self._pos)}[{index}]"
            decoded = self._decode()
            if isinstance(decoded, BadRecord):
                yield decoded
                return False
            value, length = decoded
            # Characters undercount UTF-8 bytes by up to 4x: measure exactly only near a limit.
            if length > 4096:
                length = len(dumps(value))
            yield from _expand(value, origin, length)
            index += 1
            separator = self._skip_whitespace()
            self._pos += 1
            if separator == "]":
                return True
            if separator != ",":
                found = repr(separator) if separator else "the end of the file"
                yield BadRecord(
                    f"{self._origin(self._pos)}",
                    "invalid_json",
                    f"not valid JSON: expected ',' or ']' after array item {index - 1}, "
                    f"found {found}; the rest of the file is not read",
                )
                return False
