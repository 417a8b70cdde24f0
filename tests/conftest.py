"""Shared fixtures: the repository, and real /v1/batch bodies written by the official Segment client."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.courier_server import FakeCourier

ROOT = Path(__file__).resolve().parent.parent


def load_capture() -> ModuleType:
    """examples/capture.py, which drives segment-analytics-python against a capture server."""
    spec = importlib.util.spec_from_file_location(
        "segroute_example_capture", ROOT / "examples" / "capture.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _many(client: Any) -> None:
    """More traffic than the example: several users, every type, ids the client generates itself."""
    for n in range(60):
        user = f"user-{n % 7}"
        client.identify(user, {"email": f"{user}@example.com", "n": n})
        client.track(user, "Checkout Complete", {"order_id": f"ord-{n}", "total": n * 1.5, "tags": ["a", n]})
        client.track(anonymous_id=f"anon-{n}", event="Product Viewed", properties={"sku": f"sku-{n}"})
        client.page(user, "Docs", "Pricing", {"url": "https://example.com/p"})
        client.screen(user, "App", "Home")
        client.group(user, f"acct-{n % 3}", {"name": "Acme"})
        client.alias(f"anon-{n}", user)


@pytest.fixture(autouse=True)
def _ledger_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's ledger lives in its own tmp_path, never beside a config in the repository."""
    monkeypatch.setenv("SEGROUTE_LEDGER", str(tmp_path / "segroute-ledger.sqlite3"))


@pytest.fixture(autouse=True)
def _this_checkout_in_subprocesses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A segroute run in a process of its own imports this checkout's package, not whichever one the
    environment installed (an editable install of another worktree, say)."""
    found = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *([found] if found else [])]))


@pytest.fixture
def ledger() -> Path:
    """The ledger a send uses by default here: $SEGROUTE_LEDGER, which `_ledger_in_tmp` sets."""
    return Path(os.environ["SEGROUTE_LEDGER"])


@pytest.fixture(scope="session")
def capture() -> ModuleType:
    """The capture module."""
    return load_capture()


@pytest.fixture(scope="session")
def segment_bodies(capture: ModuleType) -> list[dict[str, Any]]:
    """/v1/batch bodies the official client posted for the example scenario and more traffic."""
    bodies: list[dict[str, Any]] = capture.capture(capture.storefront) + capture.capture(_many)
    assert sum(len(body["batch"]) for body in bodies) == 11 + 60 * 7
    return bodies


@pytest.fixture(scope="session")
def segment_events(segment_bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event the official client sent, in order."""
    return [item for body in segment_bodies for item in body["batch"]]


@pytest.fixture
def courier() -> Iterator[FakeCourier]:
    """A fake Courier API on 127.0.0.1, new for each test."""
    server = FakeCourier()
    server.start()
    yield server
    server.stop()
