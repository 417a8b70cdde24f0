"""Make the example events with the official Segment client, segment-analytics-python.

The client posts real /v1/batch bodies to a capture server on 127.0.0.1; nothing leaves the machine.
``examples/batch.json`` is the first body as the client sent it; ``examples/events.jsonl`` holds every
captured item, one per line; ``examples/archive.tar.gz`` holds them as Segment's raw-data archive
does, with the fields its servers add. Ids and times are fixed, so the files
only change when the client does.

Run: pip install segment-analytics-python && python examples/capture.py
The tests import `capture` to get fresh bodies from the installed client.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from segment.analytics.client import Client

HERE = Path(__file__).parent
WRITE_KEY = "example-write-key"
START = datetime(2026, 11, 2, 9, 15, tzinfo=UTC)


class _CaptureHandler(BaseHTTPRequestHandler):
    server: _CaptureServer

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with self.server.lock:
            self.server.bodies.append(json.loads(body))
        reply = b'{"success": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Quiet: the bodies are the record."""


class _CaptureServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CaptureHandler)
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()


@contextmanager
def _server() -> Iterator[_CaptureServer]:
    server = _CaptureServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def capture(scenario: Callable[[Client], None], *, gzip_bodies: bool = False) -> list[dict[str, Any]]:
    """Run a scenario against the real Segment client and return the /v1/batch bodies it posted."""
    with _server() as server:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        client = Client(WRITE_KEY, host=host, gzip=gzip_bodies, max_retries=0, upload_interval=0.05)
        scenario(client)
        client.flush()
        client.shutdown()
        with server.lock:
            return list(server.bodies)


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"segroute-example/{name}"))


def storefront(client: Client) -> None:
    """A small storefront day: sign-ups, checkouts, page views, an anonymous visitor, a retry."""
    at = iter(START + timedelta(minutes=7 * n) for n in range(100))
    ios = {"app": {"name": "Storefront", "version": "4.12.0"}, "os": {"name": "iOS", "version": "19.1"}}
    client.identify(
        "user-1042",
        {
            "email": "maya.okafor@example.com",
            "name": "Maya Okafor",
            "plan": "pro",
            "phone_number": "+15550100",
        },
        timestamp=next(at),
        message_id=_id("identify-1042"),
    )
    client.track(
        "user-1042", "Signed Up", {"referrer": "newsletter"}, timestamp=next(at), message_id=_id("su-1042")
    )
    client.page(
        anonymous_id="anon-7f3a",
        category="Docs",
        name="Pricing",
        properties={"url": "https://shop.example.com/pricing"},
        timestamp=next(at),
        message_id=_id("page-7f3a"),
    )
    order = {
        "order_id": "ord-88412",
        "total": 84.5,
        "currency": "EUR",
        "products": [
            {"sku": "TEA-GRN-250", "name": "Sencha 250 g", "price": 24.5, "quantity": 2},
            {"sku": "CUP-STONE", "name": "Stoneware cup", "price": 35.5, "quantity": 1},
        ],
        "coupon": None,
    }
    client.track(
        "user-1042", "Checkout Complete", order, context=ios, timestamp=next(at), message_id=_id("co-88412")
    )
    client.identify(
        "ana maría/eu",
        {"email": "ana@example.es", "name": "Ana María", "locale": "es-ES"},
        timestamp=next(at),
        message_id=_id("identify-ana"),
    )
    client.track(
        "ana maría/eu",
        "Checkout Complete",
        {"order_id": "ord-88413", "total": 12.0, "currency": "EUR", "products": []},
        timestamp=next(at),
        message_id=_id("co-88413"),
    )
    client.track(
        "ana maría/eu", "Product Viewed", {"sku": "CUP-STONE"}, timestamp=next(at), message_id=_id("pv-ana")
    )
    client.track(
        anonymous_id="anon-7f3a",
        event="Checkout Complete",
        properties={"order_id": "ord-88414", "total": 9.9, "currency": "EUR"},
        timestamp=next(at),
        message_id=_id("co-88414"),
    )
    client.group(
        "user-1042",
        "acct-311",
        {"name": "Okafor Teas Ltd", "employees": 12},
        timestamp=next(at),
        message_id=_id("group-311"),
    )
    # The app retried a request: the same messageId reaches Segment twice, and counts once.
    client.track(
        "user-1042", "Signed Up", {"referrer": "newsletter"}, timestamp=START, message_id=_id("su-1042")
    )
    client.track(
        "user-1042",
        "Password Reset Requested",
        {"ip": "203.0.113.7"},
        integrations={"All": True, "Courier": True},
        timestamp=next(at),
        message_id=_id("pw-1042"),
    )


SOURCE_ID = "Ab12Cd34Ef"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def archived(event: dict[str, Any], received: datetime) -> dict[str, Any]:
    """An event as Segment's raw-data archive holds it: the fields its servers add on arrival."""
    happened = datetime.fromisoformat(event["timestamp"])
    sent = received - timedelta(milliseconds=40)
    return dict(
        event,
        originalTimestamp=_iso(happened),
        sentAt=_iso(sent),
        receivedAt=_iso(received),
        # Segment corrects the device clock: timestamp = receivedAt - (sentAt - originalTimestamp).
        timestamp=_iso(received - (sent - happened)),
        channel="server",
        projectId=SOURCE_ID,
        version=2,
    )


def archive(events: list[dict[str, Any]]) -> bytes:
    """A tar.gz of ``segment-logs/<source-id>/<received-day>/<file>.gz``, as the S3 destination
    writes it and as people hand it around: the last event reached Segment a day late (a phone that
    was offline), so it sits in the next day's folder. Byte for byte the same on every run."""
    days: dict[int, list[dict[str, Any]]] = {}
    for n, event in enumerate(events):
        late = n == len(events) - 1
        received = datetime.fromisoformat(event["timestamp"]) + timedelta(days=1 if late else 0, seconds=2)
        day = int(datetime(received.year, received.month, received.day, tzinfo=UTC).timestamp() * 1000)
        days.setdefault(day, []).append(archived(event, received))
    files = {"segment-logs/dummy-object.txt": b""}
    for day, held in sorted(days.items()):
        lines = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in held)
        name = f"segment-logs/{SOURCE_ID}/{day}/{day + 36_000_000}.{_id(str(day))[:8]}.gz"
        files[name] = gzip.compress(lines.encode(), mtime=0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as bundle:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(content), int(START.timestamp())
            bundle.addfile(info, io.BytesIO(content))
    return gzip.compress(buffer.getvalue(), mtime=0)


def main() -> None:
    """Write examples/batch.json, examples/events.jsonl and examples/archive.tar.gz."""
    bodies = capture(storefront)
    first = dict(bodies[0], sentAt="2026-11-02T10:30:00.000000+00:00")
    (HERE / "batch.json").write_text(json.dumps(first, indent=2, ensure_ascii=False) + "\n")
    with (HERE / "events.jsonl").open("w") as out:
        for body in bodies:
            for item in body["batch"]:
                out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n")
    (HERE / "archive.tar.gz").write_bytes(archive([item for body in bodies for item in body["batch"]]))


if __name__ == "__main__":
    main()
