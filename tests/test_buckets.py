"""Bucket inputs against real stores on 127.0.0.1 (`tests.bucket_server`): ``s3://`` against moto
behind a server that records each request and misbehaves on purpose, ``gs://`` against
fake-gcs-server.

Each store's buckets hold the segment-logs tree `tests.archives` builds from the official client's
events; the same tree is written to disk, and what a run plans from a bucket must be what it plans
from the disk, byte for byte but for the origins. Those tests (sections 1 and 3, and the first of 4)
run once against each store, through the `store` fixture. The rest are ``s3://`` only: they read the
recording server's log of what was fetched or make it misbehave, or they are about AWS's credentials,
regions and endpoints. What ``gs://`` alone needs is in tests/test_buckets_gcs.py.
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import obstore
import pytest
from obstore.store import S3Store
from typer.testing import CliRunner, Result

from segroute import buckets
from segroute.buckets import describe, open_bucket
from segroute.cli import app
from tests.archives import SOURCE_ID, tar_with, write_tree
from tests.bucket_server import BucketServer, Fault, GcsEmulator, s3_error
from tests.conftest import (
    ARCHIVE,
    BUNDLES,
    assert_each_expected_key_acted_on_once,
    bucket_contents,
    expected_keys,
    send,
)
from tests.courier_server import API_KEY, FakeCourier
from tests.startup import run_fresh

pytestmark = pytest.mark.usefixtures("bucket_test_folder")

runner = CliRunner()

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-not-a-real-secret"
KEY_ID = "AKIDSEGROUTETEST"
TOKEN = "FQoGZXIvYXdzE-session-token-of-the-test"
TWO_SOURCES = "two-sources"
"""An S3 bucket with the tree under two source ids."""
LINKED = "Checkout Complete"
SINCE = ["--since", "2026-03-02T13:30:00Z"]
"""Only the first day's folder of `bucket_files` ends before it."""


@pytest.fixture(scope="module")
def server() -> Iterator[BucketServer]:
    started = BucketServer()
    started.start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def filled(server: BucketServer, bucket_files: dict[str, bytes]) -> BucketServer:
    """The server with what every store holds (`bucket_contents`: the tree in ARCHIVE, the tree as
    bundles in BUNDLES), and the tree under two source ids in TWO_SOURCES."""
    client = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    other = {name.replace(SOURCE_ID, "Zz99Yy88Xx"): content for name, content in bucket_files.items()}
    contents = {**bucket_contents(bucket_files), TWO_SOURCES: {**bucket_files, **other}}
    for bucket, objects in contents.items():
        client.create_bucket(Bucket=bucket)
        store = _store(server, bucket)
        for key, content in objects.items():
            obstore.put(store, key, content)
    return server


def _store(server: BucketServer, bucket: str) -> S3Store:
    """A store to fill a bucket with, its credentials given outright: a store left to find its own
    would ask the instance metadata address, off this machine."""
    return S3Store(
        bucket,
        endpoint=server.url,
        region="us-east-1",
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        client_options={"allow_http": True},
    )


@pytest.fixture
def aws(filled: BucketServer, bucket_test_folder: Path, monkeypatch: pytest.MonkeyPatch) -> BucketServer:
    """AWS's variables pointing at the server, its log and faults cleared; no AWS config or
    credentials file of the user's (`bucket_test_folder` has cleared the rest)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", filled.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(bucket_test_folder / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(bucket_test_folder / "no-aws-credentials"))
    filled.reset()
    return filled


@dataclass(frozen=True)
class Store:
    """A store with `bucket_contents` in its buckets, its variables set for the test."""

    scheme: str
    put: Callable[[str, str, bytes], object]
    """Writes an object: bucket, key, content."""
    delete: Callable[[str, str], object]
    """Deletes an object: bucket, key."""

    def url(self, path: str) -> str:
        """The URL of ``BUCKET/KEY`` in this store."""
        return f"{self.scheme}://{path}"


@pytest.fixture(params=["s3", "gs"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each store in turn: moto's S3 (`aws`: this module's server) and fake-gcs-server (`gcs`: the
    session's emulator). Each is started once, the first time a test asks for it."""
    if request.param == "s3":
        server: BucketServer = request.getfixturevalue("aws")
        return Store(
            "s3",
            lambda bucket, key, content: obstore.put(_store(server, bucket), key, content),
            lambda bucket, key: obstore.delete(_store(server, bucket), key),
        )
    emulator: GcsEmulator = request.getfixturevalue("gcs")
    return Store("gs", emulator.upload, emulator.delete)


@pytest.fixture
def tree(bucket_test_folder: Path, bucket_files: dict[str, bytes]) -> str:
    """The same tree on disk, under ./logs."""
    write_tree(bucket_test_folder / "logs", bucket_files)
    return "logs"


# --- helpers ------------------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    """A command in this process; nothing it writes may hold the secret key or the session token."""
    result = runner.invoke(app, list(args))
    for written in (result.stdout, result.stderr, *(p.read_text() for p in Path().glob("*.json"))):
        assert SECRET not in written and TOKEN not in written
    return result


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


def gets(server: BucketServer, bucket: str) -> list[str]:
    """The keys of the objects fetched (GET, not a listing), in order."""
    return [r.path.removeprefix(f"/{bucket}/") for r in server.taken() if r.is_get_of(f"/{bucket}/")]


def listed_prefixes(server: BucketServer) -> list[str]:
    """The prefixes listed, decoded."""
    from urllib.parse import parse_qs

    return [parse_qs(r.query).get("prefix", [""])[0] for r in server.taken() if "list-type=2" in r.query]


def day_folders(files: dict[str, bytes]) -> list[str]:
    return sorted({name.rsplit("/", 1)[0] for name in files if name.count("/") == 3})


# --- 1. a bucket reads as the same tree on disk (each store) ------------------------------------------


@pytest.mark.parametrize(
    ("path", "folder"),
    [
        (f"{ARCHIVE}/", "logs/"),
        (ARCHIVE, "logs/"),
        (f"{ARCHIVE}/segment-logs/", "logs/segment-logs/"),
        (f"{ARCHIVE}/segment-logs", "logs/segment-logs"),
        (f"{ARCHIVE}/segment-logs/{SOURCE_ID}", f"logs/segment-logs/{SOURCE_ID}"),
    ],
)
@pytest.mark.parametrize("read_ahead", ["4", "0"])
def test_a_bucket_plans_exactly_what_the_same_tree_on_disk_does(
    store: Store, tree: str, path: str, folder: str, read_ahead: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    link()
    monkeypatch.setenv("SEGROUTE_READ_AHEAD", read_ahead)
    from_disk = dry_run(folder)
    from_bucket = dry_run(store.url(path))
    assert (from_disk.exit_code, from_bucket.exit_code) == (0, 0), from_bucket.stderr
    assert from_disk.stdout.count("\n") > 100
    assert as_on_disk(from_bucket.stdout, store.url(f"{ARCHIVE}/"), "logs/") == from_disk.stdout
    assert summary_part(from_bucket.stderr) == summary_part(from_disk.stderr)


def test_inspect_of_a_bucket_tells_what_the_tree_on_disk_does(store: Store, tree: str) -> None:
    link()
    from_disk = invoke("inspect", tree, "-o", "json")
    from_bucket = invoke("inspect", store.url(f"{ARCHIVE}/"), "-o", "json")
    assert (from_disk.exit_code, from_bucket.exit_code) == (0, 0), from_bucket.stderr
    found = json.loads(from_bucket.stdout)
    assert found["events"] > 400 and found["notes"] == 2  # the placeholder and the empty object
    assert found == json.loads(from_disk.stdout)


def test_each_object_reads_as_its_file_on_disk_does(
    store: Store, tree: str, bucket_files: dict[str, bytes]
) -> None:
    """Gzip by content, not name (a plain .gz, a gzip without .gz), an empty object, the placeholder."""
    link()
    assert sum(1 for content in bucket_files.values() if content.startswith(b"\x1f\x8b")) > 1
    for key in bucket_files:
        url = store.url(f"{ARCHIVE}/{key}")
        from_disk = dry_run(f"logs/{key}")
        from_bucket = dry_run(url)
        assert from_bucket.exit_code == from_disk.exit_code, from_bucket.stderr
        assert as_on_disk(from_bucket.stdout, store.url(f"{ARCHIVE}/"), "logs/") == from_disk.stdout, key
        assert from_bucket.stderr == from_disk.stderr.replace(f"logs/{key}", url), key


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_a_bundle_in_a_bucket_reads_as_on_disk(
    store: Store, bucket_files: dict[str, bytes], kind: str
) -> None:
    link()
    bundle = f"export.{kind}"
    Path(bundle).write_bytes(bucket_contents(bucket_files)[BUNDLES][bundle])  # the bucket's, on disk
    from_disk = dry_run(bundle)
    from_bucket = dry_run(store.url(f"{BUNDLES}/{bundle}"))
    assert (from_disk.exit_code, from_bucket.exit_code) == (0, 0), from_bucket.stderr
    assert from_disk.stdout.count("\n") > 100
    assert as_on_disk(from_bucket.stdout, store.url(f"{BUNDLES}/"), "") == from_disk.stdout
    assert summary_part(from_bucket.stderr) == summary_part(from_disk.stderr)


def test_a_hostile_bundle_in_a_bucket_is_refused_member_by_member(store: Store) -> None:
    link = tarfile.TarInfo("segment-logs/passwd")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    event = {"type": "identify", "userId": "u1", "traits": {"a": 1}, "messageId": "m1"}
    good = tarfile.TarInfo("segment-logs/events.jsonl")
    bundle = tar_with(link, good, content=json.dumps(event).encode() + b"\n")
    store.put(ARCHIVE, "hostile/export.tar", bundle)
    try:
        result = invoke("inspect", store.url(f"{ARCHIVE}/hostile/export.tar"), "-o", "json")
    finally:
        store.delete(ARCHIVE, "hostile/export.tar")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert (found["events"], found["rejected"]["unsafe"]["first"]) == (
        1,
        [store.url(f"{ARCHIVE}/hostile/export.tar!segment-logs/passwd")],
    )


def test_since_reads_what_it_reads_from_the_tree_on_disk(store: Store, tree: str) -> None:
    """--since lists the bucket one level at a time with a delimiter (what it leaves unfetched: the
    next test)."""
    link()
    from_disk = dry_run(tree, *SINCE)
    from_bucket = dry_run(store.url(f"{ARCHIVE}/"), *SINCE)
    assert (from_disk.exit_code, from_bucket.exit_code) == (0, 0), from_bucket.stderr
    assert as_on_disk(from_bucket.stdout, store.url(f"{ARCHIVE}/"), "logs/") == from_disk.stdout
    assert summary_part(from_bucket.stderr) == summary_part(from_disk.stderr)
    note = "note: 1 day folder of events received before the selected time: not read"
    assert f"{store.url(ARCHIVE)}/: {note}" in from_bucket.stderr.splitlines()


def test_a_send_from_a_bucket_delivers_each_request_the_tree_on_disk_plans_once(
    store: Store, tree: str, courier: FakeCourier, monkeypatch: pytest.MonkeyPatch
) -> None:
    link()
    monkeypatch.setenv("COURIER_API_KEY", API_KEY)
    expected = expected_keys(courier, tree)
    assert len(expected) > 100
    result = send(courier, store.url(f"{ARCHIVE}/"), "-q")
    assert result.exit_code == 0, result.stderr
    assert_each_expected_key_acted_on_once(courier, expected)


# --- 2. --since: old day folders are listed, never fetched (s3://, from the request log) ----------------


def test_since_fetches_nothing_from_a_day_folder_received_before_it(
    aws: BucketServer, bucket_files: dict[str, bytes]
) -> None:
    link()
    days = day_folders(bucket_files)
    assert len(days) > 2
    result = dry_run(f"s3://{ARCHIVE}/", *SINCE)
    assert result.exit_code == 0, result.stderr
    fetched = gets(aws, ARCHIVE)
    assert not [key for key in fetched if key.startswith(days[0] + "/")]
    assert {key.rsplit("/", 1)[0] for key in fetched} == set(days[1:])
    # The first day's folder was seen in its source's listing, and never listed itself.
    assert not [prefix for prefix in listed_prefixes(aws) if prefix.startswith(days[0])]
    assert f"segment-logs/{SOURCE_ID}/" in listed_prefixes(aws)


def test_since_leaves_a_day_folder_named_outright_unlisted(
    bucket_files: dict[str, bytes], aws: BucketServer
) -> None:
    first = day_folders(bucket_files)[0]
    result = dry_run(f"s3://{ARCHIVE}/{first}/", "--since", "2026-03-03", "--allow-empty")
    assert result.exit_code == 0, result.stderr
    assert (
        f"s3://{ARCHIVE}/{first}/: note: 1 day folder of events received before the selected time: not read"
        in (result.stderr.splitlines())
    )
    assert report()["read"] == 0
    assert gets(aws, ARCHIVE) == []


# --- 3. read-ahead: bounded, in order (each store) ---------------------------------------------------


def test_read_ahead_starts_a_bounded_number_of_downloads_and_keeps_the_listed_order(
    store: Store, monkeypatch: pytest.MonkeyPatch, bucket_files: dict[str, bytes]
) -> None:
    started: list[str] = []
    start = buckets.Download.start

    def recorded(download: buckets.Download) -> None:
        if download._thread is None:
            started.append(download.listed.key)
        start(download)

    monkeypatch.setattr(buckets.Download, "start", recorded)
    bucket = open_bucket(store.url(f"{ARCHIVE}/"))
    listed = [entry for entry in bucket.walk("", None) if isinstance(entry, buckets.Listed)]
    keys = [entry.key for entry in listed]
    assert keys == sorted(bucket_files) and len(keys) > 5
    window = 2
    read = bucket.read_ahead(iter(listed), window=window)
    handed: list[str] = []
    for n, entry in enumerate(read):
        assert isinstance(entry, buckets.Download)
        handed.append(entry.listed.key)
        # The one being read and `window` more, never further ahead.
        assert started == keys[: min(len(keys), n + 1 + window)]
        assert entry.open().read(1 << 30) == bucket_files[entry.listed.key][: 256 * 1024]
    assert handed == keys


def test_without_read_ahead_an_object_is_fetched_only_when_it_is_read(store: Store) -> None:
    bucket = open_bucket(store.url(f"{ARCHIVE}/"))
    listed = [entry for entry in bucket.walk("", None) if isinstance(entry, buckets.Listed)]
    read = bucket.read_ahead(iter(listed), window=0)
    first = next(read)
    assert isinstance(first, buckets.Download) and first._thread is None
    second = next(read)
    assert isinstance(second, buckets.Download) and second._thread is None
    read.close()


# --- 4. errors: one line each; the run goes on where it can --------------------------------------------

NOTHING_THERE = "no such object, and no object under it as a prefix"


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        (f"{ARCHIVE}/no-such-prefix/", NOTHING_THERE),
        (f"{ARCHIVE}/segment-logs/no-such-object.gz", NOTHING_THERE),
        ("/segment-logs/", "no bucket named (expected {scheme}://BUCKET/PREFIX)"),
    ],
)
def test_a_url_with_nothing_there_is_a_usage_error(store: Store, path: str, problem: str) -> None:
    url = store.url(path)
    result = invoke("send", url, "--dry-run")
    expected = f"error: {url}: {problem.format(scheme=store.scheme)}\n"
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", expected)


@pytest.mark.usefixtures("aws")
def test_a_bucket_that_does_not_exist_is_a_usage_error() -> None:
    """S3's NoSuchBucket (the GCS emulator's answer: tests/test_buckets_gcs.py)."""
    url = "s3://no-such-bucket/segment-logs/"
    result = invoke("send", url, "--dry-run")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {url}: no such bucket\n")


REFUSALS = [
    (403, s3_error("AccessDenied", "Access Denied"), [], "access denied"),
    (403, s3_error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist."), [],
     "the store does not know the access key (AWS_ACCESS_KEY_ID, or the profile's)"),
    (403, s3_error("SignatureDoesNotMatch", f"The signature we calculated does not match {SECRET}"), [],
     "the secret key does not match the access key"),
    (301, s3_error("PermanentRedirect", "The bucket you are attempting to access must be addressed using the "
     "specified endpoint.", Endpoint=f"{ARCHIVE}.s3.eu-west-1.amazonaws.com", Bucket=ARCHIVE),
     [("x-amz-bucket-region", "eu-west-1")],
     "the bucket is in another region: set AWS_REGION to its region (asked in us-east-1)"),
    (400, s3_error("AuthorizationHeaderMalformed", "The authorization header is malformed; the region "
     "'us-east-1' is wrong; expecting 'eu-west-1'", Region="eu-west-1"), [],
     "the bucket is in another region (eu-west-1): set AWS_REGION to its region (asked in us-east-1)"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "headers", "problem"), REFUSALS)
def test_a_bucket_that_refuses_is_a_usage_error_in_one_line(
    aws: BucketServer, status: int, body: bytes, headers: list[tuple[str, str]], problem: str
) -> None:
    aws.faults.append(Fault(lambda r: r.path == f"/{ARCHIVE}", status=status, body=body, headers=headers))
    result = invoke("inspect", f"s3://{ARCHIVE}/segment-logs/")
    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        f"error: s3://{ARCHIVE}/segment-logs/: {problem}\n",
    )


def test_a_folder_that_cannot_be_listed_is_rejected_and_the_rest_is_read(
    aws: BucketServer, bucket_files: dict[str, bytes]
) -> None:
    link()
    refused = f"segment-logs/{SOURCE_ID}/"
    aws.faults.append(
        Fault(
            lambda r: r.path == f"/{TWO_SOURCES}" and f"prefix={refused}".replace("/", "%2F") in r.query,
            status=403,
            body=s3_error("AccessDenied", "no"),
        )
    )
    result = dry_run(f"s3://{TWO_SOURCES}/", "--since", "2026-03-01")
    assert result.exit_code == 1, result.stderr
    assert f"s3://{TWO_SOURCES}/{refused}: rejected (unreadable): cannot list: access denied" in result.stderr
    everything = dry_run(f"s3://{ARCHIVE}/", "--since", "2026-03-01")
    # The other source holds the same events, under its own folder: all of them were read.
    assert report()["read"] > 400
    assert result.stdout.replace("Zz99Yy88Xx", SOURCE_ID).replace(TWO_SOURCES, ARCHIVE) == everything.stdout


def test_an_object_deleted_after_it_was_listed_is_rejected_and_the_rest_is_read(
    aws: BucketServer, tree: str, bucket_files: dict[str, bytes]
) -> None:
    link()
    gone = next(key for key in bucket_files if key.endswith(".0.gz"))
    aws.faults.append(
        Fault(
            lambda r: r.is_get_of(f"/{ARCHIVE}/{gone}"),
            status=404,
            body=s3_error("NoSuchKey", "The key does not exist."),
        )
    )
    result = dry_run(f"s3://{ARCHIVE}/")
    assert result.exit_code == 1, result.stderr
    problem = "cannot open: no such object: deleted after it was listed"
    assert f"s3://{ARCHIVE}/{gone}: rejected (unreadable): {problem}" in result.stderr
    found = report()
    (Path(tree) / gone).unlink()
    dry_run(tree)
    assert found["read"] == report()["read"] + 1  # every event of the others, and the one rejected record


@pytest.mark.parametrize("read_ahead", ["4", "0"])
def test_a_download_cut_off_mid_object_resumes_and_counts_each_event_once(
    aws: BucketServer,
    tree: str,
    bucket_files: dict[str, bytes],
    read_ahead: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link()
    monkeypatch.setenv("SEGROUTE_READ_AHEAD", read_ahead)
    cut = max(bucket_files, key=lambda key: len(bucket_files[key]))
    half = len(bucket_files[cut]) // 2
    aws.faults.append(Fault(lambda r: r.is_get_of(f"/{ARCHIVE}/{cut}"), cut_after=half, times=1))
    from_bucket = dry_run(f"s3://{ARCHIVE}/")
    from_disk = dry_run(tree)
    assert (from_bucket.exit_code, from_disk.exit_code) == (0, 0), from_bucket.stderr
    assert as_on_disk(from_bucket.stdout, f"s3://{ARCHIVE}/", "logs/") == from_disk.stdout
    asked = [r.range for r in aws.taken() if r.is_get_of(f"/{ARCHIVE}/{cut}")]
    assert asked[0] is None and asked[1] is not None and asked[1].startswith("bytes=")
    assert asked[1] == f"bytes={half}-{len(bucket_files[cut]) - 1}"


def test_an_object_cut_off_every_time_is_rejected_where_it_stopped(
    aws: BucketServer, bucket_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    link()
    retries = 3
    backoff = {"init_backoff": timedelta(milliseconds=1), "max_backoff": timedelta(milliseconds=2), "base": 2}
    monkeypatch.setattr(buckets, "RETRY", {"max_retries": retries, "backoff": backoff})
    cut = next(
        key for key, content in bucket_files.items() if key.endswith(".gz") and content.startswith(b"{")
    )
    eighth = len(bucket_files[cut]) // 8
    # Each answer is cut off after an eighth of the object, so the last resume still ends short of it.
    aws.faults.append(Fault(lambda r: r.is_get_of(f"/{ARCHIVE}/{cut}"), cut_after=eighth))
    result = dry_run(f"s3://{ARCHIVE}/{cut}")
    assert result.exit_code == 1
    assert len([r for r in aws.taken() if r.is_get_of(f"/{ARCHIVE}/{cut}")]) == 1 + retries
    rejected = [line for line in result.stderr.splitlines() if "rejected (" in line]
    where = re.fullmatch(
        rf"s3://{ARCHIVE}/{re.escape(cut)}:(\d+): rejected \(unreadable\): read failed: "
        "the download broke off mid-object, and again on each retry",
        rejected[0],
    )
    assert where is not None and len(rejected) == 1, result.stderr
    # What reached the reader before the last cut was read, each line to one outcome (obstore hands
    # bytes on in chunks, so fewer lines may have reached it); the rest is one rejected record.
    line = int(where.group(1))
    assert line - 1 <= bucket_files[cut][: (1 + retries) * eighth].count(b"\n")
    found = report()
    assert found["read"] == line == sum(found["totals"].values())
    assert found["outcomes"]["rejected"] == {"unreadable": 1}


# --- 5. credentials, region and endpoint as AWS's tools take them ---------------------------------------


def test_the_region_and_the_session_token_go_as_aws_tools_send_them(
    aws: BucketServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    assert invoke("inspect", f"s3://{ARCHIVE}/segment-logs/").exit_code == 0
    assert {(r.scope.split("/")[0], r.scope.split("/")[2], r.session_token) for r in aws.taken()} == {
        (KEY_ID, "eu-west-1", True)
    }
    aws.reset()
    monkeypatch.delenv("AWS_REGION")
    assert invoke("inspect", f"s3://{ARCHIVE}/segment-logs/").exit_code == 0
    assert {r.scope.split("/")[2] for r in aws.taken()} == {"us-west-2"}


def test_the_s3_endpoint_variable_comes_before_the_general_one(
    aws: BucketServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing answers
    result = invoke("inspect", f"s3://{ARCHIVE}/segment-logs/", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["events"] > 400


def test_a_profile_is_read_from_the_aws_files(
    aws: BucketServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "no-aws-credentials"
    credentials.write_text(
        f"[replay]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = {SECRET}\n"
    )
    (tmp_path / "no-aws-config").write_text("[profile replay]\nregion = ap-southeast-2\n")
    monkeypatch.setenv("AWS_PROFILE", "replay")
    # Keys in the environment come first, as they do for the AWS CLI.
    assert invoke("inspect", f"s3://{ARCHIVE}/segment-logs/").exit_code == 0
    assert {r.scope.split("/")[0] for r in aws.taken()} == {KEY_ID}
    aws.reset()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.delenv(name)
    result = invoke("inspect", f"s3://{ARCHIVE}/segment-logs/", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert {(r.scope.split("/")[0], r.scope.split("/")[2]) for r in aws.taken()} == {
        ("AKIDFROMPROFILE", "ap-southeast-2")
    }


@pytest.mark.usefixtures("aws")
def test_a_profile_that_does_not_exist_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    result = invoke("inspect", f"s3://{ARCHIVE}/")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: AWS credentials: The config profile (nobody) could not be found\n",
    )


@pytest.mark.usefixtures("aws")
def test_a_profile_without_boto3_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 raises ImportError
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_PROFILE", "replay")
    result = invoke("inspect", f"s3://{ARCHIVE}/")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: AWS_PROFILE='replay': reading a profile needs boto3: pip install boto3\n",
    )


@pytest.mark.usefixtures("aws")
def test_without_the_extra_a_url_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "obstore", None)
    result = invoke("send", "--dry-run", f"s3://{ARCHIVE}/segment-logs/")
    install = "reading s3:// needs the s3 extra: pip install 'segroute[s3]'"
    assert (result.exit_code, result.stderr) == (2, f"error: s3://{ARCHIVE}/segment-logs/: {install}\n")


@pytest.mark.usefixtures("aws")
def test_a_read_ahead_that_is_not_a_number_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGROUTE_READ_AHEAD", "lots")
    result = invoke("send", "--dry-run", f"s3://{ARCHIVE}/segment-logs/")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: SEGROUTE_READ_AHEAD='lots': expected a whole number of objects (0 turns it off)\n",
    )


def test_a_message_from_the_store_loses_its_secrets_and_signed_urls() -> None:
    environ = {"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}
    text = (
        "Generic S3 error: Error performing GET http://127.0.0.1:9/b/k?X-Amz-Signature=abc&X-Amz-Date=1 in "
        f"3ms - key {SECRET} token {TOKEN}\n\nDebug source: {SECRET}"
    )
    assert describe(Exception(text), environ) == (
        "Generic S3 error: Error performing GET http://127.0.0.1:9/b/k in 3ms - key *** token ***"
    )


@pytest.mark.usefixtures("aws")
def test_urls_load_the_library_only_when_one_is_named(tree: str) -> None:
    watched = ["obstore", "boto3"]
    assert run_fresh(["--help"], watched)[:2] == (0, [])
    assert run_fresh(["send", "--dry-run", "-q", "--no-ledger", tree], watched)[:2] == (0, [])


def test_a_placeholder_named_outright_is_a_note_and_never_fetched(aws: BucketServer) -> None:
    result = invoke("inspect", f"s3://{ARCHIVE}/segment-logs/dummy-object.txt", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert (json.loads(result.stdout)["notes"], gets(aws, ARCHIVE)) == (1, [])
    # Asked about twice (the check, then the read) and signed with the test's key for us-east-1.
    assert [(r.method, r.path) for r in aws.taken()] == [
        ("HEAD", f"/{ARCHIVE}/segment-logs/dummy-object.txt")
    ] * 2
    assert {r.scope.split("/")[0] + "/" + r.scope.split("/")[2] for r in aws.taken()} == {
        f"{KEY_ID}/us-east-1"
    }
