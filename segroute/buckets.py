"""Inputs that live in an object store: ``s3://`` URLs (and ``gs://``, ``az://``), read through obstore.

A URL names one object or a prefix, read as a folder is: every object below it in key order. A
prefix is listed page by page; with a day filter it is listed one level at a time with a delimiter,
so a day folder left unread costs its name in a listing and nothing more. Objects are downloaded a
few ahead of the one being read (`read_ahead`), each on a thread of its own into a bounded buffer:
the reader rarely waits on a round trip, memory stays bounded, and objects are still read in the
order they are listed. A download cut off mid-object resumes where it stopped (obstore's retry), so
every byte, and so every event, is handed to the reader once.

obstore is the ``s3`` extra, imported only when a URL is read, so nothing else starts slower.
Credentials, region and endpoint come as AWS's own tools take them (the ``AWS_*`` variables, a
profile through boto3 when it is installed, container and instance roles); nothing here ever puts a
secret into a message. ``gs://`` takes ``STORAGE_EMULATOR_HOST`` as Google's client libraries do (an
emulator's address, asked without credentials), else obstore's own ``GOOGLE_*`` variables and
Google's application default credentials; ``az://`` takes obstore's ``AZURE_*`` variables.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from segroute.errors import InputError
from segroute.models import Item, Rejected
from segroute.names import display_name
from segroute.streams import CHUNK_BYTES

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import ClientConfig, ObjectStore, RetryConfig, S3Config

__all__ = [
    "EXTRA_INSTALL",
    "Bucket",
    "Download",
    "Listed",
    "check_url",
    "is_url",
    "open_bucket",
    "read_ahead_window",
]

SCHEMES = ("s3", "gs", "az")
EXTRA_INSTALL = "pip install 'segroute[s3]'"
READ_AHEAD = 4
"""Objects downloaded ahead of the one being read; ``SEGROUTE_READ_AHEAD`` overrides it, 0 turns
read-ahead off (each object is then asked for when the reader reaches it)."""
BUFFER_CHUNKS = 16
"""Chunks (of about CHUNK_BYTES) one download holds before the reader takes them: 4 MiB."""
LIST_PAGE = 1000
"""Keys per listing page, S3's own page size."""
RETRY: RetryConfig = {
    "max_retries": 10,
    "retry_timeout": timedelta(minutes=3),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=15), "base": 2},
}
"""obstore's retry (its defaults, spelled out as the test seam): connection errors, 5xx and bodies cut
off mid-object, with jittered exponential backoff. A cut body is asked for again from the byte where
it stopped, so nothing is read twice; the answer must be the same object (its ETag), or the read fails."""
PUT_WAIT = 0.1
"""Seconds a download waits for room in its buffer before it looks whether it was cancelled."""
_SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_BEARER_TOKEN",
)
_WRONG_REGION = ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException")
_S3_CODES = {
    "NoSuchBucket": "no such bucket",
    "NoSuchKey": "no such object",
    "AccessDenied": "access denied",
    "AllAccessDisabled": "access denied",
    "InvalidAccessKeyId": "the store does not know the access key (AWS_ACCESS_KEY_ID, or the profile's)",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "PreconditionFailed": "it changed while it was read",
}


def is_url(name: str) -> bool:
    """Whether an input names an object store: ``s3://``, ``gs://`` or ``az://``."""
    scheme, sep, _ = name.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def read_ahead_window(environ: Mapping[str, str] = os.environ) -> int:
    """How many objects to download ahead: ``SEGROUTE_READ_AHEAD``, else READ_AHEAD."""
    text = environ.get("SEGROUTE_READ_AHEAD", "").strip()
    if not text:
        return READ_AHEAD
    if not text.isdigit():
        raise InputError(f"SEGROUTE_READ_AHEAD={text!r}: expected a whole number of objects (0 turns it off)")
    return int(text)


class ObjectStoreError(OSError):
    """What went wrong with a bucket or an object, in one line without secrets. An `OSError`, so the
    readers turn it into a rejected record that names the object, as they do a file's."""


@dataclass(frozen=True)
class Listed:
    """An object as listed: its key, where it is shown from, and the parts of its key below the
    prefix the input named (hidden files and placeholders are told by these)."""

    key: str
    url: str
    parts: tuple[str, ...]


def check_url(name: str) -> None:
    """Raise `InputError` unless a URL names an object, or a prefix with an object under it."""
    read_ahead_window()
    bucket = open_bucket(name)
    try:
        found = bucket.find()
        if isinstance(found, str):
            bucket.require_any(found)
    except OSError as exc:
        raise InputError(f"{display_name(name)}: {exc}") from None


def open_bucket(name: str, environ: Mapping[str, str] = os.environ) -> Bucket:
    """The bucket a URL names, with its store; `InputError` when the ``s3`` extra is missing."""
    scheme, _, rest = name.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InputError(f"{display_name(name)}: no bucket named (expected {scheme}://BUCKET/PREFIX)")
    try:
        import obstore  # noqa: F401  # the s3 extra
    except ImportError:
        raise InputError(
            f"{display_name(name)}: reading {scheme}:// needs the s3 extra: {EXTRA_INSTALL}"
        ) from None
    try:
        store = _make_store(scheme.lower(), bucket, environ)
    except InputError:
        raise
    except Exception as exc:  # obstore's: a credentials file that is missing or not JSON, a bad setting
        raise InputError(f"{display_name(name)}: {describe(exc, environ)}") from None
    return Bucket(scheme.lower(), bucket, key, store, environ)


def _make_store(scheme: str, bucket: str, environ: Mapping[str, str]) -> ObjectStore:
    """A store configured from the environment as AWS's tools (or Google's, Azure's) would be."""
    from obstore.store import S3Store, from_url

    if scheme == "gs" and environ.get("STORAGE_EMULATOR_HOST", "").strip():
        return _emulated_gcs_store(bucket, environ["STORAGE_EMULATOR_HOST"].strip())
    if scheme != "s3":
        store: ObjectStore = from_url(f"{scheme}://{bucket}", retry_config=RETRY)  # GOOGLE_*, AZURE_*
        return store
    config: S3Config = {}
    # Set here, not left to obstore's own reading of the environment, for AWS's precedence: the S3
    # endpoint before the general one, AWS_REGION before AWS_DEFAULT_REGION.
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    client: ClientConfig = {}
    if endpoint:
        config["endpoint"] = endpoint
        # AWS's tools talk plain HTTP to an endpoint that says http:// (MinIO on a laptop, say).
        client["allow_http"] = endpoint.lower().startswith("http://")
    provider = _profile_credentials(environ)
    if region:
        config["region"] = region
    elif provider is not None and provider.config.get("region"):
        config["region"] = provider.config["region"]
    return S3Store(
        bucket, config=config, client_options=client, retry_config=RETRY, credential_provider=provider
    )


def _emulated_gcs_store(bucket: str, host: str) -> ObjectStore:
    """A GCS store that talks to the emulator at ``STORAGE_EMULATOR_HOST``, as Google's client
    libraries do when it is set: that address instead of storage.googleapis.com (with its scheme, as
    Python's client takes it; ``HOST:PORT`` alone means plain HTTP), and no credentials, so nothing
    asks a metadata server for a token. obstore speaks GCS's XML API, which the emulator must serve
    at that address (fake-gcs-server does when started with ``-public-host HOST:PORT``)."""
    from obstore.store import GCSStore

    base = (host if "://" in host else f"http://{host}").rstrip("/")
    return GCSStore(
        bucket,
        config={"base_url": base, "skip_signature": True},
        client_options={"allow_http": base.lower().startswith("http://")},
        retry_config=RETRY,
    )


def _profile_credentials(environ: Mapping[str, str]) -> Any:
    """boto3's credential chain (profiles, SSO, assumed roles: what the AWS CLI reads) when no key is
    in the environment and boto3 is installed; else None, and obstore's own chain reads the
    environment, web identity, and container or instance roles. Keys in the environment come before
    a profile, as they do for the AWS CLI."""
    profile = environ.get("AWS_PROFILE")
    if environ.get("AWS_ACCESS_KEY_ID"):
        return None
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        if profile:
            raise InputError(
                f"AWS_PROFILE={profile!r}: reading a profile needs boto3: pip install boto3"
            ) from None
        return None
    try:
        return Boto3CredentialProvider(boto3.Session(profile_name=profile or None))
    except Exception as exc:  # botocore's ProfileNotFound, NoCredentialsError and the like
        raise InputError(f"AWS credentials: {_one_line(str(exc), environ)}") from None


class Bucket:
    """One bucket (or container) and the key an input named in it."""

    def __init__(
        self, scheme: str, name: str, key: str, store: ObjectStore, environ: Mapping[str, str]
    ) -> None:
        self.scheme = scheme
        self.name = name
        self.key = key
        self._store = store
        self._environ = environ

    def url(self, key: str) -> str:
        """The URL of a key in this bucket, as origins show it."""
        return f"{self.scheme}://{self.name}/{key}"

    def find(self) -> Listed | str:
        """The object the URL names, or else the prefix (a key without its last ``/``) to list."""
        import obstore

        if not self.key or self.key.endswith("/"):
            return self.key.rstrip("/")
        try:
            obstore.head(self._store, self.key)
        except FileNotFoundError:
            return self.key
        except Exception as exc:
            raise self._error(exc) from None
        return Listed(self.key, self.url(self.key), (self.key.rsplit("/", 1)[-1],))

    def require_any(self, prefix: str) -> None:
        """Raise `ObjectStoreError` unless at least one object lies under the prefix."""
        import obstore

        try:
            first = next(iter(obstore.list(self._store, prefix or None, chunk_size=1)), [])
        except Exception as exc:
            raise self._error(exc) from None
        if not first:
            raise ObjectStoreError("no such object, and no object under it as a prefix")

    def walk(
        self, prefix: str, enter: Callable[[tuple[str, ...]], bool] | None
    ) -> Iterator[Listed | Rejected]:
        """Every object under a prefix, in key order. With ``enter`` (which takes the parts of a
        folder's key and says whether to list it), one level at a time with a delimiter; without,
        flat, page by page. A listing that fails is a `Rejected` naming the prefix, and the walk
        goes on."""
        if enter is None:
            yield from self._list(prefix)
        else:
            yield from self._walk(prefix, prefix, enter)

    def _list(self, prefix: str) -> Iterator[Listed | Rejected]:
        import obstore

        try:
            for page in obstore.list(self._store, prefix or None, chunk_size=LIST_PAGE):
                for meta in page:
                    yield self._listed(meta, prefix)
        except Exception as exc:
            yield self._cannot_list(prefix, exc)

    def _walk(
        self, top: str, prefix: str, enter: Callable[[tuple[str, ...]], bool]
    ) -> Iterator[Listed | Rejected]:
        import obstore

        try:
            found = obstore.list_with_delimiter(self._store, prefix or None)
        except Exception as exc:
            yield self._cannot_list(prefix, exc)
            return
        # Each folder sorts as its name and a '/', as its objects' keys do in a flat listing.
        entries: list[tuple[str, ObjectMeta | None]] = [(meta["path"], meta) for meta in found["objects"]]
        entries += [(folder + "/", None) for folder in found["common_prefixes"]]
        for path, meta in sorted(entries, key=lambda entry: entry[0]):
            if meta is not None:
                yield self._listed(meta, top)
            elif enter(tuple(path.rstrip("/").split("/"))):
                yield from self._walk(top, path.rstrip("/"), enter)

    def _listed(self, meta: ObjectMeta, prefix: str) -> Listed:
        key = meta["path"]
        below = key[len(prefix) + 1 :] if prefix else key
        return Listed(key, self.url(key), tuple(below.split("/")))

    def _cannot_list(self, prefix: str, exc: Exception) -> Rejected:
        where = display_name(self.url(prefix + "/" if prefix else ""))
        return Rejected(where, "unreadable", f"cannot list: {self._error(exc)}")

    def read_ahead(self, entries: Iterable[Listed | Item], *, window: int) -> Generator[Download | Item]:
        """The entries in order, each `Listed` one as a `Download` started up to ``window`` objects
        before the reader reaches it; anything else as it is. A download handed out is closed when
        the next entry is asked for, and those not handed out when this generator is closed."""
        pending: deque[Download | Item] = deque()
        started = 0
        entries = iter(entries)
        try:
            while True:
                while started <= window and (entry := next(entries, None)) is not None:
                    if isinstance(entry, Listed):
                        download = Download(self._store, entry, self._error)
                        if window:
                            download.start()
                        pending.append(download)
                        started += 1
                    else:
                        pending.append(entry)
                if not pending:
                    return
                item = pending.popleft()
                if isinstance(item, Download):
                    started -= 1
                    try:
                        yield item
                    finally:
                        item.close()
                else:
                    yield item
        finally:
            for left in pending:
                if isinstance(left, Download):
                    left.close()

    def _error(self, exc: BaseException) -> ObjectStoreError:
        return ObjectStoreError(describe(exc, self._environ))


_END = b""
"""What a download puts after its last chunk."""


class Download:
    """One object's bytes, fetched on a thread of its own into a bounded buffer.

    Started ahead (`start`) or when first read (`open`). A body cut off mid-object is taken up
    again by obstore's retry (`RETRY`) from the byte where it stopped, and refused if the object
    changed meanwhile: the bytes handed out are the object's, each once, then maybe a read error.
    """

    def __init__(
        self, store: ObjectStore, listed: Listed, error: Callable[[BaseException], ObjectStoreError]
    ) -> None:
        self.listed = listed
        self._store = store
        self._error = error
        self._chunks: queue.Queue[bytes | ObjectStoreError] = queue.Queue(maxsize=BUFFER_CHUNKS)
        self._answered = threading.Event()
        self._failure: ObjectStoreError | None = None
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        self._left = b""
        self._ended = False

    def start(self) -> None:
        """Start fetching, if that has not started yet."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._fetch, name="segroute-download", daemon=True)
            self._thread.start()

    def open(self) -> Download:
        """Wait for the store's answer; `ObjectStoreError` when it refuses (gone since it was listed,
        access denied), else the download itself, to ``read``."""
        self.start()
        self._answered.wait()
        if self._failure is not None:
            raise self._failure
        return self

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (what one chunk has left); b"" at the end."""
        if not self._left:
            if self._ended:
                return b""
            chunk = self._chunks.get()
            if isinstance(chunk, ObjectStoreError):
                self._ended = True
                raise chunk
            if chunk is _END:
                self._ended = True
                return b""
            self._left = chunk
        if size < 0 or size >= len(self._left):
            data, self._left = self._left, b""
        else:
            data, self._left = self._left[:size], self._left[size:]
        return data

    def close(self) -> None:
        """Stop fetching; the thread ends at its next chunk."""
        self._cancelled.set()

    def _fetch(self) -> None:
        import obstore

        try:
            try:
                result = obstore.get(self._store, self.listed.key)
            except FileNotFoundError:
                raise ObjectStoreError("no such object: deleted after it was listed") from None
            self._answered.set()
            for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
                if not self._put(bytes(chunk)):
                    return
            self._put(_END)
        # A panic in obstore's Rust is a BaseException, not an Exception: the reader must hear of it.
        except BaseException as exc:
            failure = exc if isinstance(exc, ObjectStoreError) else self._error(exc)
            if self._answered.is_set():
                self._put(failure)
            else:
                self._failure = failure
                self._answered.set()

    def _put(self, item: bytes | ObjectStoreError) -> bool:
        """Hand a chunk to the reader, waiting for room; False once the download is cancelled."""
        while not self._cancelled.is_set():
            try:
                self._chunks.put(item, timeout=PUT_WAIT)
                return True
            except queue.Full:
                continue
        return False


def describe(exc: BaseException, environ: Mapping[str, str] = os.environ) -> str:
    """What a store's error says, in one line, with no secret in it: the S3 error code in words where
    it is known, else the first line of the library's message."""
    text = str(exc)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    found = code.group(1) if code else None
    if found in _WRONG_REGION:
        region = re.search(r"<Region>([^<]+)</Region>", text)
        where = f" ({region.group(1)})" if region else ""
        return f"the bucket is in another region{where}: set AWS_REGION to its region" + _used_region(environ)
    if found in _S3_CODES:
        return _S3_CODES[found]
    if isinstance(exc, FileNotFoundError):
        return "no such object"
    name = type(exc).__name__
    if name in ("PermissionDeniedError", "UnauthenticatedError") or " 403 " in text:
        return "access denied"
    if "body error" in text:  # the retries took a cut-off body up again, and it broke off again
        return "the download broke off mid-object, and again on each retry"
    if " 301 " in text or "incorrectly configured region" in text:
        return "the bucket is in another region: set AWS_REGION to its region" + _used_region(environ)
    said = re.search(r"<Message>([^<]*)</Message>", text)
    if said and said.group(1).strip():  # an error code not known here: what the store said of it
        from html import unescape

        return _one_line(f"{_one_line(text, environ)}: {unescape(said.group(1).strip())}", environ)
    return _one_line(text, environ)


def _used_region(environ: Mapping[str, str]) -> str:
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    return f" (asked in {region})" if region else " (asked in us-east-1, the default)"


def _one_line(text: str, environ: Mapping[str, str]) -> str:
    """The first line of a message, shortened, with query strings and secret values taken out."""
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    line = re.split(r": <[?A-Za-z]", line, maxsplit=1)[0]  # the store's XML answer (describe reads it)
    line = re.sub(r"(https?://[^\s?]*)\?\S*", r"\1", line)  # signed URLs carry credentials
    for variable in _SECRET_VARIABLES:
        secret = environ.get(variable)
        if secret:
            line = line.replace(secret, "***")
    return line[:300]
