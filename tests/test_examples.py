"""The shipped examples: real client output, a matching config, and a CI replay that passes."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from segroute.cli import app
from segroute.config import load_config
from tests.startup import run_fresh

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROOT = EXAMPLES.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# The README's two set-up commands: try the example, and run the whole check.
TRY_IT = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install . && "
    "segroute send examples/events.jsonl -c config.example.toml --dry-run"
)
CHECK = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && scripts/check'


def shipped_events() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (EXAMPLES / "events.jsonl").read_text().splitlines()]


def without_library_version(event: dict[str, Any]) -> dict[str, Any]:
    context = dict(event["context"], library={"name": event["context"]["library"]["name"]})
    return dict(event, context=context)


def test_example_events_are_what_the_official_client_writes(capture: ModuleType) -> None:
    fresh = [item for body in capture.capture(capture.storefront) for item in body["batch"]]
    assert [without_library_version(e) for e in fresh] == [
        without_library_version(e) for e in shipped_events()
    ]


def test_example_archive_is_the_events_as_segment_archives_them(capture: ModuleType) -> None:
    assert capture.archive(shipped_events()) == (EXAMPLES / "archive.tar.gz").read_bytes()
    result = CliRunner().invoke(app, ["inspect", str(EXAMPLES / "archive.tar.gz"), "-o", "json"])
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["events"] == len(shipped_events())
    assert found["received_at"]["last"].startswith("2026-11-03")  # the late event, a folder later


def test_example_batch_body_holds_the_first_events() -> None:
    body = json.loads((EXAMPLES / "batch.json").read_text())
    assert set(body) == {"batch", "sentAt", "writeKey"}
    assert body["batch"] == shipped_events()[: len(body["batch"])]


def test_both_configs_link_the_same_events() -> None:
    example = load_config(ROOT / "config.example.toml", must_exist=True).config
    shipped = load_config(EXAMPLES / "segroute.toml", must_exist=True).config
    assert example.links == shipped.links
    names = {e.get("event") for e in shipped_events() if e["type"] == "track"}
    assert {link.event for link in example.links} <= names


def test_dry_run_matches_the_golden_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES)
    monkeypatch.delenv("COURIER_BASE_URL", raising=False)
    result = CliRunner().invoke(
        app, ["send", "events.jsonl", "-c", "segroute.toml", "--dry-run", "--output", "jsonl", "-q"]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (EXAMPLES / "golden.jsonl").read_text()


def test_readme_command_runs_on_the_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("COURIER_BASE_URL", raising=False)
    result = CliRunner().invoke(
        app, ["send", "examples/events.jsonl", "-c", "config.example.toml", "--dry-run"]
    )
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == len((EXAMPLES / "golden.jsonl").read_text().splitlines())
    rows = [line.split() for line in result.stderr.splitlines()]
    assert ["planned", "6"] in rows
    assert ["read", "11"] in rows
    assert ["total", "8"] in rows


def test_ci_replay_script_passes() -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("COURIER_BASE_URL", None)
    done = subprocess.run(
        ["bash", str(EXAMPLES / "ci-replay.sh")], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("dry run matches golden.jsonl")


def test_a_dry_run_starts_without_asyncio_or_aiohttp() -> None:
    # Start-up is part of every short run; the event loop and the HTTP client load only to send.
    events, config = str(EXAMPLES / "events.jsonl"), str(EXAMPLES / "segroute.toml")
    args = ["send", events, "-c", config, "--dry-run", "-q", "--no-ledger"]
    assert run_fresh(args, ["asyncio", "aiohttp"])[:2] == (0, [])


def try_it(monkeypatch: pytest.MonkeyPatch, *extra: str) -> Result:
    """The README's try-it command (its last step, after the install), run through the CLI."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("COURIER_BASE_URL", raising=False)
    monkeypatch.delenv("SEGROUTE_LEDGER", raising=False)
    args = shlex.split(TRY_IT.split(" && ")[-1])
    assert args[0] == "segroute"
    result = CliRunner().invoke(app, [*args[1:], *extra])
    assert result.exit_code == 0, result.stderr
    return result


def fenced_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def counted_rows(text: str) -> list[list[str]]:
    """A summary's rows that end in a count, as words: ["skipped", "anonymous", "1"]."""
    rows = [line.split() for line in text.splitlines()]
    return [row for row in rows if row and row[-1].isdigit()]


def test_readme_shows_the_set_up_commands_verbatim() -> None:
    lines = README.read_text().splitlines()
    assert TRY_IT in lines
    assert CHECK in lines


def test_readme_summary_is_what_the_try_it_command_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    [summary] = [b for b in fenced_blocks(README.read_text()) if b.startswith("dry run: nothing was sent")]
    assert ["read", "11"] in counted_rows(summary)
    assert counted_rows(summary) == counted_rows(try_it(monkeypatch).stderr)


def test_pasted_requests_are_what_the_try_it_command_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    # On a terminal the dry run prints text; CliRunner's stdout is not one, so ask for text.
    printed = "\n".join(line.rstrip() for line in try_it(monkeypatch, "--output", "text").stdout.splitlines())
    pasted = [
        b
        for page in (README, DOCS / "requests.md")
        for b in fenced_blocks(page.read_text())
        if b.startswith("POST https://api.courier.com/")
    ]
    assert len(pasted) == 2
    for block in pasted:
        assert printed.startswith(block.rstrip("\n"))


MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """Markdown without its code: fenced blocks and inline code hold no links or headings."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as -."""
    found: set[str] = set()
    repeats: dict[str, int] = {}
    for heading in re.findall(r"^#+ (.+)$", prose(page.read_text()), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        if slug in repeats:  # a repeated heading gets -1, -2, ...
            repeats[slug] += 1
            found.add(f"{slug}-{repeats[slug]}")
        else:
            repeats[slug] = 0
            found.add(slug)
    return found


def doc_pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_relative_links_in_the_readme_and_docs_resolve() -> None:
    broken, checked = [], 0
    for page in doc_pages():
        for target in MARKDOWN_LINK.findall(prose(page.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            dest = (page.parent / path) if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
    assert broken == []
    assert checked > 20


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in MARKDOWN_LINK.findall(prose(README.read_text()))
    }
    assert [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked] == []
