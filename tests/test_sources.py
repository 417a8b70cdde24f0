"""The readers: every shape from its content, streamed, with clear problems for bad input."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import random
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from segroute import _json
from segroute.errors import InputError
from segroute.jsontext import MAX_LINE_BYTES
from segroute.models import Item, Note, Record, Rejected
from segroute.sources import BINARY_SIGNATURES, ReadMeter, check_inputs, iter_items, iter_stream
from segroute.streams import CHUNK_BYTES


def read_bytes(data: bytes, name: str = "in.json") -> list[Item]:
    return list(iter_stream(io.BytesIO(data), name))


def records(items: list[Item]) -> list[tuple[str, Any]]:
    return [(item.origin, item.value) for item in items if isinstance(item, Record)]


def ndjson(events: list[Any]) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


def test_ndjson_lines_are_records_named_by_line() -> None:
    data = b'{"type":"track","n":1}\n\n  \n{"type":"identify","n":2}\n'
    assert records(read_bytes(data, "a.jsonl")) == [
        ("a.jsonl:1", {"type": "track", "n": 1}),
        ("a.jsonl:4", {"type": "identify", "n": 2}),
    ]


def test_crlf_bom_and_no_final_newline() -> None:
    data = b'\xef\xbb\xbf{"n":1}\r\n{"n":2}'
    assert records(read_bytes(data)) == [("in.json:1", {"n": 1}), ("in.json:2", {"n": 2})]


def test_a_line_keeps_its_text_as_read_when_it_is_one_whole_value() -> None:
    data = (
        b'\xef\xbb\xbf {"n": 1}\t\r\n'  # a BOM, spaces, a tab and CRLF around the value: not its text
        b'{"n":\r2}\n'  # a carriage return inside: some readers would break the line there
        b'[{"n":3}]\n'  # in NDJSON, a line that is an array is one value (events.py rejects it)
        b'{"batch":[{"n":4}]}\n'  # the events of a batch body have no line of their own
        b'{"n":5}'
    )
    texts = [(item.origin, item.text) for item in read_bytes(data) if isinstance(item, Record)]
    assert texts == [
        ("in.json:1", b'{"n": 1}'),
        ("in.json:2", None),
        ("in.json:3", b'[{"n":3}]'),
        ("in.json:4[0]", None),
        ("in.json:5", b'{"n":5}'),
    ]


def test_record_size_is_the_line_length() -> None:
    line = b'{"type":"track","pad":"' + b"x" * 40_000 + b'"}'
    (item,) = read_bytes(line + b"\n")
    assert isinstance(item, Record)
    assert item.size == len(line)


def test_one_pretty_printed_object_is_one_record() -> None:
    event = {"type": "track", "event": "A", "properties": {"x": [1, 2]}}
    data = json.dumps(event, indent=2).encode()
    assert records(read_bytes(data)) == [("in.json:1", event)]


def test_concatenated_pretty_printed_objects() -> None:
    data = b'{\n  "n": 1\n}\n{\n  "n": 2\n}\n'
    assert records(read_bytes(data)) == [("in.json:1", {"n": 1}), ("in.json:4", {"n": 2})]


def test_array_items_are_named_by_line_and_index() -> None:
    data = b'[\n  {"n": 0},\n  {"n": 1},\n\n  {"n": 2}\n]\n'
    assert records(read_bytes(data)) == [
        ("in.json:2[0]", {"n": 0}),
        ("in.json:3[1]", {"n": 1}),
        ("in.json:5[2]", {"n": 2}),
    ]


def test_empty_array_and_array_of_non_objects() -> None:
    assert read_bytes(b"[]") == [Note("in.json:1", "an empty array: holds no events")]
    assert records(read_bytes(b'[1, "x", null]')) == [
        ("in.json:1[0]", 1),
        ("in.json:1[1]", "x"),
        ("in.json:1[2]", None),
    ]


def test_batch_body_context_and_integrations_merge_into_each_item_its_own_keys_winning() -> None:
    body = {
        "batch": [
            {"type": "track", "event": "A", "userId": "u"},
            {
                "type": "track",
                "event": "B",
                "userId": "u",
                "context": {"own": True, "ip": "5.6.7.8", "library": {"name": "mine"}},
                "integrations": {"Courier": True},
            },
            {"type": "track", "event": "C", "userId": "u", "context": "not an object"},
        ],
        "context": {"ip": "1.2.3.4", "library": {"name": "analytics-python", "version": "2.3.3"}},
        "integrations": {"All": False},
        "sentAt": "2026-11-02T10:00:00Z",
    }
    got = records(read_bytes(json.dumps(body).encode()))
    shared_context = {"ip": "1.2.3.4", "library": {"name": "analytics-python", "version": "2.3.3"}}
    assert got == [
        (
            "in.json:1[0]",
            {
                "type": "track",
                "event": "A",
                "userId": "u",
                "context": shared_context,
                "integrations": {"All": False},
            },
        ),
        (
            "in.json:1[1]",
            {
                "type": "track",
                "event": "B",
                "userId": "u",
                # One level deep: the item's library replaces the body's whole.
                "context": {"own": True, "ip": "5.6.7.8", "library": {"name": "mine"}},
                "integrations": {"Courier": True, "All": False},
            },
        ),
        (
            "in.json:1[2]",
            {
                "type": "track",
                "event": "C",
                "userId": "u",
                "context": "not an object",
                "integrations": {"All": False},
            },
        ),
    ]
    # The item's own keys first, in their order; the body's after them.
    assert list(got[1][1]["context"]) == ["own", "ip", "library"]
    assert list(got[1][1]["integrations"]) == ["Courier", "All"]


def test_an_event_with_a_batch_key_is_not_a_batch() -> None:
    event = {"type": "track", "event": "A", "batch": [1, 2]}
    assert records(read_bytes(json.dumps(event).encode())) == [("in.json:1", event)]


def test_real_client_batch_bodies_in_every_shape(
    tmp_path: Path, segment_bodies: list[dict[str, Any]]
) -> None:
    """Bodies the official client posted: one per file, pretty or not, as NDJSON, gzip'd, in an array."""
    expected = [item for body in segment_bodies for item in body["batch"]]
    (tmp_path / "a-pretty").mkdir()
    for n, body in enumerate(segment_bodies):
        (tmp_path / "a-pretty" / f"{n:03}.json").write_text(json.dumps(body, indent=2))
    (tmp_path / "b.ndjson").write_bytes(ndjson(segment_bodies))
    (tmp_path / "c.bin").write_bytes(gzip.compress(ndjson(segment_bodies)))
    (tmp_path / "d.json").write_text(json.dumps(segment_bodies))
    for name in ("a-pretty", "b.ndjson", "c.bin", "d.json"):
        got = [item for item in iter_items([str(tmp_path / name)]) if isinstance(item, Record)]
        assert [item.value for item in got] == expected, name


def test_gzip_is_decided_by_magic_bytes_not_the_name(tmp_path: Path) -> None:
    (tmp_path / "plain.gz").write_bytes(b'{"n":1}\n')
    (tmp_path / "zipped.txt").write_bytes(gzip.compress(b'{"n":2}\n'))
    got = records(list(iter_items([str(tmp_path / "plain.gz"), str(tmp_path / "zipped.txt")])))
    assert got == [(f"{tmp_path}/plain.gz:1", {"n": 1}), (f"{tmp_path}/zipped.txt:1", {"n": 2})]


def test_folders_are_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    for rel in ("b/2.json", "b/1.json", "a.json", "c/d/e.json", ".hidden.json", ".git/x.json"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"file": rel}))
    got = [value["file"] for _, value in records(list(iter_items([str(tmp_path)])))]
    assert got == ["a.json", "b/1.json", "b/2.json", "c/d/e.json"]


def test_stdin() -> None:
    got = records(list(iter_items(["-"], stdin=io.BytesIO(b'{"n":1}\n'))))
    assert got == [("<stdin>:1", {"n": 1})]


@pytest.mark.parametrize("data", [b"", b"  \n\n\t", gzip.compress(b""), gzip.compress(b"\n\n")])
def test_empty_inputs_are_a_note(data: bytes) -> None:
    assert read_bytes(data, "e.json") == [Note("e.json", "empty: holds no events")]


def test_invalid_utf8_line_is_named_and_the_run_goes_on() -> None:
    data = b'{"n":1}\n{"name":"caf\xe9"}\n{"n":3}\n'
    items = read_bytes(data)
    assert items[1] == Rejected("in.json:2", "invalid_utf8", "not valid UTF-8 (byte 13)")
    assert records(items) == [("in.json:1", {"n": 1}), ("in.json:3", {"n": 3})]


def test_invalid_json_line_is_named_and_the_run_goes_on() -> None:
    items = read_bytes(b'{"n":1}\n{"n": 2,}\n{"n":3}\n')
    assert items[1] == Rejected(
        "in.json:2",
        "invalid_json",
        "not valid JSON: Expecting property name enclosed in double quotes (column 9)",
    )
    assert len(records(items)) == 2


def test_a_broken_first_line_does_not_hide_the_rest() -> None:
    items = read_bytes(b'{"n": \n{"n":2}\n{"n":3}\n')
    assert isinstance(items[0], Rejected) and items[0].origin == "in.json:1"
    assert records(items) == [("in.json:2", {"n": 2}), ("in.json:3", {"n": 3})]


def test_truncated_gzip_keeps_what_was_read_and_names_the_problem() -> None:
    whole = gzip.compress(ndjson([{"n": n, "pad": "x" * 50} for n in range(2000)]))
    items = read_bytes(whole[: len(whole) // 2], "t.gz")
    bad = [item for item in items if isinstance(item, Rejected)]
    assert len(bad) == 1
    assert bad[0].reason == "unreadable"
    assert bad[0].detail == "truncated gzip stream: the file ends before the compressed data does"
    good = records(items)
    assert 0 < len(good) < 2000
    assert [value["n"] for _, value in good] == list(range(len(good)))


def test_corrupt_gzip_is_named() -> None:
    data = gzip.compress(b'{"n":1}\n' * 100)
    corrupt = data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]  # a wrong CRC-32
    # The check fails in the read that decompresses the last block, so that block is not trusted.
    [problem] = read_bytes(corrupt)
    assert isinstance(problem, Rejected)
    assert (problem.origin, problem.reason) == ("in.json:1", "unreadable")
    # zlib says "incorrect data check", python-isal (the fast extra) "Incorrect checksum found".
    assert problem.detail.startswith("corrupt gzip stream: ") and "check" in problem.detail.lower()


def test_a_10_mb_line_is_rejected_without_stopping_the_run() -> None:
    huge = b'{"type":"track","pad":"' + b"x" * (10 * 1024 * 1024) + b'"}'
    items = read_bytes(b'{"n":1}\n' + huge + b'\n{"n":3}\n')
    assert items[1] == Rejected("in.json:2", "too_large", "line longer than 1024 KiB; not read")
    assert records(items) == [("in.json:1", {"n": 1}), ("in.json:3", {"n": 3})]


def test_a_huge_last_line_without_newline() -> None:
    items = read_bytes(b'{"n":1}\n' + b"x" * (MAX_LINE_BYTES + 10))
    assert items[1] == Rejected("in.json:2", "too_large", "line longer than 1024 KiB; not read")


def test_a_broken_array_stops_that_file_with_a_clear_message() -> None:
    items = read_bytes(b'[{"n":0},\n {"n":1} {"n":2}]')
    assert records(items) == [("in.json:1[0]", {"n": 0}), ("in.json:2[1]", {"n": 1})]
    bad = items[-1]
    assert isinstance(bad, Rejected)
    assert bad.reason == "invalid_json"
    assert bad.detail == (
        "not valid JSON: expected ',' or ']' after array item 1, found '{'; the rest of the file is not read"
    )


def test_an_unterminated_array_is_named() -> None:
    items = read_bytes(b'[{"n":0}, {"n":')
    assert records(items) == [("in.json:1[0]", {"n": 0})]
    assert isinstance(items[-1], Rejected) and items[-1].reason == "invalid_json"


def test_nan_is_not_json_and_the_array_goes_on() -> None:
    items = read_bytes(b'[{"n": NaN}, {"n": 1e400}, {"s": "\\ud800"}, {"n": 2}]')
    assert items == [
        Rejected("in.json:1[0]", "invalid_json", "not valid JSON: NaN and Infinity are not JSON values"),
        Rejected("in.json:1[1]", "invalid_json", "not valid JSON: number is infinity when parsed as double"),
        Rejected("in.json:1[2]", "invalid_json", "not valid JSON: no low surrogate in string"),
        Record("in.json:1[3]", {"n": 2}, 8),
    ]


def test_invalid_utf8_inside_an_array_is_named_and_the_array_goes_on() -> None:
    items = read_bytes(b'[{"n":0},\n{"s":"\xff"}, {"n": 2},\n{"t":"\xfe"}, {"n": 4}]')
    assert items == [
        Record("in.json:1[0]", {"n": 0}, 7),
        Rejected("in.json:2[1]", "invalid_utf8", "not valid UTF-8"),
        Record("in.json:2[2]", {"n": 2}, 8),
        Rejected("in.json:3[3]", "invalid_utf8", "not valid UTF-8"),
        Record("in.json:3[4]", {"n": 4}, 8),
    ]


def test_arrays_and_documents_larger_than_a_chunk() -> None:
    events = [{"type": "track", "n": n, "pad": "é" * 300} for n in range(3000)]
    text = json.dumps(events, indent=1, ensure_ascii=False).encode()
    assert len(text) > 4 * CHUNK_BYTES
    assert [value for _, value in records(read_bytes(text))] == events
    body = json.dumps({"batch": events[:1000], "sentAt": "x"}, indent=2).encode()
    assert len(body) > 2 * CHUNK_BYTES
    assert [value for _, value in records(read_bytes(body))] == events[:1000]


class CountingStream(io.RawIOBase):
    """An endless NDJSON stream that counts the bytes handed out."""

    def __init__(self) -> None:
        self.handed_out = 0
        self.line = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        out = bytearray()
        while len(out) < max(size, 1):
            self.line += 1
            out += json.dumps({"type": "track", "n": self.line}).encode() + b"\n"
        self.handed_out += len(out)
        return bytes(out)


def test_reading_is_lazy_on_an_endless_stream() -> None:
    stream = CountingStream()
    items = iter_stream(stream, "endless")
    for _ in range(100_000):
        next(items)
    # 100k records read, yet no more than a few chunks were ever pulled from the stream ahead of them.
    per_line = len(b'{"type": "track", "n": 100000}\n')
    assert stream.handed_out < 100_000 * per_line + 4 * CHUNK_BYTES


def test_missing_inputs_are_named_before_anything_is_read(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    check_inputs([str(tmp_path / "a.json"), "-"])
    with pytest.raises(InputError, match="nope.json: no such file or directory"):
        check_inputs([str(tmp_path / "a.json"), str(tmp_path / "nope.json")])


def test_a_file_that_vanishes_before_it_is_read_is_a_bad_record(tmp_path: Path) -> None:
    gone = tmp_path / "gone.json"
    items = list(iter_items([str(gone), "-"], stdin=io.BytesIO(b'{"n":1}')))
    assert items == [
        Rejected(str(gone), "unreadable", "cannot open: No such file or directory"),
        Record("<stdin>:1", {"n": 1}, 7, b'{"n":1}'),
    ]


def test_concatenated_gzip_members() -> None:
    data = gzip.compress(b'{"n":1}\n') + gzip.compress(b'{"n":2}\n')
    assert records(read_bytes(data)) == [("in.json:1", {"n": 1}), ("in.json:2", {"n": 2})]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
events_strategy = st.lists(
    st.dictionaries(st.text(max_size=10), json_values, max_size=6).map(lambda d: {"type": "track", **d}),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(
    events=events_strategy,
    shape=st.sampled_from(["ndjson", "array", "pretty", "batch", "pretty-batch"]),
    zipped=st.booleans(),
)
def test_every_shape_reads_back_the_same_events(
    events: list[dict[str, Any]], shape: str, zipped: bool
) -> None:
    if shape == "ndjson":
        data = ndjson(events)
    elif shape == "array":
        data = json.dumps(events, ensure_ascii=False).encode()
    elif shape == "pretty":
        data = json.dumps(events, indent=2).encode()
    else:
        body = {"batch": events, "sentAt": "2026-11-02T10:00:00Z"}
        data = json.dumps(body, indent=2 if shape == "pretty-batch" else None).encode()
    if zipped:
        data = gzip.compress(data)
    items = read_bytes(data)
    assert all(isinstance(item, Record) for item in items)
    assert [value for _, value in records(items)] == events


def test_a_nul_byte_or_utf16_is_a_clear_rejection() -> None:
    items = read_bytes(b'\x00{"type":"track"}\n{"n":2}\n')
    assert items[0] == Rejected("in.json:1", "invalid_json", "not valid JSON: Expecting value (column 1)")
    assert records(items) == [("in.json:2", {"n": 2})]
    utf16 = '{"type": "track"}\n'.encode("utf-16")
    assert read_bytes(utf16) == [
        Rejected(
            "in.json:1",
            "invalid_utf8",
            "UTF-16 text (PowerShell's '>' writes it): convert it to UTF-8; the file is not read",
        )
    ]


def test_a_broken_first_line_that_looks_like_a_document_start_loses_nothing() -> None:
    good = [{"type": "track", "n": n} for n in range(500)]
    data = b'{"type":"track","properties":{\n' + ndjson(good)
    items = read_bytes(data)
    assert items[0] == Rejected(
        "in.json:1",
        "invalid_json",
        "not valid JSON: Expecting property name enclosed in double quotes (column 31)",
    )
    assert [value for _, value in records(items)] == good
    assert records(items)[0][0] == "in.json:2"


def test_two_broken_first_lines_fall_back_to_lines() -> None:
    data = b'{"a":\n{"b":\n{"n":3}\n{"n":4}\n'
    items = read_bytes(data)
    assert [item.origin for item in items] == ["in.json:1", "in.json:2", "in.json:3", "in.json:4"]
    assert records(items) == [("in.json:3", {"n": 3}), ("in.json:4", {"n": 4})]


def test_an_object_split_over_lines_anywhere() -> None:
    data = b'{"type": "track", "event": "A",\n "userId": "u", "messageId": "p1"}\n'
    assert records(read_bytes(data)) == [
        ("in.json:1", {"type": "track", "event": "A", "userId": "u", "messageId": "p1"})
    ]


def test_big_integers_are_kept_exactly_in_every_shape() -> None:
    line = b'{"type":"track","n":18446744073709551616,"m":-9223372036854775809}'
    for data in (line + b"\n", b"[" + line + b"]", b"{\n" + line[1:]):
        ((_, value),) = records(read_bytes(data))
        assert (value["n"], value["m"]) == (18446744073709551616, -9223372036854775809)


def test_json_the_fast_reader_refuses_but_json_allows_is_still_read() -> None:
    # msgspec stops at Python's recursion limit (1000 levels); orjson goes to 1024.
    deep = b"[" * 1010 + b"]" * 1010
    ((_, value),) = records(read_bytes(b'{"type":"track","deep":' + deep + b"}\n"))
    depth, inner = 0, value["deep"]
    while inner:
        depth, inner = depth + 1, inner[0]
    assert depth == 1009
    # With a big integer too, the standard library would have to read it: rejected, and the run goes on.
    items = read_bytes(b'{"deep":' + deep + b',"n":18446744073709551616}\n{"n":1}\n')
    assert items == [
        Rejected(
            "in.json:1", "invalid_json", "not valid JSON: nested too deeply to read its big integers exactly"
        ),
        Record("in.json:2", {"n": 1}, 7, b'{"n":1}'),
    ]


def test_leading_blank_lines_are_counted_not_kept() -> None:
    data = b"\n" * (3 * CHUNK_BYTES) + b'{"n":1}\n'
    assert records(read_bytes(data)) == [(f"in.json:{3 * CHUNK_BYTES + 1}", {"n": 1})]


def test_gzip_inside_gzip_and_zero_padding() -> None:
    inner = gzip.compress(b'{"n":1}\n')
    assert records(read_bytes(gzip.compress(inner))) == [("in.json:1", {"n": 1})]
    assert read_bytes(inner + b"\x00" * 1000) == [Record("in.json:1", {"n": 1}, 7, b'{"n":1}')]


def test_bytes_after_the_gzip_data_are_a_note() -> None:
    items = read_bytes(gzip.compress(b'{"n":1}\n') + b"trailing junk")
    assert items == [
        Record("in.json:1", {"n": 1}, 7, b'{"n":1}'),
        Note("in.json", "bytes after the end of the gzip data were not read"),
    ]


def test_an_empty_batch_is_a_note() -> None:
    assert read_bytes(b'{"batch": [], "sentAt": "x"}') == [
        Note("in.json:1", "a /v1/batch body with no events")
    ]


def test_a_folder_that_cannot_be_listed_is_a_bad_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.json").write_text('{"n":1}')
    (tmp_path / "b").mkdir()
    (tmp_path / "c.json").write_text('{"n":3}')
    real_iterdir = Path.iterdir

    def iterdir(self: Path) -> Any:
        if self.name == "b":
            raise PermissionError(13, "Permission denied")
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    items = list(iter_items([str(tmp_path)]))
    assert items == [
        Record(f"{tmp_path}/a/1.json:1", {"n": 1}, 7, b'{"n":1}'),
        Rejected(f"{tmp_path}/b", "unreadable", "cannot list folder: Permission denied"),
        Record(f"{tmp_path}/c.json:1", {"n": 3}, 7, b'{"n":3}'),
    ]


def test_names_that_are_not_utf8_or_hold_control_characters_are_shown_escaped(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path)
    with open(folder + b"/bad\xff.json", "wb") as out:
        out.write(b'{"n":1}')
    with open(folder + b"/new\nline.json", "wb") as out:
        out.write(b'{"n":2}')
    origins = [item.origin for item in iter_items([str(tmp_path)])]
    assert origins == [f"{tmp_path}/bad\\xff.json:1", f"{tmp_path}/new\\nline.json:1"]


# --- files that are not text ------------------------------------------------------------------------


def png_image(width: int = 360, height: int = 280) -> bytes:
    """A real PNG: noisy RGB pixels, so it holds every byte value, as photos do."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    noise = random.Random(1)
    rows = b"".join(b"\x00" + noise.randbytes(3 * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG_DETAIL = "not Segment events (binary: PNG image); not read"


def test_a_png_is_one_binary_record_however_it_arrives(tmp_path: Path) -> None:
    png = png_image()
    assert len(png) > CHUNK_BYTES
    assert read_bytes(png, "photo.json") == [Rejected("photo.json", "binary", PNG_DETAIL)]
    assert read_bytes(gzip.compress(png), "photo.gz") == [Rejected("photo.gz", "binary", PNG_DETAIL)]
    assert list(iter_items(["-"], stdin=io.BytesIO(png))) == [Rejected("<stdin>", "binary", PNG_DETAIL)]
    (tmp_path / "a.png").write_bytes(png)
    (tmp_path / "b.jsonl").write_bytes(b'{"n":1}\n')
    assert list(iter_items([str(tmp_path)])) == [
        Rejected(f"{tmp_path}/a.png", "binary", PNG_DETAIL),
        Record(f"{tmp_path}/b.jsonl:1", {"n": 1}, 7, b'{"n":1}'),
    ]


class RandomStream(io.RawIOBase):
    """Endless random bytes (seeded) that counts the bytes handed out."""

    def __init__(self) -> None:
        self.random = random.Random(7)
        self.handed_out = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        data = self.random.randbytes(size if size > 0 else CHUNK_BYTES)
        self.handed_out += len(data)
        return data


def test_random_bytes_are_one_binary_record_and_the_rest_is_not_read() -> None:
    data = random.Random(7).randbytes(1024 * 1024)
    detail = "not Segment events (binary: 53% of its first 262,144 bytes are not text); not read"
    assert read_bytes(data) == [Rejected("in.json", "binary", detail)]
    stream = RandomStream()
    assert list(iter_stream(stream, "endless")) == [Rejected("endless", "binary", detail)]
    assert stream.handed_out == CHUNK_BYTES
    # NUL bytes at the start are not counted.
    assert read_bytes(b"\x00" * 1000 + data) == [
        Rejected(
            "in.json",
            "binary",
            "not Segment events (binary: 53% of the 261,144 bytes after the NUL bytes it starts with are "
            "not text); not read",
        )
    ]


def sqlite_database(tmp_path: Path) -> bytes:
    path = tmp_path / "events.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("create table events (body text)")
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01", "JPEG image"),
        (b"GIF89a\x01\x00\x01\x00\x80\x00\x00", "GIF image"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF document"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "RIFF media: a WebP image, WAV sound or AVI video"),
        (b"\x7fELF\x02\x01\x01\x00", "ELF executable"),
        (b"\xcf\xfa\xed\xfe\x07\x00\x00\x01", "Mach-O executable"),
        (b"MZ\x90\x00\x03\x00\x00\x00", "Windows executable"),
        (b"PAR1\x15\x04\x15\x10", "Parquet file"),
        (b"7z\xbc\xaf\x27\x1c\x00\x04", "7z archive"),
    ],
)
def test_known_binary_signatures(content: bytes, what: str) -> None:
    # Followed by text, to show the signature alone decides.
    data = content + ndjson([{"type": "track", "n": n} for n in range(100)])
    assert read_bytes(data) == [
        Rejected("in.json", "binary", f"not Segment events (binary: {what}); not read")
    ]


def test_a_sqlite_database_is_one_binary_record(tmp_path: Path) -> None:
    detail = "not Segment events (binary: SQLite database); not read"
    assert read_bytes(sqlite_database(tmp_path)) == [Rejected("in.json", "binary", detail)]


@pytest.mark.parametrize(
    ("compress", "tool"),
    [
        (bz2.compress, "bzip2"),
        (lzma.compress, "xz"),
        (lambda data: b"\x28\xb5\x2f\xfd\x24\x00" + data, "zstd"),  # a zstd frame's magic number
    ],
)
def test_other_compressions_say_how_to_read_them(compress: Any, tool: str) -> None:
    events = ndjson([{"type": "track", "n": n} for n in range(100)])
    detail = (
        f"{tool}-compressed data: segroute reads gzip; decompress it first, "
        f"e.g. {tool} -dc FILE | segroute send -"
    )
    assert read_bytes(compress(events), "e.jsonl.x") == [Rejected("e.jsonl.x", "binary", detail)]


def test_the_signature_table_has_one_entry_per_prefix() -> None:
    prefixes = [prefix for prefix, _ in BINARY_SIGNATURES]
    assert len(prefixes) == len(set(prefixes))
    # None of them can start JSON text or a gzip stream.
    assert not any(prefix[:1] in b" \t\r\n{[\xef\x1f" for prefix in prefixes)


def test_utf16_without_a_byte_order_mark_and_nul_heavy_data() -> None:
    utf16 = '{"type": "track", "event": "Signed Up"}\n'.encode("utf-16-le") * 20
    assert read_bytes(utf16) == [
        Rejected(
            "in.json",
            "binary",
            "not Segment events (binary: every other byte is NUL, as in UTF-16 text without a byte order "
            "mark: convert that to UTF-8); not read",
        )
    ]
    sparse = (b"\x01" + b"\x00" * 7) * 1000
    assert read_bytes(sparse) == [
        Rejected(
            "in.json",
            "binary",
            "not Segment events (binary: 100% of its first 8,000 bytes are not text, mostly NUL bytes); "
            "not read",
        )
    ]


def test_text_in_a_legacy_encoding_is_named_as_not_utf8() -> None:
    line = '{"type": "track", "event": "Вход", "properties": {"город": "Москва"}}\n'.encode("cp1251")
    assert read_bytes(line * 50) == [
        Rejected(
            "in.json",
            "binary",
            "not Segment events (binary: 21% of its first 3,500 bytes are not UTF-8); not read",
        )
    ]


@pytest.mark.parametrize("zeros", [4 * 1024, 100 * 1024, 300 * 1024])
def test_zeros_a_crash_left_before_good_events_are_not_binary(zeros: int) -> None:
    events = [{"type": "track", "event": "Signed Up", "userId": f"u{n}", "n": n} for n in range(3000)]
    good = ndjson(events)
    assert len(good) > 200 * 1024
    items = read_bytes(b"\x00" * zeros + good)
    # The zeros and the first event are one line; every other line is read.
    assert items[0] == Rejected("in.json:1", "invalid_json", "not valid JSON: Expecting value (column 1)")
    assert records(items) == [(f"in.json:{n + 1}", event) for n, event in enumerate(events) if n]


class Pieces(io.RawIOBase):
    """Hands out its data in the pieces given, then in reads of the size asked."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        if len(self.pieces) > 1:
            return self.pieces.pop(0)
        rest = self.pieces[0] if self.pieces else b""
        data, self.pieces = rest[: size if size >= 0 else None], [rest[size:]] if size >= 0 else []
        return data


def test_a_character_cut_at_the_end_of_the_first_read_is_not_invalid() -> None:
    line = '{"type":"track","price":"€5"}\n'.encode()
    cut = line.index("€".encode()) + 1
    # The first read holds 27 bytes, the last 1 the start of a 3-byte character: 4% if counted.
    items = list(iter_stream(Pieces(line[:cut], line[cut:]), "piped"))
    assert items == [Record("piped:1", {"type": "track", "price": "€5"}, len(line) - 1, line[:-1])]
    head = '{"€":"€"}'.encode()
    items = list(iter_stream(Pieces(head[:2], head[2:]), "piped"))
    assert records(items) == [("piped:1", {"€": "€"})]


@settings(max_examples=150, deadline=None)
@given(events=events_strategy, first_read=st.integers(1, 200))
# JSON writers leave DEL unescaped: a string of them is still JSON text.
@example(events=[{"type": "track", "s": "\x7f" * 40}], first_read=200)
def test_json_events_are_never_binary(events: list[dict[str, Any]], first_read: int) -> None:
    data = b"".join(json.dumps(event, ensure_ascii=False).encode() + b"\n" for event in events)
    # However the first read cuts the text, even inside a character.
    items = list(iter_stream(Pieces(data[:first_read], data[first_read:]), "in.json"))
    assert [value for _, value in records(items)] == events


# --- integers too long to read ----------------------------------------------------------------------

LONG = "9" * 5000
"""Past Python's int-to-str limit (4,300 digits): it cannot be converted, so it is refused."""
LONGEST = "9" * 4300
"""The longest integer Python converts: read exactly."""
TOO_LONG = "holds an integer of 5,000 digits; segroute reads integers of up to 4,300 digits"


def event_text(n: str, key: str = "n") -> str:
    return '{"type":"track","event":"E","userId":"u","%s":%s}' % (key, n)  # noqa: UP031


def shapes(n: str) -> dict[str, bytes]:
    """An event holding the integer ``n``, then an event holding 2, in every shape; gzip'd too."""
    first, second = event_text(n), event_text("2")
    pretty = json.dumps({"type": "track", "n": 0}, indent=2).replace("0", n)
    plain = {
        "ndjson": f"{first}\n{second}\n",
        "array": f"[\n{first},\n{second}\n]",
        "batch": f'{{"batch": [{first}, {second}], "sentAt": "x"}}\n{event_text("3")}\n',
        "pretty": f"{pretty}\n{json.dumps({'n': 2}, indent=2)}",
        "user_id": f"{event_text(n, 'userId')}\n{second}\n",
    }
    data = {shape: text.encode() for shape, text in plain.items()}
    return data | {f"{shape}.gz": gzip.compress(text) for shape, text in data.items()}


SHAPES = sorted(shapes("1"))


@pytest.mark.parametrize("shape", SHAPES)
def test_an_integer_too_long_to_read_is_one_too_large_record(shape: str) -> None:
    items = read_bytes(shapes(LONG)[shape])
    kind = shape.removesuffix(".gz")
    if kind == "batch":  # the body is one JSON text: it is the record refused, the next line is read
        assert items == [
            Rejected("in.json:1", "too_large", TOO_LONG),
            Record("in.json:2", json.loads(event_text("3")), len(event_text("3")), event_text("3").encode()),
        ]
        return
    origin = {"array": "in.json:2[0]"}.get(kind, "in.json:1")
    assert items[0] == Rejected(origin, "too_large", TOO_LONG)
    assert [value.get("n") for _, value in records(items)] == [2]
    assert len(items) == 2


@pytest.mark.parametrize("shape", SHAPES)
def test_integers_of_4300_digits_are_read_exactly(shape: str) -> None:
    items = read_bytes(shapes(LONGEST)[shape])
    assert all(isinstance(item, Record) for item in items)
    first = records(items)[0][1]
    assert first.get("userId" if shape.startswith("user_id") else "n") == int(LONGEST)


def test_lines_holding_too_long_integers_are_still_lines() -> None:
    # Were they not JSON, a file that starts with them would be taken for one pretty-printed
    # document, and its events would lose the text they were read as.
    data = f"{event_text(LONG)}\n{event_text(LONG)}\n{event_text('3')}\n".encode()
    assert read_bytes(data) == [
        Rejected("in.json:1", "too_large", TOO_LONG),
        Rejected("in.json:2", "too_large", TOO_LONG),
        Record("in.json:3", json.loads(event_text("3")), len(event_text("3")), event_text("3").encode()),
    ]
    assert read_bytes(event_text(LONG).encode()) == [Rejected("in.json:1", "too_large", TOO_LONG)]


def test_invalid_json_holding_a_too_long_integer_says_what_is_invalid() -> None:
    line = '{"n": %s, }' % LONG  # noqa: UP031
    assert read_bytes(f"{line}\n".encode()) == [
        Rejected(
            "in.json:1",
            "invalid_json",
            "not valid JSON: Expecting property name enclosed in double quotes (column 5009)",
        )
    ]
    assert read_bytes(f"[{line}]".encode())[0] == Rejected(
        "in.json:1",
        "invalid_json",
        "not valid JSON: Expecting property name enclosed in double quotes (line 1, column 5009); "
        "the rest of the file is not read",
    )


def test_loads_refuses_a_too_long_integer_with_its_own_error() -> None:
    for text in (f'{{"n":{LONG}}}', f"[-{LONG}]", LONG):
        with pytest.raises(_json.IntegerTooLongError, match=f"^{TOO_LONG}$"):
            _json.loads(text.encode())
        with pytest.raises(ValueError):
            _json.loads(text)
    assert _json.loads(f'{{"n":{LONGEST}}}'.encode()) == {"n": int(LONGEST)}
    # A string of digits is no integer.
    assert _json.loads(f'{{"n":"{LONG}"}}') == {"n": LONG}


# --- how far the reading has come ----------------------------------------------------------------


def test_the_meter_follows_the_reading_to_the_line_plain_gzipped_and_across_inputs(tmp_path: Path) -> None:
    lines = [
        json.dumps({"type": "track", "event": "E", "userId": f"u{n}", "pad": "x" * 90}) + "\n"
        for n in range(4000)
    ]
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(lines))
    packed = tmp_path / "packed.jsonl.gz"
    packed.write_bytes(gzip.compress("".join(lines).encode()))
    meter = ReadMeter([str(plain), str(packed)])
    assert meter.total == plain.stat().st_size + packed.stat().st_size
    items = iter_items([str(plain), str(packed)], meter=meter)
    for _ in range(1000):
        next(items)
    # A quarter of the first file's lines: a quarter of its bytes, however far ahead it was read.
    assert meter.position == len("".join(lines[:1000]))
    for _ in range(3000 + 2000):
        next(items)
    # Half of the gzip'd file's lines: about half of its compressed bytes.
    assert (
        abs(meter.position - plain.stat().st_size - packed.stat().st_size / 2) < packed.stat().st_size * 0.1
    )
    assert list(items)  # the rest
    assert meter.position == meter.total
    assert ReadMeter(["-", str(plain)]).total is None
