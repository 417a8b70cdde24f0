"""gs:// inputs: what only GCS needs, against fake-gcs-server on 127.0.0.1 (`tests.bucket_server`),
reached as Google's client libraries reach an emulator, through ``STORAGE_EMULATOR_HOST``.

What a gs:// bucket reads as is tested in tests/test_buckets.py, once against each store: a bucket
plans exactly what the same tree on disk plans (each kind of prefix, read-ahead on and off, each
object, bundles and a hostile one, ``--since``), read-ahead's window, a send delivers each request
once, a URL with nothing there is one line of error. Here: a missing bucket as the emulator answers
it, GCS's error codes, and the endpoint and credentials as Google's clients take them. The emulator
is the session's (`gcs_emulator` in tests/conftest.py), its buckets holding what every store holds.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from obstore.store import GCSStore
from typer.testing import CliRunner, Result

from segroute import buckets
from segroute.buckets import describe
from segroute.cli import app
from tests.bucket_server import GcsEmulator
from tests.conftest import ARCHIVE

pytestmark = pytest.mark.usefixtures("gcs")

runner = CliRunner()


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


# --- 1. errors: one line each ---------------------------------------------------------------------


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


# --- 2. the endpoint, as Google's clients take it --------------------------------------------------


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
