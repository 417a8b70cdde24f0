"""A fake Courier API on 127.0.0.1 that records what it receives and misbehaves on purpose.

It speaks the endpoints segroute uses (``POST /automations/{id}/invoke``, ``POST /journeys/{id}/invoke``,
``POST /profiles/{id}``, and Courier's Segment intake ``POST /inbound/segment``) and
keeps Courier's idempotency semantics: the first response the application gives for a key is stored
and every repeat of the key gets it back, without the application acting again. Faults scripted with
`FakeCourier.fault` happen at the edge, in front of that store, as a gateway's 429s and 503s do.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from aiohttp import web

API_KEY = "sk_test_segroute_4f9a1c2e7b"


@dataclass(frozen=True)
class Received:
    """One request as it reached the server."""

    method: str
    path: str
    """The raw path, as sent (percent-encoded)."""
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers.get("Idempotency-Key", "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Fault:
    """What the edge does to the next ``times`` requests that ``match``."""

    kind: Literal["status", "delay", "drop", "drop_after"]
    times: int
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    match: Callable[[Received], bool] = lambda _: True
    message: str = "Service Unavailable"
    body: bytes | None = None
    """For ``status``: this body as it is, as text/html (a gateway's error page), instead of Courier's
    JSON error."""


class TokenBucket:
    """A rate limit as APIs keep one: ``rate`` requests a second, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        """Whether a request may pass now."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


async def _cancel_the_rest() -> None:
    """End the handlers a delay still holds, so the loop closes with no task pending."""
    left = asyncio.all_tasks() - {asyncio.current_task()}
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)


class FakeCourier:
    """The server's state; `start` runs it on a thread of its own."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.acted: Counter[str] = Counter()
        """Idempotency-Key -> times the application acted on it (must never pass 1)."""
        self.acted_order: list[Received] = []
        """The requests the application acted on, in the order it did."""
        self.stored: dict[str, tuple[int, bytes]] = {}
        self.rejected_recipients: set[str] = set()
        self.failing_recipients: set[str] = set()
        """Recipients whose requests the application fails with a 500, which Courier stores under the
        key like any first answer."""
        self.faults: list[Fault] = []
        self.limit: TokenBucket | None = None
        """A rate limit in front of everything: 429 with ``Retry-After: 1`` above it."""
        self.throttled = 0
        self.lock = threading.Lock()
        self.handling = 0
        """Requests received and not answered yet (a scripted delay holds them)."""
        self._answered = threading.Condition(self.lock)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fault(
        self, kind: Literal["status", "delay", "drop", "drop_after"], times: int = 1, **kwargs: Any
    ) -> None:
        """Script the edge: ``status`` answers with a status (and ``message``), ``delay`` answers late,
        ``drop`` closes the connection before the application sees the request, ``drop_after`` once it
        has acted."""
        with self.lock:
            self.faults.append(Fault(kind, times, **kwargs))

    def _take_fault(self, received: Received) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.match(received):
                    fault.times -= 1
                    return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(request.method, request.raw_path, dict(request.headers), await request.read())
        with self.lock:
            self.handling += 1
        try:
            return await self._answer(request, received)
        finally:
            with self._answered:
                self.handling -= 1
                self._answered.notify_all()

    async def _answer(self, request: web.Request, received: Received) -> web.StreamResponse:
        with self.lock:
            self.received.append(received)
            limited = self.limit is not None and not self.limit.take()
            if limited:
                self.throttled += 1
        if limited:
            body = json.dumps({"message": "Too Many Requests", "type": "rate_limit_error"}).encode()
            return web.Response(status=429, body=body, headers={"Retry-After": "1"})
        fault = self._take_fault(received)
        if fault is not None:
            if fault.kind == "status" and fault.body is not None:
                return web.Response(
                    status=fault.status, body=fault.body, headers=fault.headers, content_type="text/html"
                )
            if fault.kind == "status":
                kind = "api_error" if fault.status >= 500 else "invalid_request_error"
                body = json.dumps({"message": fault.message, "type": kind}).encode()
                return web.Response(status=fault.status, body=body, headers=fault.headers)
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            if fault.kind == "drop":
                return self._drop(request)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            body = json.dumps({"message": "Unauthorized", "type": "authentication_error"}).encode()
            return web.Response(status=401, body=body, content_type="application/json")
        status, body = self._apply(received)
        if fault is not None and fault.kind == "drop_after":
            return self._drop(request)
        return web.Response(status=status, body=body, content_type="application/json")

    def _drop(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=500)

    def _apply(self, received: Received) -> tuple[int, bytes]:
        """The application behind the idempotency store."""
        with self.lock:
            if received.key in self.stored:
                return self.stored[received.key]
            parts = received.path.split("/")
            try:
                payload = received.json()
            except ValueError:
                return 400, b'{"message": "invalid JSON", "type": "invalid_request_error"}'
            status = 200
            if len(parts) == 4 and parts[1] == "automations" and parts[3] == "invoke":
                recipient = payload.get("recipient")
                answer = {"runId": f"1-run-{len(self.acted_order)}"}
            elif len(parts) == 4 and parts[1] == "journeys" and parts[3] == "invoke":
                recipient = payload.get("user_id")
                answer = {"runId": f"1-journey-{len(self.acted_order)}"}
            elif len(parts) == 3 and parts[1] == "profiles":
                recipient = unquote(parts[2])
                answer = {"status": "SUCCESS"}
            elif received.path == "/inbound/segment":
                # As Segment's own tests of its Courier destination mock Courier's answer.
                recipient = payload.get("userId") or payload.get("anonymousId")
                status, answer = 202, {"messageId": payload.get("messageId")}
            else:
                return 404, b'{"message": "Not Found", "type": "invalid_request_error"}'
            if recipient in self.rejected_recipients:
                # Validation failures are not stored, as with Courier.
                return 400, json.dumps(
                    {"message": f"invalid recipient {recipient}", "type": "invalid_request_error"}
                ).encode()
            if recipient in self.failing_recipients:
                failure = (500, b'{"message": "Internal Server Error", "type": "api_error"}')
                self.stored[received.key] = failure
                return failure
            self.acted[received.key] += 1
            self.acted_order.append(received)
            response = (status, json.dumps(answer).encode())
            self.stored[received.key] = response
            return response

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            # Handlers still held by a scripted delay at the end are cancelled, not waited for.
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            server = site._server
            assert server is not None and isinstance(server, asyncio.base_events.Server)
            self.port = server.sockets[0].getsockname()[1]
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(_cancel_the_rest())
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def wait_until_answered(self, timeout: float = 30.0) -> None:
        """Wait until every request received so far has been answered (or its connection dropped)."""
        with self._answered:
            if not self._answered.wait_for(lambda: self.handling == 0, timeout):
                raise AssertionError(f"{self.handling} requests still unanswered after {timeout:g}s")

    def acted_keys(self) -> set[str]:
        with self.lock:
            return set(self.acted)
