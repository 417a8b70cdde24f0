"""The duplicate check: exact whatever it spills to disk, and clean after itself."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segroute import dedupe
from segroute.dedupe import SeenIds
from segroute.errors import TempStorageError


def test_seen_ids_are_exact_after_spilling_to_disk() -> None:
    seen = SeenIds(memory=3)
    assert [seen.add(x) for x in "abc"] == [True, True, True]  # the third fills memory: all move to disk
    assert [seen.add(x) for x in "abcd"] == [False, False, False, True]
    assert [seen.add(x) for x in "efgh"] == [True, True, True, True]
    assert [seen.add(x) for x in "abcdefgh"] == [False] * 8
    seen.close()


def test_seen_ids_answer_from_the_moving_set_while_the_insert_runs() -> None:
    seen = SeenIds(memory=3)
    assert all(seen.add(x) for x in "abc")
    seen._wait()
    assert seen._moving is None and seen._writer is not None
    # As if the insert had not committed yet: SQLite does not have the ids, the moving set does.
    seen._writer.execute("DELETE FROM seen")
    seen._moving = set("abc")
    assert [seen.add(x) for x in "abcd"] == [False, False, False, True]
    seen.close()


def test_seen_ids_raise_a_failed_insert_at_the_next_spill_and_clean_up() -> None:
    seen = SeenIds(memory=2)
    assert all(seen.add(x) for x in "ab")
    assert seen._folder is not None and seen._writer is not None
    folder = Path(seen._folder.name)
    seen._wait()
    seen._writer.execute("DROP TABLE seen")  # the next insert fails, as on a full disk
    assert all(seen.add(x) for x in "cd")
    with pytest.raises(TempStorageError, match="^the duplicate check cannot write its temporary file in "):
        seen.add("e")
        seen.add("f")
    seen.close()
    assert not folder.exists()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([f"m{n}" for n in range(12)]), max_size=60), st.integers(1, 5))
def test_seen_ids_match_a_plain_set(ids: list[str], memory: int) -> None:
    seen, plain = SeenIds(memory=memory), set()
    for message_id in ids:
        assert seen.add(message_id) is (message_id not in plain)
        plain.add(message_id)
    seen.close()


def test_seen_ids_stay_exact_when_the_filter_is_all_false_positives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedupe, "BLOOM_BYTES", 1)  # 8 bits: nearly every new id looks spilled
    seen = SeenIds(memory=10)
    first = [f"id-{n}" for n in range(100)]
    assert all(seen.add(x) for x in first)
    assert not any(seen.add(x) for x in first)
    assert all(seen.add(f"new-{n}") for n in range(100))
    seen.close()


@pytest.mark.skipif(os.name != "posix", reason="the sweep asks with signal 0, which only POSIX has")
def test_a_spill_sweeps_the_folders_killed_runs_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f"segroute-seen-{int(ended.stdout)}-abc"  # its process is gone: killed, say
    stale.mkdir()
    (stale / "seen.sqlite3").write_bytes(b"ids")
    running = tmp_path / f"segroute-seen-{os.getpid()}-def"  # a run still going
    running.mkdir()
    unrelated = tmp_path / "segroute-seen-notes"
    unrelated.mkdir()
    kept = tmp_path / "kept"  # a link with a dead process's name is never followed into
    (kept / "data").mkdir(parents=True)
    link = tmp_path / f"segroute-seen-{int(ended.stdout)}-link"
    link.symlink_to(kept)
    seen = SeenIds(memory=2)
    assert seen.add("a") and seen.add("b")  # the first spill makes its folder
    assert not stale.exists() and running.exists() and unrelated.exists()
    assert link.is_symlink() and (kept / "data").is_dir()
    [own] = [p for p in tmp_path.glob(f"segroute-seen-{os.getpid()}-*") if p != running]
    seen.close()
    assert not own.exists()
