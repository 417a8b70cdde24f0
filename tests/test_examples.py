"""The shipped examples: real client output, a matching config, and a CI replay that passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from segroute.cli import app
from segroute.config import load_config
from tests.startup import run_fresh

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROOT = EXAMPLES.parent


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
