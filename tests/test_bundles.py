"""Segment's archives: the segment-logs tree, tar and zip bundles, and bundles that must be refused."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from segroute.models import Item, Note, Record, Rejected
from segroute.sources import iter_items
from tests.archives import SOURCE_ID, day_folder, layout, spread, tar_bytes, tar_with, write_tree, zip_bytes

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PLACEHOLDER = "a placeholder Segment's archive setup leaves: holds no events; not read"


@pytest.fixture(scope="module")
def archive_files(segment_events: list[dict[str, Any]]) -> dict[str, bytes]:
    """A three-day segment-logs tree of the official client's events."""
    return layout(spread(segment_events, START, days=3))


def read(*inputs: str | Path, stdin: bytes | None = None, **options: Any) -> list[Item]:
    stream = io.BytesIO(stdin) if stdin is not None else None
    return list(iter_items([str(name) for name in inputs], stdin=stream, **options))


def values(items: list[Item]) -> list[Any]:
    return [item.value for item in items if isinstance(item, Record)]


def problems(items: list[Item]) -> list[tuple[str, str, str]]:
    return [(item.origin, item.reason, item.detail) for item in items if isinstance(item, Rejected)]


def notes(items: list[Item]) -> list[tuple[str, str]]:
    return [(item.origin, item.message) for item in items if isinstance(item, Note)]


def test_a_tree_is_read_whole_from_its_root_or_any_folder_inside(
    tmp_path: Path, archive_files: dict[str, bytes], segment_events: list[dict[str, Any]]
) -> None:
    root = write_tree(tmp_path / "export", archive_files)
    [empty] = [name for name, content in archive_files.items() if not content]
    everything = read(root)
    assert problems(everything) == []
    assert sorted(event["messageId"] for event in values(everything)) == sorted(
        event["messageId"] for event in segment_events
    )
    # The traps: the placeholder and the empty file are notes; a .gz that is plain text and a
    # gzip file without .gz are read by their content.
    assert sorted(notes(everything)) == [
        (f"{root}/{empty}", "empty: holds no events"),
        (f"{root}/segment-logs/dummy-object.txt", PLACEHOLDER),
    ]
    for folder in ("segment-logs", f"segment-logs/{SOURCE_ID}"):
        assert values(read(root / folder)) == values(everything)
    first_day = sorted((root / "segment-logs" / SOURCE_ID).iterdir())[0]
    assert 0 < len(values(read(first_day))) < len(values(everything))


def test_origins_name_the_file_and_line(tmp_path: Path, archive_files: dict[str, bytes]) -> None:
    root = write_tree(tmp_path, archive_files)
    records = [item for item in read(root) if isinstance(item, Record)]
    day = sorted(name.split("/")[2] for name in archive_files if name.count("/") == 3)[0]
    assert records[0].origin == f"{root}/segment-logs/{SOURCE_ID}/{day}/{int(day) + 3_600_000}.0.gz:1"
    assert records[1].origin.endswith(".0.gz:2")


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_bundles_read_member_by_member_like_the_tree(
    tmp_path: Path, archive_files: dict[str, bytes], kind: str
) -> None:
    tree = values(read(write_tree(tmp_path / "tree", archive_files)))
    prefixed = {f"exports/2026/{name}": content for name, content in archive_files.items()}
    content = zip_bytes(prefixed) if kind == "zip" else tar_bytes(prefixed, compress=kind == "tar.gz")
    bundle = tmp_path / f"bundle.{kind}"
    bundle.write_bytes(content)
    items = read(bundle)
    assert problems(items) == []
    assert values(items) == tree
    first = next(item for item in items if isinstance(item, Record))
    day = day_folder(START)
    assert (
        first.origin == f"{bundle}!exports/2026/segment-logs/{SOURCE_ID}/{day}/{int(day) + 3_600_000}.0.gz:1"
    )
    assert (f"{bundle}!exports/2026/segment-logs/dummy-object.txt", notes(items)[0][1]) == notes(items)[0]
    # On stdin too: a zip is copied to a temporary file first, since it must seek.
    assert values(read("-", stdin=content)) == tree


def test_bundles_are_decided_by_content_not_name(tmp_path: Path, archive_files: dict[str, bytes]) -> None:
    tree = values(read(write_tree(tmp_path / "tree", archive_files)))
    (tmp_path / "download.bin").write_bytes(gzip.compress(tar_bytes(archive_files)))
    (tmp_path / "events.tar.gz").write_bytes(zip_bytes(archive_files))
    assert values(read(tmp_path / "download.bin")) == tree
    assert values(read(tmp_path / "events.tar.gz")) == tree


def test_nothing_is_extracted_to_disk(
    tmp_path: Path, archive_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "bundle.tgz"
    bundle.write_bytes(tar_bytes(archive_files, compress=True))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    assert values(read(bundle))
    assert list(scratch.iterdir()) == [] and sorted(tmp_path.iterdir()) == [bundle, scratch]


def test_day_folders_received_before_the_window_are_not_read(
    tmp_path: Path, archive_files: dict[str, bytes]
) -> None:
    root = write_tree(tmp_path / "tree", archive_files)
    days = sorted({name.split("/")[2] for name in archive_files if name.count("/") == 3})
    keep = days[1:]

    def skip(day: int) -> bool:
        return str(day) not in keep

    items = read(root, skip_day=skip)
    origins = {item.origin.split("/")[-2] for item in items if isinstance(item, Record)}
    assert origins == set(keep)
    assert (str(root), "1 day folder of events received before the selected time: not read") in notes(items)
    bundle = tmp_path / "bundle.tar"
    bundle.write_bytes(tar_bytes(archive_files))
    from_bundle = read(bundle, skip_day=skip)
    assert values(from_bundle) == values(items)
    assert (str(bundle), "1 day folder of events received before the selected time: not read") in notes(
        from_bundle
    )
    # A day folder named as the input is left unread too, with a note.
    skipped = read(root / "segment-logs" / SOURCE_ID / days[0], skip_day=skip)
    assert values(skipped) == [] and len(notes(skipped)) == 1


EVENT = b'{"type":"track","event":"x","userId":"u","messageId":"m1"}\n'


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("info", "why"),
    [
        (member("../../etc/cron.d/evil.jsonl"), "a path that climbs out with '..'"),
        (member("segment-logs/../../evil.jsonl"), "a path that climbs out with '..'"),
        (member("/etc/evil.jsonl"), "an absolute path"),
        (member("logs/link.jsonl", tarfile.SYMTYPE, "/etc/passwd"), "a symbolic link (to '/etc/passwd')"),
        (member("logs/hard.jsonl", tarfile.LNKTYPE, "events.jsonl"), "a hard link (to 'events.jsonl')"),
        (member("logs/tty", tarfile.CHRTYPE), "a device, pipe or other special file"),
        (member("logs/fifo", tarfile.FIFOTYPE), "a device, pipe or other special file"),
    ],
)
def test_hostile_tar_members_are_refused_and_reading_goes_on(
    tmp_path: Path, info: tarfile.TarInfo, why: str
) -> None:
    bundle = tmp_path / "hostile.tar"
    bundle.write_bytes(tar_with(member("a.jsonl"), info, member("b.jsonl"), content=EVENT))
    items = read(bundle)
    assert [item.origin for item in items if isinstance(item, Record)] == [
        f"{bundle}!a.jsonl:1",
        f"{bundle}!b.jsonl:1",
    ]
    assert problems(items) == [(f"{bundle}!{info.name}", "unsafe", f"refused: {why}; not read")]
    assert not (tmp_path.parent / "etc").exists()


def test_a_compression_bomb_is_refused_and_the_next_member_read(tmp_path: Path) -> None:
    zeros = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)
    bundle = tmp_path / "bomb.tar"
    bundle.write_bytes(tar_bytes({"bomb.jsonl.gz": zeros, "ok.jsonl": EVENT}))
    items = read(bundle)
    [(origin, reason, detail)] = problems(items)
    assert (origin, reason) == (f"{bundle}!bomb.jsonl.gz:1", "unsafe")
    assert detail.startswith(f"refused: expands {len(zeros)} bytes to over")
    assert "like a compression bomb; the rest is not read" in detail
    assert [item.origin for item in items if isinstance(item, Record)] == [f"{bundle}!ok.jsonl:1"]


def test_nested_gzip_layers_count_against_the_file(tmp_path: Path) -> None:
    bomb = bytes(40 * 1024 * 1024)
    for _ in range(3):
        bomb = gzip.compress(bomb, compresslevel=9)
    path = tmp_path / "layers.gz"
    path.write_bytes(bomb)
    [(_, reason, detail)] = problems(read(path))
    assert reason == "unsafe" and "compression bomb" in detail


def test_a_zip_member_that_claims_a_bomb_size_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("bomb.jsonl", bytes(32 * 1024 * 1024))
        bundle.writestr("ok.jsonl", EVENT)
    items = read(path)
    [(origin, reason, detail)] = problems(items)
    assert (origin, reason) == (f"{path}!bomb.jsonl", "unsafe")
    assert "like a compression bomb" in detail
    assert [item.origin for item in items if isinstance(item, Record)] == [f"{path}!ok.jsonl:1"]


def overlapping_zip() -> bytes:
    """One member's data named twice in the central directory: the overlap that zip bombs use."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("a.jsonl", EVENT * 100)
    data = buffer.getvalue()
    end = data.rindex(b"PK\x05\x06")
    central_start = struct.unpack("<I", data[end + 16 : end + 20])[0]
    entry = data[central_start:end]
    twin = entry.replace(b"a.jsonl", b"b.jsonl")
    directory = entry + twin
    trailer = bytearray(data[end:])
    struct.pack_into("<HHI", trailer, 8, 2, 2, len(directory))
    return data[:central_start] + directory + bytes(trailer)


def test_overlapping_zip_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "overlap.zip"
    path.write_bytes(overlapping_zip())
    assert zipfile.ZipFile(path).namelist() == ["a.jsonl", "b.jsonl"]
    items = read(path)
    assert values(items) == []
    [(origin, reason, detail)] = problems(items)
    assert (origin, reason) == (str(path), "unsafe")
    assert (
        detail
        == "refused: members overlap ('a.jsonl' and 'b.jsonl'), as in a zip bomb; the whole bundle; not read"
    )


def test_zip_symlinks_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "links.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        link = zipfile.ZipInfo("logs/link.jsonl")
        link.external_attr = (0o120777 << 16) | 0
        bundle.writestr(link, "/etc/passwd")
        bundle.writestr("../up.jsonl", EVENT)
        bundle.writestr("ok.jsonl", EVENT)
    items = read(path)
    assert problems(items) == [
        (f"{path}!logs/link.jsonl", "unsafe", "refused: a symbolic link; not read"),
        (f"{path}!../up.jsonl", "unsafe", "refused: a path that climbs out with '..'; not read"),
    ]
    assert len(values(items)) == 1


def zip_with_a_broken_first_member(broken: str) -> bytes:
    """A zip of a.jsonl, broken as named, then b.jsonl, sound: the flag of an encrypted member, a
    CRC-32 that does not match, compressed data that is not deflate, or compressed data cut to half
    its length (both headers agree)."""
    data = bytearray(zip_bytes({"a.jsonl": EVENT * 50, "b.jsonl": EVENT}))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("a.jsonl")
    local, central = info.header_offset, bytes(data).index(b"PK\x01\x02")  # a.jsonl's entry is first
    if broken == "encrypted":  # general purpose flag, bit 0
        struct.pack_into("<H", data, local + 6, info.flag_bits | 1)
        struct.pack_into("<H", data, central + 8, info.flag_bits | 1)
    elif broken == "bad CRC":
        struct.pack_into("<I", data, local + 14, info.CRC ^ 0xFFFFFFFF)
        struct.pack_into("<I", data, central + 16, info.CRC ^ 0xFFFFFFFF)
    elif broken == "garbled":  # the compressed data itself, from its first byte
        name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
        start = local + 30 + name_length + extra_length
        data[start : start + 16] = b"\xff" * 16
    else:  # truncated
        struct.pack_into("<I", data, local + 18, info.compress_size // 2)
        struct.pack_into("<I", data, central + 20, info.compress_size // 2)
    return bytes(data)


CUT_OFF = "read failed: the bundle is cut off or broken here (Bad CRC-32 for file 'a.jsonl')"


@pytest.mark.parametrize(
    ("broken", "origin", "detail"),
    [
        ("encrypted", "a.jsonl", "encrypted: segroute reads only unencrypted members"),
        ("bad CRC", "a.jsonl:1", CUT_OFF),
        ("truncated", "a.jsonl:1", CUT_OFF),
        (
            "garbled",
            "a.jsonl:1",
            "read failed: the bundle is cut off or broken here "
            "(Error -3 while decompressing data: invalid block type)",
        ),
    ],
    ids=["encrypted", "bad CRC", "truncated", "garbled"],
)
def test_an_encrypted_or_corrupt_zip_member_is_one_rejected_record_and_the_next_is_read(
    tmp_path: Path, broken: str, origin: str, detail: str
) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(zip_with_a_broken_first_member(broken))
    items = read(path)
    assert problems(items) == [(f"{path}!{origin}", "unreadable", detail)]
    assert [item.origin for item in items if isinstance(item, Record)] == [f"{path}!b.jsonl:1"]


def test_a_huge_tar_header_is_refused_without_reading_it(tmp_path: Path) -> None:
    bundle = tmp_path / "pax.tar"
    bundle.write_bytes(tar_with(member("a.jsonl"), member("x" * (2 * 1024 * 1024)), content=EVENT))
    items = read(bundle)
    assert len(values(items)) == 1
    [(origin, reason, detail)] = problems(items)
    assert (origin, reason) == (str(bundle), "unsafe")
    assert detail.startswith("refused: a tar header of ") and "the rest of the bundle; not read" in detail


def test_bundles_nest_two_deep_and_no_deeper(tmp_path: Path) -> None:
    inner = tar_bytes({"events.jsonl": EVENT})
    middle = tar_bytes({"inner.tar": inner})
    path = tmp_path / "outer.tar"
    path.write_bytes(tar_bytes({"middle.tar": middle, "inner.tar": inner}))
    items = read(path)
    assert [item.origin for item in items if isinstance(item, Record)] == [f"{path}!inner.tar!events.jsonl:1"]
    assert problems(items) == [
        (f"{path}!middle.tar!inner.tar", "unsafe", "refused: a tar bundle 2 bundles deep; not read")
    ]


def test_a_cut_off_bundle_keeps_what_came_before(tmp_path: Path) -> None:
    whole = tar_bytes({"a.jsonl": EVENT, "b.jsonl": EVENT * 2000})
    path = tmp_path / "cut.tar"
    path.write_bytes(whole[: 512 * 4])
    items = read(path)
    assert [item.origin for item in items if isinstance(item, Record)][0] == f"{path}!a.jsonl:1"
    assert problems(items)[-1][1] == "unreadable"


def test_not_a_bundle_after_all_is_read_as_events(tmp_path: Path) -> None:
    # Starts with PK but is not a zip; a 300-byte line that is not a tar header.
    path = tmp_path / "odd.txt"
    path.write_bytes(b"PK not a zip\n" + b"y" * 300 + b"\n")
    items = read(path)
    assert [reason for _, reason, _ in problems(items)] == ["invalid_json", "invalid_json"]


def test_dot_slash_names_hidden_members_and_macos_forks(tmp_path: Path) -> None:
    # `tar czf x.tgz .` names members ./...; Finder's zips carry __MACOSX/._* resource forks.
    path = tmp_path / "finder.zip"
    path.write_bytes(
        zip_bytes(
            {
                "./logs/events.jsonl": EVENT,
                "__MACOSX/logs/._events.jsonl": b"\x00\x05\x16\x07 binary",
                "logs/.DS_Store": b"\x00\x00\x00\x01Bud1",
            }
        )
    )
    items = read(path)
    assert problems(items) == [] and notes(items) == []
    assert [item.origin for item in items if isinstance(item, Record)] == [f"{path}!./logs/events.jsonl:1"]


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
"""The PNG signature and a 1x1 image's header chunk: what every PNG starts with."""


def test_a_png_in_a_bundle_is_one_record_naming_the_member(tmp_path: Path) -> None:
    path = tmp_path / "export.tar"
    path.write_bytes(tar_bytes({"a.jsonl": EVENT, "logs/chart.png": PNG, "b.jsonl": EVENT}))
    items = read(path)
    assert problems(items) == [
        (f"{path}!logs/chart.png", "binary", "not Segment events (binary: PNG image); not read")
    ]
    assert [item.origin for item in items if isinstance(item, Record)] == [
        f"{path}!a.jsonl:1",
        f"{path}!b.jsonl:1",
    ]


def document(first: str, kind: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip laid out as an office suite or a JDK writes it: ``first`` is its first member."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", kind) as bundle:
        bundle.writestr(first, "application/vnd.oasis.opendocument.text" if first == "mimetype" else "<x/>")
        bundle.writestr("word/document.xml", "<w:document/>")
        bundle.writestr("events.jsonl", EVENT)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("first", "what"),
    [
        ("[Content_Types].xml", "a Word/Excel/PowerPoint document (Office Open XML)"),
        ("mimetype", "an OpenDocument file or EPUB book"),
        ("META-INF/MANIFEST.MF", "a Java archive (JAR)"),
        ("META-INF/", "a Java archive (JAR)"),
    ],
)
def test_zip_documents_are_not_bundles(tmp_path: Path, first: str, what: str) -> None:
    path = tmp_path / "report.zip"
    path.write_bytes(document(first))
    detail = f"{what}, not a bundle of events; not read"
    assert read(path) == [Rejected(str(path), "binary", detail)]
    # Inside a bundle and on stdin too.
    outer = tmp_path / "outer.tar"
    outer.write_bytes(tar_bytes({"report.docx": document(first), "b.jsonl": EVENT}))
    items = read(outer)
    assert problems(items) == [(f"{outer}!report.docx", "binary", detail)]
    assert len(values(items)) == 1
    assert read("-", stdin=document(first)) == [Rejected("<stdin>", "binary", detail)]


def test_a_zip_whose_first_member_is_events_is_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "events.zip"
    path.write_bytes(zip_bytes({"events.jsonl": EVENT, "[Content_Types].xml": b"<x/>"}))
    items = read(path)
    assert len(values(items)) == 1
    assert problems(items) == [
        (f"{path}![Content_Types].xml:1", "invalid_json", "not valid JSON: Expecting value (column 1)")
    ]
