"""An S3-compatible server on 127.0.0.1 for the tests and the benchmark: moto's S3, served by
werkzeug on a thread, behind a recorder that keeps every request and misbehaves on purpose.

Moto answers as S3 does (listing with a delimiter, ranges, ETags and If-Match, error codes); in front
of it the recorder can wait before every answer (a network's latency), answer a request with an S3
error (access denied, a bucket in another region, an object deleted after it was listed), or cut an
object's body off after some bytes, once or every time.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

__all__ = ["BucketServer", "Fault", "Request", "s3_error"]

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
