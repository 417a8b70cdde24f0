"""Byte-stream layers under the readers: gzip, bytes put back, counting, and the bomb guard.

Every layer has the one method the readers use, ``read(size)``. `Gunzip` inflates gzip (several
members too) in bounded steps; `BombGuard` stops a decompressed stream that expands more than real
data does, against its own packed size or against everything read from the input (`Tally`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

__all__ = [
    "CHUNK_BYTES",
    "EXPANSION_FLOOR",
    "GZIP_ERRORS",
    "GZIP_MAGIC",
    "MAX_EXPANSION",
    "BombError",
    "BombGuard",
    "Counted",
    "Gunzip",
    "Prefixed",
    "Read1",
    "Readable",
    "Tally",
]

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 256 * 1024
MAX_INFLATE_BYTES = 4 * 1024 * 1024
"""The most one read decompresses, so a small gzip member cannot blow up in memory."""
MAX_EXPANSION = 200
"""Decompressed bytes allowed per compressed byte read. Segment's NDJSON packs about 10:1; a bomb
of zeros packs 1000:1 per gzip layer, and layers multiply."""
EXPANSION_FLOOR = 16 * 1024 * 1024
"""Bytes any input may decompress to before MAX_EXPANSION is checked."""


class Readable(Protocol):
    """Anything with ``read(size)``: a file, a member of a bundle, another layer."""

    def read(self, size: int = -1, /) -> bytes: ...


class Prefixed:
    """A stream with some bytes already read from it put back in front."""

    def __init__(self, prefix: bytes, stream: Readable) -> None:
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
try:  # python-isal (the ``fast`` extra): zlib's API, faster (docs/benchmarks.md, seventh pass)
    from isal import isal_zlib

    _decompressobj = isal_zlib.decompressobj
    _INFLATE_ERRORS = (zlib.error, cast(type[Exception], isal_zlib.error))
except ImportError:  # without the extra
    _decompressobj = zlib.decompressobj
    _INFLATE_ERRORS = (zlib.error,)


GZIP_ERRORS: tuple[type[Exception], ...] = (EOFError, *_INFLATE_ERRORS)


class Gunzip:
    """Streaming gzip (several members too) that hands out every byte before it reports a cut-off end.

    ``gzip.GzipFile`` drops the last block it decompressed when the file turns out to be truncated;
    here everything before the cut is read, then EOFError says what happened. Zero padding after the
    last member is allowed, as gzip allows it; other trailing bytes end the stream with a note.
    """

    def __init__(self, raw: Readable) -> None:
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


class Read1:
    """Reads hand back what is there (``read1``) instead of waiting for a full chunk, so events piped
    in a few at a time are processed as they come."""

    def __init__(self, stream: Any) -> None:
        self._read = stream.read1 if hasattr(stream, "read1") else stream.read

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self._read(size)
        return data


@dataclass
class Tally:
    """The bytes of one input: read from it, and produced by decompressing anything inside it."""

    raw: int = 0
    expanded: int = 0


class BombError(Exception):
    """A stream that expands far more than real data does."""

    def __init__(self, message: str, *, whole_input: bool) -> None:
        super().__init__(message)
        self.whole_input = whole_input


class BombGuard:
    """The decompressed side of a stream: refuses to go on once it has expanded like a bomb, at this
    level (against ``packed`` bytes) or across the whole input (against what was read from it)."""

    def __init__(self, stream: Readable, packed: Callable[[], int], tally: Tally) -> None:
        self._stream = stream
        self._packed = packed
        self._tally = tally
        self._out = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self._out += len(data)
        tally = self._tally
        tally.expanded += len(data)
        if self._out > EXPANSION_FLOOR and self._out > MAX_EXPANSION * self._packed():
            raise BombError(_bomb_detail(self._out, self._packed()), whole_input=False)
        if tally.expanded > EXPANSION_FLOOR and tally.expanded > MAX_EXPANSION * tally.raw:
            raise BombError(_bomb_detail(tally.expanded, tally.raw), whole_input=True)
        return data


def _bomb_detail(out: int, packed: int) -> str:
    return (
        f"expands {packed} bytes to over {out} and counting (more than {MAX_EXPANSION} times), "
        "like a compression bomb; the rest is not read"
    )


class Counted:
    """A stream that counts the bytes read from it; at the top of an input, into ``tally.raw`` too."""

    def __init__(self, stream: Readable, tally: Tally | None) -> None:
        self._stream = stream
        self._tally = tally
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        if self._tally is not None:
            self._tally.raw += len(data)
        return data
