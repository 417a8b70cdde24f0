"""Inputs -> a stream of JSON records, each with the place it came from.

The shape of an input is decided from its content, never from its name: gzip by its magic bytes,
a tar or zip bundle (read member by member, see `bundles`), then newline-delimited JSON, a JSON
array, one JSON document, or several concatenated ones. A ``/v1/batch`` body is expanded into its
items. Everything is read as a stream: memory holds one chunk and one record at a time, whatever the
size of the input.

Segment's raw-data archive is a tree ``[prefix/]segment-logs/<source-id>/<received-day>/<file>``;
folders and bundle members laid out that way can be left unread by day (see `iter_items`).
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, cast, final

import msgspec

from segroute import _json
from segroute.errors import InputError
from segroute.names import ESCAPED_BYTE, display_name

GZIP_MAGIC = b"\x1f\x8b"
MAX_GZIP_LAYERS = 3
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
CHUNK_BYTES = 256 * 1024
TAR_HEADER_BYTES = 512
TAR_MAGIC_OFFSET = 257
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
MAX_LINE_BYTES = 1024 * 1024
"""A longer line is rejected without being held in memory; a /v1/batch body (500 KB) fits."""
MAX_INFLATE_BYTES = 4 * 1024 * 1024
"""The most one read decompresses, so a small gzip member cannot blow up in memory."""
MAX_DOCUMENT_CHARS = 64 * 1024 * 1024
"""The largest single multi-line JSON value (a pretty-printed batch body, say) that is read whole."""
MAX_EXPANSION = 200
"""Decompressed bytes allowed per compressed byte read. Segment's NDJSON packs about 10:1; a bomb
of zeros packs 1000:1 per gzip layer, and layers multiply."""
EXPANSION_FLOOR = 16 * 1024 * 1024
"""Bytes any input may decompress to before MAX_EXPANSION is checked."""
MAX_BUNDLE_DEPTH = 2
"""A bundle inside a bundle is read; one more level down is refused."""
PLACEHOLDER_NAMES = frozenset({"dummy-object.txt"})
"""Files Segment's archive setup leaves behind, which hold no events."""
SKIPPED_FOLDERS = frozenset({"__MACOSX"})
"""Folders in bundles that hold no events: the resource forks macOS's Finder adds to a zip."""
ARCHIVE_ROOT = "segment-logs"
MAX_NOT_TEXT_SHARE = 0.10
"""The share of a stream's first chunk that may be bytes text never holds (NUL and other control
bytes, invalid UTF-8) before the stream is taken for binary and not read: a text file with a stray
NUL or a few Latin-1 bytes is still read line by line."""
STDIN_NAME = "<stdin>"
_WHITESPACE = b" \t\r\n"
_NEWLINE = ord("\n")
_CR = ord("\r")
_JSON_WHITESPACE = " \t\r\n"


def _skip_int(digits: str) -> int:
    return 0


_SCANNER = json.JSONDecoder(parse_int=_skip_int)
"""The standard library's reader, used only to find where a value ends or why it is not JSON: it
leaves integers unconverted, so one too long for Python to convert does not stop it."""


@final
class Record(msgspec.Struct):  # made per event: a Struct is built in C, in half a dataclass's time
    """One JSON value read from an input."""

    origin: str
    """Where it was read: ``file:line``, with ``[N]`` for item N of an array or a batch."""
    value: Any
    size: int
    """The length of its JSON text as read: bytes, or characters for a value inside a larger text."""
    text: bytes | None = None
    """The value's JSON text as read, without the whitespace around it, when the value is a whole
    NDJSON line that holds no carriage return (a line break to some readers); else None."""


@final
@dataclass(frozen=True, slots=True)
class BadRecord:
    """Something read that is not a JSON value, or could not be read at all."""

    origin: str
    reason: str
    """``invalid_json``, ``invalid_utf8``, ``binary`` (a whole input or member that is plainly not
    text), ``too_large``, ``unreadable`` or ``unsafe`` (a bundle member or a compressed stream refused
    as hostile)."""
    detail: str


@final
@dataclass(frozen=True, slots=True)
class Note:
    """Something about an input worth telling that is not a record (an empty file, say)."""

    origin: str
    message: str


Item = Record | BadRecord | Note


def _binary(what: str) -> str:
    return f"not Segment events (binary: {what}); not read"


def _compressed(tool: str) -> str:
    return (
        f"{tool}-compressed data: segroute reads gzip; decompress it first, "
        f"e.g. {tool} -dc FILE | segroute send -"
    )


BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", _binary("PNG image")),
    (b"\xff\xd8\xff", _binary("JPEG image")),
    (b"GIF87a", _binary("GIF image")),
    (b"GIF89a", _binary("GIF image")),
    (b"%PDF-", _binary("PDF document")),
    (b"RIFF", _binary("RIFF media: a WebP image, WAV sound or AVI video")),
    (b"\x7fELF", _binary("ELF executable")),
    (b"\xfe\xed\xfa\xce", _binary("Mach-O executable")),
    (b"\xce\xfa\xed\xfe", _binary("Mach-O executable")),
    (b"\xfe\xed\xfa\xcf", _binary("Mach-O executable")),
    (b"\xcf\xfa\xed\xfe", _binary("Mach-O executable")),
    (b"\xca\xfe\xba\xbe", _binary("Mach-O universal executable or Java class")),
    (b"MZ", _binary("Windows executable")),
    (b"SQLite format 3\x00", _binary("SQLite database")),
    (b"PAR1", _binary("Parquet file")),
    (b"7z\xbc\xaf\x27\x1c", _binary("7z archive")),
    (b"BZh", _compressed("bzip2")),
    (b"\xfd7zXZ\x00", _compressed("xz")),
    (b"\x28\xb5\x2f\xfd", _compressed("zstd")),
)
"""What a stream that starts with a known signature is: the detail of its one ``binary`` record."""
ZIP_DOCUMENTS: tuple[tuple[bytes, str], ...] = (
    (b"[Content_Types].xml", "a Word/Excel/PowerPoint document (Office Open XML)"),
    (b"mimetype", "an OpenDocument file or EPUB book"),
    (b"META-INF/MANIFEST.MF", "a Java archive (JAR)"),
    (b"META-INF/", "a Java archive (JAR)"),
)
"""Zip files that are documents, not bundles, by the name of their first member."""
# Every byte but the control bytes text never holds (C0 but tab, LF, CR, FF, VT, backspace and
# escape): deleting these from a chunk leaves its control bytes to count. DEL is not counted: JSON
# writers leave it unescaped in strings, so counting it could call valid JSON binary.
_TEXT_BYTES = bytes(sorted(set(range(256)) - set(range(0x20)) | set(b"\t\n\r\f\v\b\x1b")))


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


_decompressobj: Callable[..., Any]
_INFLATE_ERRORS: tuple[type[Exception], ...]
try:  # python-isal (the ``fast`` extra) inflates about twice as fast as zlib, with the same API
    from isal import isal_zlib

    _decompressobj = isal_zlib.decompressobj
    _INFLATE_ERRORS = (zlib.error, cast(type[Exception], isal_zlib.error))
except ImportError:  # without the extra
    _decompressobj = zlib.decompressobj
    _INFLATE_ERRORS = (zlib.error,)


_GZIP_ERRORS: tuple[type[Exception], ...] = (EOFError, *_INFLATE_ERRORS)


class _Gunzip:
    """Streaming gzip (several members too) that hands out every byte before it reports a cut-off end.

    ``gzip.GzipFile`` drops the last block it decompressed when the file turns out to be truncated;
    here everything before the cut is read, then EOFError says what happened. Zero padding after the
    last member is allowed, as gzip allows it; other trailing bytes end the stream with a note.
    """

    def __init__(self, raw: _Readable) -> None:
        self._raw = raw
        self._inflater = _decompressobj(wbits=31)
        self.trailing_garbage = False

    def read(self, size: int = -1, /) -> bytes:
        while True:
            if self._inflater.eof:
                data = self._inflater.unused_data or self._raw.read(CHUNK_BYTES)
                while data and not data.strip(b"\x00"):
                    data = self._raw.read(CHUNK_BYTES)
                if not data:
                    return b""
                if not data.lstrip(b"\x00").startswith(GZIP_MAGIC[:1]):
                    self.trailing_garbage = True
                    return b""
                data = data.lstrip(b"\x00")
                self._inflater = _decompressobj(wbits=31)
            else:
                data = self._inflater.unconsumed_tail or self._raw.read(CHUNK_BYTES)
                if not data:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
            out: bytes = self._inflater.decompress(data, MAX_INFLATE_BYTES)
            if out:
                return out


class _Cursor:
    """The line a reader has reached, so a read error can name it, and the bytes of text read up to
    it, so a meter can tell how far the reading has come."""

    __slots__ = ("line", "consumed")

    def __init__(self) -> None:
        self.line = 0
        self.consumed = 0


def check_inputs(inputs: Iterable[str]) -> None:
    """Raise `InputError` for the first input that does not exist, before anything is read."""
    for name in inputs:
        if name != "-" and not os.path.exists(name):
            raise InputError(f"{display_name(name)}: no such file or directory")


def archive_day(parts: Iterable[str]) -> int | None:
    """The received day (epoch ms at 00:00 UTC) of a folder's path parts in a segment-logs tree:
    ``.../segment-logs/<source-id>/<day>``; None for any other folder."""
    tail = list(parts)[-3:]
    if len(tail) == 3 and tail[0] == ARCHIVE_ROOT and tail[2].isdigit() and tail[2].isascii():
        return int(tail[2])
    return None


class ReadMeter:
    """How far the reading of the inputs has come, in bytes of the files as they are on disk (gzip'd
    ones too), for the progress line and the message of a run that stopped early."""

    def __init__(self, inputs: Iterable[str]) -> None:
        self.total = _size_of(inputs)
        """The inputs' bytes; None when one is stdin."""
        self._done = 0
        self._reading: _Reading | None = None

    @property
    def position(self) -> int:
        """Bytes read so far, to the line the readers have reached where that is known."""
        reading = self._reading
        return self._done + (0 if reading is None else reading.position())


def _size_of(inputs: Iterable[str]) -> int | None:
    total = 0
    for name in inputs:
        if name == "-":
            return None
        path = Path(name)
        try:
            if path.is_dir():
                for folder, _, files in os.walk(path):
                    total += sum(os.path.getsize(os.path.join(folder, file)) for file in files)
            else:
                total += path.stat().st_size
        except OSError:
            continue  # it is named as unreadable when it is read
    return total


def iter_items(
    inputs: Iterable[str],
    *,
    stdin: BinaryIO | None = None,
    skip_day: Callable[[int], bool] | None = None,
    meter: ReadMeter | None = None,
) -> Iterator[Item]:
    """Read every input in order: files, directories (recursively, sorted), and ``-`` for stdin.

    ``skip_day(day_ms)`` says which day folders of a segment-logs tree (in folders and in bundles)
    cannot hold a wanted event; they are not read, and a note counts them. ``meter`` follows how far
    the reading has come.
    """
    for name in inputs:
        reading = _Reading(skip_day)
        if meter is not None:
            meter._reading = reading
        yield from _iter_input(name, reading, stdin)
        if meter is not None:
            meter._done += reading.raw
            meter._reading = None


def _iter_input(name: str, reading: _Reading, stdin: BinaryIO | None) -> Iterator[Item]:
    if name == "-":
        if stdin is None:
            raise InputError("'-' names stdin, but stdin is closed")
        yield from iter_stream(stdin, STDIN_NAME, reading=reading)
        return
    path = Path(name)
    if not path.is_dir():
        yield from _iter_file(path, reading)
        return
    if (day := archive_day(Path(os.path.abspath(path)).parts)) is not None and reading.skips(day):
        yield reading.pruned_note(display_name(name))
        return
    for entry in _walk(path, reading):
        if isinstance(entry, BadRecord):
            yield entry
        else:
            yield from _iter_file(entry, reading)
    if reading.pruned:
        yield reading.pruned_note(display_name(name))


@dataclass
class _Reading:
    """What one input's readers share: the day filter, and how much everything in it decompressed."""

    skip_day: Callable[[int], bool] | None
    raw: int = 0
    """Bytes read from the input itself."""
    expanded: int = 0
    """Bytes produced by decompressing anything inside it."""
    pruned: set[int] = field(default_factory=set)
    """Day folders left unread since the last note about them."""
    cursor: _Cursor | None = None
    """The cursor of the stream being read at the top of the input (a file of a folder, say)."""
    stream_raw: int = 0
    stream_expanded: int = 0
    """``raw`` and ``expanded`` when that stream began."""

    def position(self) -> int:
        """Bytes of the input read so far: to the line reached in a stream of text, compressed or not;
        else (a bundle, a JSON array) as far as the readers have read ahead."""
        cursor = self.cursor
        if cursor is None or not cursor.consumed:
            return self.raw
        raw = self.raw - self.stream_raw
        expanded = self.expanded - self.stream_expanded
        within = cursor.consumed if not expanded else raw * min(1.0, cursor.consumed / expanded)
        return self.stream_raw + min(raw, int(within))

    def skips(self, day: int) -> bool:
        """Whether a day folder is left unread; counts it once."""
        if self.skip_day is None or not self.skip_day(day):
            return False
        self.pruned.add(day)
        return True

    def pruned_note(self, origin: str) -> Note:
        count, self.pruned = len(self.pruned), set()
        folders = "day folder" if count == 1 else "day folders"
        return Note(origin, f"{count} {folders} of events received before the selected time: not read")


def _walk(folder: Path, reading: _Reading) -> Iterator[Path | BadRecord]:
    """Files below a folder in sorted order, leaving out hidden ones and not following folder links.

    A folder that cannot be listed is a `BadRecord`, and the walk goes on. Day folders of a
    segment-logs tree that ``reading`` skips are not entered.
    """
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        yield BadRecord(display_name(str(folder)), "unreadable", f"cannot list folder: {exc.strerror or exc}")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            day = archive_day((entry.parent.parent.name, entry.parent.name, entry.name))
            if not entry.is_symlink() and (day is None or not reading.skips(day)):
                yield from _walk(entry, reading)
        elif entry.is_file():
            yield entry


def _iter_file(path: Path, reading: _Reading) -> Iterator[Item]:
    name = display_name(str(path))
    if path.name in PLACEHOLDER_NAMES:
        yield _placeholder(name)
        return
    try:
        stream = path.open("rb")
    except OSError as exc:
        yield BadRecord(name, "unreadable", f"cannot open: {exc.strerror or exc}")
        return
    with stream:
        yield from iter_stream(stream, name, reading=reading)


def _placeholder(origin: str) -> Note:
    return Note(origin, "a placeholder Segment's archive setup leaves: holds no events; not read")


class _Available:
    """Reads hand back what is there (``read1``) instead of waiting for a full chunk, so events piped
    in a few at a time are processed as they come."""

    def __init__(self, stream: Any) -> None:
        self._read = stream.read1 if hasattr(stream, "read1") else stream.read

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self._read(size)
        return data


class _BombError(Exception):
    """A stream that expands far more than real data does."""

    def __init__(self, message: str, *, whole_input: bool) -> None:
        super().__init__(message)
        self.whole_input = whole_input


class _Expanding:
    """The decompressed side of a stream: refuses to go on once it has expanded like a bomb, at this
    level (against ``packed`` bytes) or across the whole input (against what was read from it)."""

    def __init__(self, stream: _Readable, packed: Callable[[], int], reading: _Reading) -> None:
        self._stream = stream
        self._packed = packed
        self._reading = reading
        self._out = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self._out += len(data)
        reading = self._reading
        reading.expanded += len(data)
        if self._out > EXPANSION_FLOOR and self._out > MAX_EXPANSION * self._packed():
            raise _BombError(_bomb_detail(self._out, self._packed()), whole_input=False)
        if reading.expanded > EXPANSION_FLOOR and reading.expanded > MAX_EXPANSION * reading.raw:
            raise _BombError(_bomb_detail(reading.expanded, reading.raw), whole_input=True)
        return data


def _bomb_detail(out: int, packed: int) -> str:
    return (
        f"expands {packed} bytes to over {out} and counting (more than {MAX_EXPANSION} times), "
        "like a compression bomb; the rest is not read"
    )


class _Counted:
    """A stream that counts the bytes read from it; at the top of an input, into ``reading.raw`` too."""

    def __init__(self, stream: _Readable, reading: _Reading | None) -> None:
        self._stream = stream
        self._reading = reading
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        if self._reading is not None:
            self._reading.raw += len(data)
        return data


def iter_stream(
    stream: _Readable,
    name: str,
    *,
    reading: _Reading | None = None,
    packed: int | None = None,
    depth: int = 0,
) -> Iterator[Item]:
    """Read one input stream (a file's bytes, gzip'd or not, even twice, or a bundle) into records.

    ``packed`` is the compressed size of a stream a bundle decompressed; ``depth`` how many bundles
    it is inside.
    """
    top = reading is None or depth == 0
    reading = reading or _Reading(None)
    cursor = _Cursor()
    if top:
        reading.cursor, reading.stream_raw, reading.stream_expanded = cursor, reading.raw, reading.expanded
    counted = _Counted(_Available(stream), reading if top else None)
    source: _Readable = counted
    layers: list[_Gunzip] = []
    try:
        head = _read_head(source)
        while head.startswith(GZIP_MAGIC) and len(layers) < MAX_GZIP_LAYERS:
            layers.append(_Gunzip(_Prefixed(head, source)))
            source = layers[-1]
            head = _read_head(source)
        if layers or packed is not None:
            size = (lambda: packed) if packed is not None else (lambda: counted.count)
            source = _Expanding(_Prefixed(head, source), size, reading)
            head = _read_head(source)
        kind = _bundle_kind(head)
        if kind is None:
            yield from _iter_content(head, source, name, cursor)
        else:
            yield from _iter_bundle(
                kind, head, source, stream, name, reading, depth, direct=source is counted and depth == 0
            )
    except _BombError as exc:
        if exc.whole_input and not top:
            raise
        yield BadRecord(_at(name, cursor.line + 1), "unsafe", f"refused: {exc}")
        return
    except _GZIP_ERRORS as exc:
        yield BadRecord(_at(name, cursor.line + 1), "unreadable", _gzip_problem(exc))
        return
    except OSError as exc:
        yield BadRecord(_at(name, cursor.line + 1), "unreadable", f"read failed: {exc.strerror or exc}")
        return
    if any(layer.trailing_garbage for layer in layers):
        yield Note(name, "bytes after the end of the gzip data were not read")


def _bundle_kind(head: bytes) -> str | None:
    """``tar`` or ``zip`` when a stream's first bytes start a bundle, else None."""
    if head[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "tar"
    if head.startswith(ZIP_MAGICS) and _zip_document(head) is None:
        return "zip"
    return None


def _zip_document(head: bytes) -> str | None:
    """What a zip is when its first member names it a document (docx, odt, epub, jar), else None."""
    if not head.startswith(ZIP_MAGICS[0]):
        return None
    # The first local file header is at offset 0: the name's length at 26, the name from 30.
    name = head[30 : 30 + int.from_bytes(head[26:28], "little")]
    return next((what for first, what in ZIP_DOCUMENTS if name == first), None)


def _read_head(stream: _Readable) -> bytes:
    """The first chunk of a stream: all of a tar header unless it starts like JSON, and at least two
    bytes, unless the stream is shorter."""
    head = stream.read(CHUNK_BYTES)
    while 0 < len(head) < TAR_HEADER_BYTES and (len(head) < len(GZIP_MAGIC) or not _json_like(head)):
        more = stream.read(CHUNK_BYTES)
        if not more:
            break
        head += more
    return head


def _json_like(head: bytes) -> bool:
    """Starts like JSON text: no need to wait for more bytes to tell a bundle."""
    return head.lstrip(_WHITESPACE)[:1] in (b"{", b"[") or head.startswith((UTF8_BOM, *UTF16_BOMS))


def _iter_bundle(
    kind: str,
    head: bytes,
    source: _Readable,
    stream: _Readable,
    name: str,
    reading: _Reading,
    depth: int,
    *,
    direct: bool,
) -> Iterator[Item]:
    from segroute import bundles  # tarfile and zipfile load only when a bundle is read

    if depth >= MAX_BUNDLE_DEPTH:
        yield BadRecord(name, "unsafe", f"refused: a {kind} bundle {depth} bundles deep; not read")
        return

    def read_member(member: Any, member_name: str, member_packed: int | None) -> Iterator[Item]:
        origin = f"{name}!{display_name(member_name)}"
        parts = [part for part in member_name.replace("\\", "/").split("/") if part not in ("", ".")]
        if not parts or any(part.startswith(".") or part in SKIPPED_FOLDERS for part in parts):
            return  # hidden, as in a folder walk; macOS's resource forks
        if parts[-1] in PLACEHOLDER_NAMES:
            yield _placeholder(origin)
            return
        day = archive_day(parts[:-1])
        if day is not None and reading.skips(day):
            return
        yield from iter_stream(member, origin, reading=reading, packed=member_packed, depth=depth + 1)

    if kind == "tar":
        yield from bundles.iter_tar(_Prefixed(head, source), name, read_member)
    elif direct and _seekable(stream):
        # A zip file on disk is read in place; its size is what was read from the input.
        file = cast(IO[bytes], stream)
        reading.raw = max(reading.raw, file.seek(0, io.SEEK_END))
        yield from bundles.iter_zip(file, name, read_member)
    else:
        # zip needs to seek to its directory at the end: a zip that is streamed (stdin, a member of
        # a tar, gzip'd) is copied to an unnamed temporary file first.
        with bundles.spool(_Prefixed(head, source)) as copy:
            yield from bundles.iter_zip(copy, name, read_member)
    if reading.pruned:
        yield reading.pruned_note(name)


def _seekable(stream: _Readable) -> bool:
    try:
        return isinstance(stream, io.IOBase) and stream.seekable()
    except (OSError, ValueError):
        return False


def _gzip_problem(exc: Exception) -> str:
    if isinstance(exc, EOFError):
        return "truncated gzip stream: the file ends before the compressed data does"
    return f"corrupt gzip stream: {exc}"


def _at(name: str, line: int) -> str:
    return f"{name}:{line}"


def _iter_content(head: bytes, stream: _Readable, name: str, cursor: _Cursor) -> Iterator[Item]:
    if head.startswith(UTF16_BOMS):
        detail = "UTF-16 text (PowerShell's '>' writes it): convert it to UTF-8; the file is not read"
        yield BadRecord(_at(name, 1), "invalid_utf8", detail)
        return
    binary = _not_text(head)
    if binary is not None:
        yield BadRecord(name, "binary", binary)
        return
    head = head.removeprefix(UTF8_BOM)
    # Leading blank lines are counted, not kept, however many there are.
    while not head.strip(_WHITESPACE):
        cursor.line += head.count(b"\n")
        head = stream.read(CHUNK_BYTES)
        if not head:
            yield Note(name, "empty: holds no events")
            return
    skipped = len(head) - len(head.lstrip(_WHITESPACE))
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
        yield from _iter_ndjson(_Prefixed(head, stream), name, cursor)


def _not_text(head: bytes) -> str | None:
    """Why a stream that starts with ``head`` is plainly not text, as the detail of its one
    ``binary`` record; None when it is read as text."""
    for signature, detail in BINARY_SIGNATURES:
        if head.startswith(signature):
            return detail
    document = _zip_document(head)
    if document is not None:
        return f"{document}, not a bundle of events; not read"
    # NUL bytes at the start are not counted: a crash or a writer that preallocates leaves a file
    # zeros first and good events after; and only zeros are left to the reader, whose check refuses
    # a compression bomb of them.
    sample = head.lstrip(b"\x00")
    if not sample:
        return None
    controls = len(sample.translate(None, _TEXT_BYTES))
    # Not final: a character cut at the end of the head is left unread, not counted as invalid.
    try:
        codecs.utf_8_decode(sample, "strict", False)
        invalid = 0
    except UnicodeDecodeError:
        text, read = codecs.utf_8_decode(sample, "ignore", False)
        invalid = read - len(text.encode("utf-8"))
    share = (controls + invalid) / len(sample)
    if share <= MAX_NOT_TEXT_SHARE:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if min(even, odd) * 10 < max(even, odd) and max(even, odd) * 5 > len(sample):
        return _binary(
            "every other byte is NUL, as in UTF-16 text without a byte order mark: convert that to UTF-8"
        )
    counted = f"{share:.0%} of its first {len(sample):,} bytes"
    if len(sample) < len(head):
        counted = f"{share:.0%} of the {len(sample):,} bytes after the NUL bytes it starts with"
    if not controls:  # text in Latin-1 or another legacy encoding, perhaps
        return _binary(f"{counted} are not UTF-8")
    if (even + odd) * 2 > controls + invalid:
        return _binary(f"{counted} are not text, mostly NUL bytes")
    return _binary(f"{counted} are not text")


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
    content = [line for line in lines if line.strip(_WHITESPACE)][:2]
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


def _iter_lines(stream: _Readable, cursor: _Cursor) -> Iterator[bytes | None]:
    """Yield each line, with its newline when it has one; ``None`` for a line over MAX_LINE_BYTES,
    which is not kept.

    ``cursor.line`` is the number of the line just yielded.
    """
    pending: list[bytes] = []
    pending_size = 0
    too_long = False
    while chunk := stream.read(CHUNK_BYTES):
        # BytesIO finds newlines with memchr: twice as fast as bytes.split, which steps byte by byte.
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


def _iter_ndjson(stream: _Readable, name: str, cursor: _Cursor) -> Iterator[Item]:
    """Newline-delimited JSON: each line is a record, or a /v1/batch body of records."""
    loads = _json.loads
    for line in _iter_lines(stream, cursor):
        if line is None:
            yield _too_long_line(_at(name, cursor.line))
            continue
        if line.isspace() or not line:
            continue
        try:
            value = loads(line)  # the newline is JSON whitespace
        except ValueError as exc:
            yield _bad_json(_at(name, cursor.line), line.removesuffix(b"\n"), exc)
            continue
        size = len(line) - 1 if line[-1] == _NEWLINE else len(line)
        stripped = line.strip(_WHITESPACE)
        # `in` with the byte as an int is a memchr; with b"\r" it costs 0.5 us on 1 KB.
        text = None if _CR in stripped else stripped
        if type(value) is dict and "batch" in value:
            yield from _expand(value, f"{name}:{cursor.line}", size, text)
        else:  # the usual line, one event: no generator to make
            yield Record(f"{name}:{cursor.line}", value, size, text)


def _bad_json(origin: str, text: bytes | str, exc: ValueError) -> BadRecord:
    """Why a text is not JSON, as plainly as the standard library can say it."""
    if isinstance(exc, _json.IntegerTooLongError):
        return BadRecord(origin, "too_large", str(exc))
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as bad:
            return BadRecord(origin, "invalid_utf8", f"not valid UTF-8 (byte {bad.start + 1})")
    if ESCAPED_BYTE.search(text):
        return BadRecord(origin, "invalid_utf8", "not valid UTF-8")
    try:
        _SCANNER.decode(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}" if error.lineno > 1 else f"column {error.colno}"
        return BadRecord(origin, "invalid_json", f"not valid JSON: {error.msg} ({where})")
    except (ValueError, RecursionError):
        pass
    # The standard library accepts a few things JSON does not: NaN, Infinity, huge exponents, lone
    # surrogate escapes. orjson names which; its words for NaN are vague, so say it plainly.
    reason = str(exc).split(": line ", 1)[0]
    if re.search(r"\b(NaN|-?Infinity)\b", text):
        reason = "NaN and Infinity are not JSON values"
    return BadRecord(origin, "invalid_json", f"not valid JSON: {reason}")


def _too_long_line(origin: str) -> BadRecord:
    return BadRecord(origin, "too_large", f"line longer than {MAX_LINE_BYTES // 1024} KiB; not read")


def _expand(value: Any, origin: str, size: int, text: bytes | None = None) -> Iterator[Item]:
    """A record (its ``text`` as read, if given), or the items of a /v1/batch body with the body's
    context and integrations filled in."""
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
                item.setdefault(key, shared_value)
        # The body's size bounds each item's: events.parse_event measures an item exactly when it matters.
        yield Record(f"{origin}[{index}]", item, size)


class _ValueReader:
    """Streams concatenated JSON values, splitting top-level arrays into their items.

    The standard library's ``raw_decode`` finds where each value ends in a text buffer that is
    refilled as needed, so a huge array never sits in memory whole; each value's text is then read
    by `_json.loads`, the same as an NDJSON line. A value that does not parse is given more text
    (doubling) until it does, the stream ends, or it passes MAX_DOCUMENT_CHARS.
    """

    def __init__(self, head: bytes, stream: _Readable, name: str, cursor: _Cursor, *, document: bool) -> None:
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
            if isinstance(item, BadRecord) and self._document and not self._yielded:
                # Not a document after all: read it again, line by line, from what is held.
                self._cursor.line = self._line - 1
                held = self._text.encode("utf-8", "surrogateescape")
                yield from _iter_ndjson(_Prefixed(held, self._stream), self._name, self._cursor)
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

    def _decode(self, origin: str) -> Record | BadRecord | None:
        """The next value as a record, a `BadRecord` for a value that is not JSON, or None when the
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
                return BadRecord(origin, "invalid_utf8", "not valid UTF-8")
            try:
                return Record(origin, _json.loads(text), len(text))
            except ValueError as exc:
                if isinstance(exc, _json.IntegerTooLongError):
                    self._yielded = True  # a whole JSON value was read: it is a document after all
                return _bad_json(origin, text, exc)

    def _broken(self) -> BadRecord:
        """Why the text cannot be read on, at the position reached."""
        origin = self._origin(self._pos)
        if self._bad_utf8 is not None and self._bad_utf8 <= len(self._text):
            return BadRecord(origin, "invalid_utf8", "not valid UTF-8; the rest of the file is not read")
        rest = self._text[self._pos :]
        if len(rest) > MAX_DOCUMENT_CHARS:
            mib = MAX_DOCUMENT_CHARS // (1024 * 1024)
            detail = f"a JSON value over {mib} MiB; write one event per line (NDJSON) instead"
            return BadRecord(origin, "too_large", f"{detail}; the rest of the file is not read")
        try:
            _SCANNER.decode(rest)
        except json.JSONDecodeError as error:
            line = self._line + error.lineno - 1
            detail = f"not valid JSON: {error.msg} (line {line}, column {error.colno})"
        except (ValueError, RecursionError):
            detail = "not valid JSON: nested too deeply"
        else:
            detail = "not valid JSON"
        return BadRecord(origin, "invalid_json", f"{detail}; the rest of the file is not read")

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
                yield BadRecord(
                    self._origin(self._pos - 1),
                    "invalid_json",
                    f"not valid JSON: expected ',' or ']' after array item {index - 1}, "
                    f"found {found}; the rest of the file is not read",
                )
                return False
