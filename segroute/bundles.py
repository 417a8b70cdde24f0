"""Tar and zip bundles, read member by member straight from the bundle: nothing is extracted to disk.

Members that look hostile are refused with a reason and the rest of the bundle is read: names that
would escape a folder (absolute, or with ``..``), links, devices, tar headers too large to hold, and
zip members that overlap one another or claim to expand like a compression bomb. How much the
content itself expands is watched by the reader (`streams.BombGuard`).

The bundle readers yield each `Member` to read, or a `Rejected` record for one refused; `sources`
reads the members.
"""

from __future__ import annotations

import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Generator, Iterator
from typing import IO, Any, NamedTuple

from segroute.models import Rejected
from segroute.names import display_name
from segroute.streams import EXPANSION_FLOOR, MAX_EXPANSION, Readable

__all__ = ["Member", "iter_tar", "iter_zip", "spool", "unsafe_name"]

MAX_TAR_HEADER_BYTES = 1024 * 1024
"""The largest pax or GNU long-name header read; tarfile holds these whole in memory."""
_DRIVE = re.compile(r"^[A-Za-z]:")


class Member(NamedTuple):
    """One member of a bundle to read. Its stream can be read until the next member is asked for."""

    stream: Readable
    name: str
    """Its name inside the bundle."""
    packed: int | None
    """Its compressed size when the bundle decompresses it (zip), else None."""


class _UnsafeBundleError(Exception):
    """A bundle that cannot be read on safely."""


def unsafe_name(name: str) -> str | None:
    """Why a member name would escape the folder it is unpacked in, or None when it would not."""
    if "\x00" in name:
        return "a name with a NUL byte"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "a path that climbs out with '..'"
    return None


def _refused(origin: str, why: str) -> Rejected:
    return Rejected(origin, "unsafe", f"refused: {why}; not read")


class _SafeTarInfo(tarfile.TarInfo):
    """Refuses extended headers too large to hold, before tarfile reads them whole into memory."""

    def _proc_member(self, tarfile: tarfile.TarFile) -> Any:
        if self.type in _LONG_HEADERS and self.size > MAX_TAR_HEADER_BYTES:
            raise _UnsafeBundleError(
                f"a tar header of {self.size} bytes (over {MAX_TAR_HEADER_BYTES // 1024} KiB)"
            )
        # tarfile documents _proc_member as the hook for subclasses; typeshed does not list it.
        return super()._proc_member(tarfile)  # type: ignore[misc]


_LONG_HEADERS = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


def iter_tar(stream: Readable, name: str) -> Generator[Member | Rejected, None, None]:
    """Every member of a tar stream, in order, read as it streams past (nothing is seeked)."""
    try:
        bundle = tarfile.open(fileobj=stream, mode="r|", tarinfo=_SafeTarInfo)  # type: ignore[call-overload]
    except tarfile.TarError as exc:
        yield Rejected(name, "unreadable", f"not a readable tar bundle: {exc}")
        return
    with bundle:
        members = iter(bundle)
        while True:
            try:
                member = next(members)
            except StopIteration:
                return
            except _UnsafeBundleError as exc:
                yield _refused(name, f"{exc}; the rest of the bundle")
                return
            except (tarfile.TarError, EOFError) as exc:
                detail = f"the tar bundle is cut off or corrupt ({exc}); the rest of it is not read"
                yield Rejected(name, "unreadable", detail)
                return
            yield from _tar_member(bundle, member, name)


def _tar_member(bundle: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> Iterator[Member | Rejected]:
    origin = f"{name}!{display_name(member.name)}"
    if member.isdir():
        return
    why = unsafe_name(member.name)
    if why is None:
        if member.issym() or member.islnk():
            kind = "a symbolic link" if member.issym() else "a hard link"
            why = f"{kind} (to {display_name(member.linkname)!r})"
        elif not member.isreg():
            why = "a device, pipe or other special file"
        elif member.issparse():
            why = "a sparse file"
    if why is not None:
        yield _refused(origin, why)
        return
    content = bundle.extractfile(member)
    if content is None:  # not a regular file after all
        yield _refused(origin, "not a regular file")
        return
    with content:
        yield Member(_Content(content), member.name, None)


def iter_zip(file: IO[bytes], name: str) -> Generator[Member | Rejected, None, None]:
    """Every member of a zip file, in the order of its central directory; the file must be seekable."""
    try:
        bundle = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield Rejected(name, "unreadable", f"not a readable zip bundle: {exc}")
        return
    with bundle:
        infos = bundle.infolist()
        overlap = _overlap(infos)
        if overlap is not None:
            yield _refused(name, f"members overlap ({overlap}), as in a zip bomb; the whole bundle")
            return
        for info in infos:
            yield from _zip_member(bundle, info, name)


def _zip_member(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> Iterator[Member | Rejected]:
    origin = f"{name}!{display_name(info.filename)}"
    if info.is_dir():
        return
    why = unsafe_name(info.filename)
    mode = info.external_attr >> 16
    if why is None and stat.S_ISLNK(mode):
        why = "a symbolic link"
    elif why is None and info.file_size > max(EXPANSION_FLOOR, MAX_EXPANSION * info.compress_size):
        why = f"it claims to expand {info.compress_size} bytes to {info.file_size}, like a compression bomb"
    if why is not None:
        yield _refused(origin, why)
        return
    if info.flag_bits & 0x1:
        yield Rejected(origin, "unreadable", "encrypted: segroute reads only unencrypted members")
        return
    try:
        content = bundle.open(info)
    except (zipfile.BadZipFile, NotImplementedError, OSError, ValueError) as exc:
        yield Rejected(origin, "unreadable", f"cannot read the member: {exc}")
        return
    with content:
        yield Member(_Content(content), info.filename, info.compress_size)


class _Content:
    """A member's bytes; a cut-off bundle, a bad checksum, compressed data that does not inflate or a
    broken entry becomes an OSError, the error every reader handles."""

    def __init__(self, content: IO[bytes]) -> None:
        self._content = content

    def read(self, size: int = -1, /) -> bytes:
        try:
            read1 = getattr(self._content, "read1", self._content.read)
            data: bytes = read1(size)
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise OSError(f"the bundle is cut off or broken here ({exc})") from exc
        return data


def _overlap(infos: list[zipfile.ZipInfo]) -> str | None:
    """Two members whose bytes overlap in the file, named; None when each has its own bytes."""
    # A member's bytes are at least its local header (30 bytes and the name) and its packed data.
    spans = sorted(
        (info.header_offset, info.header_offset + 30 + len(info.orig_filename) + info.compress_size, n)
        for n, info in enumerate(infos)
    )
    for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):
        if start < end:
            return f"{display_name(infos[first].filename)!r} and {display_name(infos[second].filename)!r}"
    return None


def spool(stream: Readable) -> IO[bytes]:
    """A stream copied to an unnamed temporary file (deleted on close), for a zip that must seek."""
    copy = tempfile.TemporaryFile()
    try:
        shutil.copyfileobj(stream, copy)
        copy.seek(0)
    except BaseException:
        copy.close()
        raise
    return copy
