"""Inputs -> a stream of JSON records, each with the place it came from.

The shape of an input is decided from its content, never from its name: gzip by its magic bytes,
a tar or zip bundle (read member by member, see `bundles`), then newline-delimited JSON, a JSON
array, one JSON document, or several concatenated ones. A ``/v1/batch`` body is expanded into its
items. Everything is read as a stream: memory holds one chunk and one record at a time, whatever the
size of the input.

Segment's raw-data archive is a tree ``[prefix/]segment-logs/<source-id>/<received-day>/<file>``;
folders and bundle members laid out that way can be left unread by day (see `iter_items`). A URL
(``s3://bucket/prefix/``) is read as a folder is, its objects listed and fetched by `buckets`.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, TextIO

from segroute.buckets import is_url
from segroute.errors import InputError
from segroute.jsontext import WHITESPACE, Cursor, at, iter_values
from segroute.models import Item, Note, Rejected
from segroute.names import display_name
from segroute.streams import (
    CHUNK_BYTES,
    GZIP_ERRORS,
    GZIP_MAGIC,
    BombError,
    BombGuard,
    Counted,
    Gunzip,
    Prefixed,
    Read1,
    Readable,
    Tally,
)

if TYPE_CHECKING:
    from segroute.buckets import Download, Listed
    from segroute.bundles import Member

__all__ = [
    "BINARY_SIGNATURES",
    "STDIN_NAME",
    "ReadMeter",
    "archive_day",
    "check_inputs",
    "iter_items",
    "iter_stream",
    "open_stdin",
]

MAX_GZIP_LAYERS = 3
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
TAR_HEADER_BYTES = 512
TAR_MAGIC_OFFSET = 257
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
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


def open_stdin(stdin: TextIO | None) -> BinaryIO | None:
    """The process's stdin as bytes, unbuffered, so a reader thread still blocked in it at exit holds
    no lock the interpreter needs to shut down; None when it is closed."""
    if stdin is None:
        return None
    try:
        return open(stdin.fileno(), "rb", buffering=0, closefd=False)
    except (OSError, ValueError, io.UnsupportedOperation):  # no real descriptor (tests)
        return stdin.buffer


def check_inputs(inputs: Iterable[str]) -> None:
    """Raise `InputError` for the first input that does not exist, before anything is read; a URL
    must name an object, or a prefix with objects under it, that the credentials can reach."""
    for name in inputs:
        if is_url(name):
            from segroute import buckets  # obstore loads only when a URL is named

            buckets.check_url(name)
        elif name != "-" and not os.path.exists(name):
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
        """The inputs' bytes; None when one is stdin or a URL."""
        self._done = 0
        self._state: _InputState | None = None

    @property
    def position(self) -> int:
        """Bytes read so far, to the line the readers have reached where that is known."""
        state = self._state
        return self._done + (0 if state is None else state.position())


def _size_of(inputs: Iterable[str]) -> int | None:
    total = 0
    for name in inputs:
        if name == "-" or is_url(name):
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
        state = _InputState(skip_day=skip_day)
        if meter is not None:
            meter._state = state
        yield from _iter_input(name, state, stdin)
        if meter is not None:
            meter._done += state.raw
            meter._state = None


def _iter_input(name: str, state: _InputState, stdin: BinaryIO | None) -> Iterator[Item]:
    if name == "-":
        if stdin is None:
            raise InputError("'-' names stdin, but stdin is closed")
        yield from _iter_stream(stdin, STDIN_NAME, state)
        return
    if is_url(name):
        yield from _iter_url(name, state)
        return
    path = Path(name)
    if not path.is_dir():
        yield from _iter_file(path, state)
        return
    if (day := archive_day(Path(os.path.abspath(path)).parts)) is not None and state.prune(day):
        yield state.pruned_note(display_name(name))
        return
    for entry in _walk(path, state):
        if isinstance(entry, Rejected):
            yield entry
        else:
            yield from _iter_file(entry, state)
    if state.pruned:
        yield state.pruned_note(display_name(name))


@dataclass
class _InputState(Tally):
    """What the readers of one input share: its bytes (`Tally`, the bomb guard's budget), the day
    filter, and the line the reading has reached."""

    skip_day: Callable[[int], bool] | None = None
    pruned: set[int] = field(default_factory=set)
    """Day folders left unread since the last note about them."""
    cursor: Cursor | None = None
    """The cursor of the stream being read at the top of the input (a file of a folder, say)."""
    stream_raw: int = 0
    stream_expanded: int = 0
    """``raw`` and ``expanded`` when that stream began."""

    def follow(self, cursor: Cursor) -> None:
        """Follow a new stream at the top of the input."""
        self.cursor, self.stream_raw, self.stream_expanded = cursor, self.raw, self.expanded

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

    def prune(self, day: int) -> bool:
        """Leave a day folder unread if the day filter says so; True when it is left (and counted)."""
        if self.skip_day is None or not self.skip_day(day):
            return False
        self.pruned.add(day)
        return True

    def pruned_note(self, origin: str) -> Note:
        count, self.pruned = len(self.pruned), set()
        folders = "day folder" if count == 1 else "day folders"
        return Note(origin, f"{count} {folders} of events received before the selected time: not read")


def _walk(folder: Path, state: _InputState) -> Iterator[Path | Rejected]:
    """Files below a folder in sorted order, leaving out hidden ones and not following folder links.

    A folder that cannot be listed is a `Rejected`, and the walk goes on. Day folders of a
    segment-logs tree that ``state`` skips are not entered.
    """
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        yield Rejected(display_name(str(folder)), "unreadable", f"cannot list folder: {exc.strerror or exc}")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            day = archive_day((entry.parent.parent.name, entry.parent.name, entry.name))
            if not entry.is_symlink() and (day is None or not state.prune(day)):
                yield from _walk(entry, state)
        elif entry.is_file():
            yield entry


def _iter_file(path: Path, state: _InputState) -> Iterator[Item]:
    name = display_name(str(path))
    if path.name in PLACEHOLDER_NAMES:
        yield _placeholder(name)
        return
    try:
        stream = path.open("rb")
    except OSError as exc:
        yield Rejected(name, "unreadable", f"cannot open: {exc.strerror or exc}")
        return
    with stream:
        yield from _iter_stream(stream, name, state)


def _iter_url(name: str, state: _InputState) -> Iterator[Item]:
    """An object store's URL: one object, or every object under a prefix, as a folder is read."""
    from segroute import buckets

    shown = display_name(name)
    bucket = buckets.open_bucket(name)
    try:
        found = bucket.find()
    except OSError as exc:
        yield Rejected(shown, "unreadable", str(exc))
        return
    to_read: Iterable[Listed | Item]
    if isinstance(found, buckets.Listed):
        # An object named outright is read whatever its name, as a file named outright is.
        to_read = [_placeholder(shown) if found.parts[-1] in PLACEHOLDER_NAMES else found]
    elif (day := archive_day(found.split("/"))) is not None and state.prune(day):
        yield state.pruned_note(shown)
        return
    else:
        enter = None if state.skip_day is None else (lambda parts: _enter_folder(parts, state))
        listed = bucket.walk(found, enter)
        to_read = (entry for entry in map(_object_entry, listed) if entry is not None)
    for entry in bucket.read_ahead(to_read, window=buckets.read_ahead_window()):
        if isinstance(entry, buckets.Download):
            yield from _iter_object(entry, state)
        else:
            yield entry
    if state.pruned:
        yield state.pruned_note(shown)


def _enter_folder(parts: tuple[str, ...], state: _InputState) -> bool:
    """Whether a folder of a bucket is listed: not hidden, nor a day folder the filter leaves."""
    day = archive_day(parts)
    return not parts[-1].startswith(".") and (day is None or not state.prune(day))


def _object_entry(entry: Listed | Rejected) -> Listed | Item | None:
    """What becomes of an object listed: read (itself), a note (a placeholder), or nothing (hidden)."""
    if isinstance(entry, Rejected):
        return entry
    if any(part.startswith(".") for part in entry.parts):
        return None
    if entry.parts[-1] in PLACEHOLDER_NAMES:
        return _placeholder(display_name(entry.url))
    return entry


def _iter_object(download: Download, state: _InputState) -> Iterator[Item]:
    origin = display_name(download.listed.url)
    try:
        stream = download.open()
    except OSError as exc:
        yield Rejected(origin, "unreadable", f"cannot open: {exc}")
        return
    yield from _iter_stream(stream, origin, state)


def _placeholder(origin: str) -> Note:
    return Note(origin, "a placeholder Segment's archive setup leaves: holds no events; not read")


def iter_stream(stream: Readable, name: str) -> Iterator[Item]:
    """Read one stream (a file's bytes, gzip'd or not, even twice, or a bundle) into records."""
    return _iter_stream(stream, name, _InputState())


def _iter_stream(
    stream: Readable, name: str, state: _InputState, *, depth: int = 0, packed: int | None = None
) -> Iterator[Item]:
    """Read a stream of an input: the input itself (``depth`` 0), or a member of a bundle ``depth``
    bundles deep, which its bundle decompressed from ``packed`` bytes (zip) or not (None, tar).

    The input itself is what the state counts bytes of and follows the line of.
    """
    top = depth == 0
    cursor = Cursor()
    if top:
        state.follow(cursor)
    counted = Counted(Read1(stream), state if top else None)
    source: Readable = counted
    layers: list[Gunzip] = []
    try:
        head = _read_head(source)
        while head.startswith(GZIP_MAGIC) and len(layers) < MAX_GZIP_LAYERS:
            layers.append(Gunzip(Prefixed(head, source)))
            source = layers[-1]
            head = _read_head(source)
        if layers or packed is not None:
            size = (lambda: packed) if packed is not None else (lambda: counted.count)
            source = BombGuard(Prefixed(head, source), size, state)
            head = _read_head(source)
        kind = _bundle_kind(head)
        if kind is None:
            yield from _iter_content(head, source, name, cursor)
        else:
            # A zip that is the input file itself, as it is on disk, is read in place.
            in_place = stream if top and not layers and _seekable(stream) else None
            yield from _iter_bundle(kind, Prefixed(head, source), in_place, name, state, depth)
    except BombError as exc:
        if exc.whole_input and not top:
            raise
        yield Rejected(at(name, cursor.line + 1), "unsafe", f"refused: {exc}")
        return
    except GZIP_ERRORS as exc:
        yield Rejected(at(name, cursor.line + 1), "unreadable", _gzip_problem(exc))
        return
    except OSError as exc:
        yield Rejected(at(name, cursor.line + 1), "unreadable", f"read failed: {exc.strerror or exc}")
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


def _read_head(stream: Readable) -> bytes:
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
    return head.lstrip(WHITESPACE)[:1] in (b"{", b"[") or head.startswith((UTF8_BOM, *UTF16_BOMS))


def _iter_bundle(
    kind: str, content: Readable, in_place: Readable | None, name: str, state: _InputState, depth: int
) -> Iterator[Item]:
    """The records of every member of a tar or zip bundle; ``in_place`` is the seekable file that is
    the bundle, when it can be read in place."""
    from segroute import bundles  # tarfile and zipfile load only when a bundle is read

    if depth >= MAX_BUNDLE_DEPTH:
        yield Rejected(name, "unsafe", f"refused: a {kind} bundle {depth} bundles deep; not read")
        return
    with contextlib.ExitStack() as stack:
        if kind == "tar":
            members = bundles.iter_tar(content, name)
        elif in_place is not None:
            file: IO[bytes] = in_place  # type: ignore[assignment]  # _seekable checked it is a file
            state.raw = max(state.raw, file.seek(0, io.SEEK_END))  # its size is what the input holds
            members = bundles.iter_zip(file, name)
        else:
            # zip needs to seek to its directory at the end: a zip that is streamed (stdin, a member of
            # a tar, gzip'd) is copied to an unnamed temporary file first.
            members = bundles.iter_zip(stack.enter_context(bundles.spool(content)), name)
        for member in stack.enter_context(contextlib.closing(members)):
            if isinstance(member, Rejected):
                yield member
            else:
                yield from _iter_member(member, name, state, depth)
    if state.pruned:
        yield state.pruned_note(name)


def _iter_member(member: Member, bundle: str, state: _InputState, depth: int) -> Iterator[Item]:
    """The records of one member, unless it is hidden, a placeholder, or in a day folder left unread."""
    origin = f"{bundle}!{display_name(member.name)}"
    parts = [part for part in member.name.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or any(part.startswith(".") or part in SKIPPED_FOLDERS for part in parts):
        return  # hidden, as in a folder walk; macOS's resource forks
    if parts[-1] in PLACEHOLDER_NAMES:
        yield _placeholder(origin)
        return
    day = archive_day(parts[:-1])
    if day is not None and state.prune(day):
        return
    yield from _iter_stream(member.stream, origin, state, depth=depth + 1, packed=member.packed)


def _seekable(stream: Readable) -> bool:
    try:
        return isinstance(stream, io.IOBase) and stream.seekable()
    except (OSError, ValueError):
        return False


def _gzip_problem(exc: Exception) -> str:
    if isinstance(exc, EOFError):
        return "truncated gzip stream: the file ends before the compressed data does"
    return f"corrupt gzip stream: {exc}"


def _iter_content(head: bytes, stream: Readable, name: str, cursor: Cursor) -> Iterator[Item]:
    if head.startswith(UTF16_BOMS):
        detail = "UTF-16 text (PowerShell's '>' writes it): convert it to UTF-8; the file is not read"
        yield Rejected(at(name, 1), "invalid_utf8", detail)
        return
    binary = _not_text(head)
    if binary is not None:
        yield Rejected(name, "binary", binary)
        return
    yield from iter_values(head.removeprefix(UTF8_BOM), stream, name, cursor)


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
