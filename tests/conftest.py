"""Shared fixtures: the repository, and real /v1/batch bodies written by the official Segment client;
and the helpers the ledger, resume and interrupt tests share: sends in this process or in one of
their own, and what the ledger and the fake Courier hold afterwards."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner, Result

from segroute.cli import app
from segroute.ledger import Ledger
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


USER_SETTINGS = ("SEGROUTE_CONFIG", "COURIER_BASE_URL", "COURIER_API_KEY", "COURIER_AUTH_TOKEN")
"""What a user's shell may set that would change what a test's command does."""


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *more: str) -> None:
    """Run the test in its own folder, with none of the user's settings (USER_SETTINGS and ``more``)."""
    monkeypatch.chdir(tmp_path)
    for name in (*USER_SETTINGS, *more):
        monkeypatch.delenv(name, raising=False)


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


# --- sends, and what they left ---------------------------------------------------------------

runner = CliRunner()


def segroute_send(*args: str) -> list[str]:
    """The command line of a send in a process of its own, for tests that signal it."""
    return [sys.executable, "-m", "segroute", "send", *args]


def send(courier: FakeCourier, *args: str) -> Result:
    return runner.invoke(app, ["send", *args, "--api-url", courier.url])


def expected_keys(courier: FakeCourier, *inputs: str) -> set[str]:
    """The Idempotency-Keys a full send of the inputs makes, from a dry run that ignores any ledger."""
    dry = send(courier, *inputs, "--dry-run", "--no-ledger", "-o", "jsonl")
    assert dry.exit_code in (0, 1), dry.stderr
    keys = [json.loads(line)["headers"]["Idempotency-Key"] for line in dry.stdout.splitlines()]
    assert len(keys) == len(set(keys))
    return set(keys)


def ledger_rows(path: Path) -> list[dict[str, Any]]:
    """What the ledger holds, opened as segroute opens an existing one."""
    opened = Ledger(path, create=False)
    try:
        return list(opened.export())
    finally:
        opened.close()


def ledger_keys(path: Path) -> set[str]:
    rows = ledger_rows(path)
    keys = {row["idempotency_key"] for row in rows}
    assert len(keys) == len(rows)
    return keys


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        found: str = connection.execute("PRAGMA integrity_check").fetchone()[0]
        return found


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def received_keys(courier: FakeCourier, start: int = 0) -> Counter[str]:
    """Idempotency-Key -> times it reached the server, from the ``start``-th request on."""
    with courier.lock:
        return Counter(received.key for received in courier.received[start:])


def received_so_far(courier: FakeCourier) -> int:
    with courier.lock:
        return len(courier.received)


def in_flight(courier: FakeCourier) -> bool:
    """Some request reached the server and was not acted on yet (it waits in a scripted delay)."""
    with courier.lock:
        return bool({r.key for r in courier.received} - set(courier.acted))


def assert_each_expected_key_acted_on_once(courier: FakeCourier, expected: set[str]) -> None:
    with courier.lock:
        assert set(courier.acted) == expected
        assert set(courier.acted.values()) == {1}


def report(path: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(Path(path).read_text())
    return found


def requests_of(found: dict[str, Any], kind: str) -> int:
    """Requests of one kind (sent, already_sent, ...) in a report, over every target."""
    return sum(target.get(kind, 0) for target in found["targets"].values())


def table_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


@dataclass
class Background:
    """A send in a process of its own; its output goes to files, so a full pipe never blocks it."""

    proc: subprocess.Popen[bytes]
    err: Path

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        return self.proc.returncode, self.err.read_text()


@contextlib.contextmanager
def background(courier: FakeCourier, name: str, *args: str) -> Iterator[Background]:
    out, err = Path(f"{name}.out"), Path(f"{name}.err")
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            segroute_send(*args, "--api-url", courier.url), stdout=stdout, stderr=stderr, env=dict(os.environ)
        )
    try:
        yield Background(proc, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- buckets: what tests/test_buckets.py and tests/test_buckets_gcs.py share ----------------------
# tests.archives and tests.bucket_server are imported where they are used: tests.archives imports
# this module, and moto (half a second) is for the bucket tests alone.

if TYPE_CHECKING:
    from tests.bucket_server import GcsEmulator

ARCHIVE = "archive"
"""The bucket that holds the tree of `bucket_files`, as ./logs holds it on disk."""
BUNDLES = "bundles"
"""The bucket that holds that tree as bundles: export.tar.gz and export.zip."""
STORE_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL_S3",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_SERVICE_ACCOUNT_PATH",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_BEARER_TOKEN",
    "GOOGLE_BASE_URL",
    "GOOGLE_SKIP_SIGNATURE",
    "GOOGLE_BUCKET",
    "GOOGLE_BUCKET_NAME",
    "SERVICE_ACCOUNT",
)
"""The user's settings for a store that a bucket test must not see (each test's store fixture sets
what it needs)."""


@pytest.fixture(scope="session")
def bucket_files(segment_events: list[dict[str, Any]]) -> dict[str, bytes]:
    """The segment-logs tree of three days of the official client's events, path -> content."""
    from datetime import UTC, datetime

    from tests.archives import layout, spread

    return layout(spread(segment_events, datetime(2026, 3, 1, 8, 0, tzinfo=UTC), days=3))


def bucket_contents(files: dict[str, bytes]) -> dict[str, dict[str, bytes]]:
    """What every store holds, bucket -> key -> content: the tree in ARCHIVE, as bundles in BUNDLES."""
    from tests.archives import tar_bytes, zip_bytes

    bundles = {"export.tar.gz": tar_bytes(files, compress=True), "export.zip": zip_bytes(files)}
    return {ARCHIVE: files, BUNDLES: bundles}


@pytest.fixture
def bucket_test_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bucket test in its own folder, with nothing of the user's: no config, no Courier settings,
    no read-ahead, none of AWS's or Google's variables."""
    isolate(tmp_path, monkeypatch, "SEGROUTE_READ_AHEAD", *STORE_VARIABLES)
    return tmp_path


@pytest.fixture(scope="session")
def gcs_emulator(bucket_files: dict[str, bytes]) -> Iterator[GcsEmulator]:
    """fake-gcs-server holding `bucket_contents`, started once for every module that asks for it."""
    from tests.bucket_server import GcsEmulator

    started = GcsEmulator()
    started.start()
    try:
        for bucket, objects in bucket_contents(bucket_files).items():
            started.create_bucket(bucket)
            for key, content in objects.items():
                started.upload(bucket, key, content)
        yield started
    finally:
        started.stop()


@pytest.fixture
def gcs(gcs_emulator: GcsEmulator, bucket_test_folder: Path, monkeypatch: pytest.MonkeyPatch) -> GcsEmulator:
    """A bucket test with STORAGE_EMULATOR_HOST naming the emulator."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.host)
    return gcs_emulator
