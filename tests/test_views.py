"""The views a command ends with: here, the diff ``link --dry-run`` and ``unlink --dry-run`` print."""

from __future__ import annotations

from segroute.views import config_diff


def test_config_diff_is_a_unified_diff_named_after_the_file() -> None:
    before = 'update_profiles = true\n\n[[links]]\nevent = "A"\nautomation = "a"\n'
    after = 'update_profiles = false\n\n[[links]]\nevent = "A"\nautomation = "a"\n'
    assert config_diff("conf/segroute.toml", before, after) == (
        b"--- conf/segroute.toml\n"
        b"+++ conf/segroute.toml\n"
        b"@@ -1,4 +1,4 @@\n"
        b"-update_profiles = true\n"
        b"+update_profiles = false\n"
        b" \n"
        b" [[links]]\n"
        b' event = "A"\n'
    )


def test_config_diff_of_a_new_file_and_of_no_change() -> None:
    assert config_diff("s.toml", "", "a = 1\n") == b"--- s.toml\n+++ s.toml\n@@ -0,0 +1 @@\n+a = 1\n"
    assert config_diff("s.toml", "a = 1\n", "a = 1\n") == b""


def test_config_diff_marks_a_last_line_without_a_line_break() -> None:
    assert config_diff("s.toml", "a = 1", "a = 1\nb = 2\n") == (
        b"--- s.toml\n+++ s.toml\n@@ -1 +1,2 @@\n-a = 1\n\\ No newline at end of file\n+a = 1\n+b = 2\n"
    )


def test_config_diff_breaks_lines_at_line_feeds_only() -> None:
    # U+2028 may stand in a TOML string; str.splitlines would break the line there.
    before, after = 'e = "a\u2028b"\n', 'e = "a\u2028c"\n'
    diff = config_diff("s.toml", before, after).decode()
    assert diff == f"--- s.toml\n+++ s.toml\n@@ -1 +1 @@\n-{before}+{after}"
