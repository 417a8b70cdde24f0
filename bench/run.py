"""The benchmark: segroute beside its floor and its alternatives, on this machine. One table, and JSON.

    pip install -e ".[fast,bench,test]" && python bench/run.py       # about 11 minutes on 2 cores
    python bench/run.py --sizes 100000 --requests 5000               # a quicker look
    python bench/run.py --sizes 100000 --skip-send                   # the dry runs, from disk and bucket
    python bench/run.py --compare bench/results/<earlier>.json       # beside an earlier run

Everything runs on 127.0.0.1: the send endpoint is bench/server.js (Node's http module, which
answers in microseconds) when `node` is on the PATH, else a Python aiohttp server, which is slower
and says so in the table. Each measurement runs in a process of its own; peak memory is that
process's max RSS (which reads no lower than this process's own peak, printed under the table).

- Dry run: ``segroute send FILE --dry-run -o jsonl > /dev/null`` over generated events shaped as the
  official client writes them (about 1 KB: nested properties and context), gzip'd NDJSON. The floor
  is a bare loop over the same file: gunzip (python-isal when installed), orjson.loads, build the
  body, orjson.dumps. A second floor builds the body as segroute does for an event that is a line
  of its own: the line's text copied in, not the event serialized again. Rates include each
  process's start-up; each is the median of ``--repeat`` runs (3) taken in turns with the floors',
  and peak memory the highest of them.
- Dry run with jq: the same, with a condition and a data mapping on the link of "Checkout
  Complete" (`CONFIG_JQ`), beside the plain links: what the expressions cost per event they run on.
- From a bucket: a segment-logs tree of ``--s3-events`` events (100,000, made as above) in
  ``--s3-objects`` gzip'd objects (200) over three day folders, dry-run as above from disk; from a
  bucket of moto's S3 on 127.0.0.1 (tests/bucket_server.py, in a process of its own); and from it
  with ``--s3-latency-ms`` (20) added to every request, as a bucket across a network has, with
  read-ahead on (SEGROUTE_READ_AHEAD=4, the default) and off (0: each object asked for when the
  reader reaches it). Medians of ``--repeat`` runs taken in turns, and peak memory. moto serves
  from Python on the same cores as segroute: the bucket rows are a floor for a real bucket nearby.
  They need the ``s3`` extra and moto (the ``test`` extra); without them, or with ``--skip-s3``,
  the table says they were skipped and why.
- Start-up: milliseconds to run ``segroute --help`` and ``segroute links``, medians of
  ``--startup-runs`` (9); beside them, a bare two-command typer app's ``--help`` (the framework's
  own start-up) and ``python -c pass``.
- Send: requests per second against the endpoint at concurrency 1, 16 and 64, the median of
  ``--repeat`` runs (3) taken in turns with the ceiling's, from segroute's own
  report (the run, without interpreter start-up; the ledger on, as by default). Beside it: the
  ceiling, a bare aiohttp loop posting pre-serialized bodies with the same concurrency; and what a
  user would write instead, the official Courier SDK (``trycourier``) in a loop, sequential and on a
  pool of 16 threads.
- Send with latency: the same endpoint answering ``--latency-ms`` (20) late, as an API across a
  network does: segroute at concurrency 16 and 64 beside the SDK, sequential and on 16 threads.
  Against an endpoint that answers in microseconds every client is bound by its own CPU; here,
  by how many requests it keeps in flight.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import gzip
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LINKED = "Checkout Complete"
AUTOMATION = "order-confirmation"
CONFIG = f'[[links]]\nevent = "{LINKED}"\nautomation = "{AUTOMATION}"\n\n[[links]]\nevent = "Signed Up"\n'
CONFIG += 'automation = "welcome-flow"\n'
CONFIG_JQ = CONFIG.replace(
    f'automation = "{AUTOMATION}"\n',
    f'automation = "{AUTOMATION}"\nwhen = ".properties.total > 50"\ndata = ".properties"\n',
)
"""The same links, the linked one with a condition and a data mapping: each of its events runs two
jq programs."""
API_KEY = "bench-key-not-secret"

# --- events -------------------------------------------------------------------------------------

PRODUCTS: list[dict[str, Any]] = [
    {"sku": f"SKU-{n:05d}", "name": name, "price": price, "category": category}
    for n, (name, price, category) in enumerate(
        [
            ("Sencha 250 g", 24.5, "tea"),
            ("Stoneware cup", 35.5, "kitchen"),
            ("Gyokuro 100 g", 31.0, "tea"),
            ("Kyusu teapot", 89.0, "kitchen"),
            ("Bamboo whisk", 18.0, "tools"),
        ]
    )
]


def _id(rng: random.Random) -> str:
    value = f"{rng.getrandbits(128):032x}"
    return f"{value[:8]}-{value[8:12]}-4{value[13:16]}-a{value[17:20]}-{value[20:]}"


def make_event(n: int, rng: random.Random, *, kind: str | None = None) -> dict[str, Any]:
    """An event as analytics-python writes it and Segment archives it: about 1 KB."""
    user = f"user-{rng.randrange(50_000):05d}"
    at = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=n * 1.7)
    stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    kind = kind or rng.choices(["track", "identify", "page"], weights=[75, 15, 10])[0]
    context = {
        "app": {"name": "Storefront", "version": "4.12.0", "build": "4120", "namespace": "com.example.shop"},
        "device": {"id": _id(rng), "manufacturer": "Apple", "model": "iPhone15,2", "type": "ios"},
        "ip": f"203.0.113.{rng.randrange(256)}",
        "library": {"name": "analytics-python", "version": "2.3.3"},
        "locale": "de-DE",
        "network": {"wifi": rng.random() < 0.6, "carrier": "Telekom", "cellular": True},
        "os": {"name": "iOS", "version": "17.1.2"},
        "screen": {"width": 390, "height": 844, "density": 3},
        "timezone": "Europe/Berlin",
        "userAgent": "Storefront/4.12.0 (iPhone; iOS 17.1.2; Scale/3.00)",
    }
    event: dict[str, Any] = {"integrations": {}, "anonymousId": _id(rng)}
    if kind == "track":
        name = rng.choices([LINKED, "Product Viewed", "Signed Up"], weights=[50, 40, 10])[0]
        items = [dict(product, quantity=rng.randrange(1, 4)) for product in rng.sample(PRODUCTS, 2)]
        event["properties"] = {
            "order_id": f"ord-{n}",
            "total": round(sum(p["price"] * p["quantity"] for p in items), 2),
            "currency": "EUR",
            "products": items,
            "coupon": None,
        }
        event.update(timestamp=stamp, context=context, userId=user, type="track", event=name)
    elif kind == "identify":
        event.update(timestamp=stamp, context=context, userId=user, type="identify")
        event["traits"] = {"email": f"{user}@example.com", "name": f"Customer {user[5:]}", "plan": "pro"}
    else:
        event["properties"] = {"url": "https://shop.example.com/tea", "path": "/tea", "title": "Tea"}
        event.update(timestamp=stamp, context=context, userId=user, type="page", name="Tea", category="Shop")
    event.update(
        messageId=_id(rng),
        originalTimestamp=stamp,
        sentAt=stamp,
        receivedAt=stamp,
        channel="server",
        projectId="Ab12Cd34Ef",
        version=2,
    )
    return event


def _gzip_writer(path: Path) -> Any:
    try:
        from isal import igzip

        opener: Any = igzip.open  # typed or not, depending on the isal installed
        return opener(path, "wb", compresslevel=1)
    except ImportError:
        return gzip.open(path, "wb", compresslevel=1)


def write_events(path: Path, count: int, *, kind: str | None = None, seed: int = 2026) -> float:
    """Write ``count`` events as gzip'd NDJSON; the mean event size in bytes."""
    rng = random.Random(seed)
    total = 0
    with _gzip_writer(path) as out:
        lines = []
        for n in range(count):
            line = orjson.dumps(make_event(n, rng, kind=kind)) + b"\n"
            total += len(line)
            lines.append(line)
            if len(lines) >= 4096:
                out.write(b"".join(lines))
                lines = []
        out.write(b"".join(lines))
    return total / max(count, 1)


# --- measuring a process ------------------------------------------------------------------------


def measured(
    command: list[str], *, env: dict[str, str] | None = None, stdout: Any = None
) -> tuple[float, int]:
    """Run a command; its wall time in seconds and its peak memory (max RSS) in MB."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{err[-2000:]}")
    return seconds, _megabytes(usage.ru_maxrss)


def _megabytes(maxrss: int) -> int:
    """ru_maxrss in MB: it is in KB on Linux, in bytes on macOS. A child's reads no lower than its
    parent's peak at the time it started (Linux carries the high-water mark across fork and exec)."""
    return round(maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024))


_FLOOR_LOOP = """
import sys, orjson
try:
    from isal import igzip as gz
except ImportError:
    import gzip as gz
out = open('/dev/null', 'wb')
lines = []
with gz.open(sys.argv[1], 'rb') as f:
    for line in f:
        e = orjson.loads(line)
        lines.append(BODY)
        if len(lines) >= 1024:
            out.write(b"\\n".join(lines)); lines = []
out.write(b"\\n".join(lines))
"""
FLOOR = _FLOOR_LOOP.replace(
    "BODY", """orjson.dumps({"brand": None, "data": e, "profile": None, "recipient": e.get("userId")})"""
)
"""The issue's floor: each event serialized again into its body."""
FLOOR_TEXT = _FLOOR_LOOP.replace(
    "BODY",
    """b'{"brand":null,"data":' + line.strip() + b',"profile":null,"recipient":'"""
    """ + orjson.dumps(e.get('userId')) + b'}'""",
)
"""The floor as segroute builds a body now: the line's text copied in, not the event serialized again."""


TYPER_APP = """
import typer
app = typer.Typer(add_completion=False)
@app.command()
def links(config: str | None = None) -> None:
    "List the links."
@app.command()
def send(inputs: list[str], dry_run: bool = False) -> None:
    "Send the events."
app()
"""


def startup(config: Path, runs: int) -> dict[str, Any]:
    """Milliseconds to run ``segroute --help`` and ``segroute links`` (medians of ``runs``, taken in
    turns); beside them, the same for a bare two-command typer app's --help, and the interpreter."""
    commands = {
        "segroute_help_ms": segroute_command() + ["--help"],
        "segroute_links_ms": segroute_command() + ["links", "-c", str(config)],
        "typer_app_help_ms": [sys.executable, "-c", TYPER_APP, "--help"],
        "python_ms": [sys.executable, "-c", "pass"],
    }
    times: dict[str, list[float]] = {key: [] for key in commands}
    for _ in range(runs):
        for key, command in commands.items():
            times[key].append(measured(command)[0])
    return {key: round(statistics.median(found) * 1000) for key, found in times.items()}


def compile_segroute() -> None:
    """Compile segroute's modules to bytecode, as pip install does. Without it, an editable install
    on a machine that sets PYTHONDONTWRITEBYTECODE compiles them again at every start (60 ms here)."""
    import segroute

    compileall.compile_dir(Path(segroute.__file__).parent, quiet=1)


def segroute_command() -> list[str]:
    found = shutil.which("segroute", path=os.path.dirname(sys.executable)) or shutil.which("segroute")
    return [found] if found else [sys.executable, "-m", "segroute"]


def dry_run(path: Path, config: Path, count: int, repeat: int) -> dict[str, Any]:
    """segroute's dry run (with plain links, and with jq on one) and the two floors, ``repeat`` times
    each in turns: the median time of each, and the highest peak memory."""
    config_jq = config.with_name("segroute-jq.toml")
    config_jq.write_text(CONFIG_JQ)
    dry = ["send", str(path), "--dry-run", "-o", "jsonl", "-q", "--no-ledger", "-c"]
    commands = {
        "segroute": [*segroute_command(), *dry, str(config)],
        "segroute_jq": [*segroute_command(), *dry, str(config_jq)],
        "floor": [sys.executable, "-c", FLOOR, str(path)],
        "floor_text": [sys.executable, "-c", FLOOR_TEXT, str(path)],
    }
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
    with open(os.devnull, "wb") as devnull:
        for _ in range(repeat):
            for name, command in commands.items():
                runs[name].append(measured(command, stdout=devnull))
    seconds = {name: statistics.median(taken for taken, _ in found) for name, found in runs.items()}
    peak = {name: max(rss for _, rss in found) for name, found in runs.items()}
    return {
        "events": count,
        "segroute_events_per_s": round(count / seconds["segroute"]),
        "segroute_max_rss_mb": peak["segroute"],
        "floor_events_per_s": round(count / seconds["floor"]),
        "floor_max_rss_mb": peak["floor"],
        "fraction_of_floor": round(seconds["floor"] / seconds["segroute"], 3),
        "floor_text_events_per_s": round(count / seconds["floor_text"]),
        "fraction_of_floor_text": round(seconds["floor_text"] / seconds["segroute"], 3),
        "segroute_jq_events_per_s": round(count / seconds["segroute_jq"]),
        "jq_us_per_linked_event": round(
            (seconds["segroute_jq"] - seconds["segroute"]) / _linked_events(path) * 1e6, 1
        ),
        "runs": {f"{name}_s": [round(taken, 2) for taken, _ in found] for name, found in runs.items()},
    }


def _linked_events(path: Path) -> int:
    """The events of the linked name in a generated file: those the jq link runs on."""
    with gzip.open(path, "rb") as lines:
        return sum(1 for line in lines if orjson.loads(line).get("event") == LINKED)


# --- sending ------------------------------------------------------------------------------------


def start_server(delay_ms: int = 0) -> tuple[subprocess.Popen[bytes], str, str]:
    """The endpoint: Node's http server when node is installed, else a Python one; each answer
    ``delay_ms`` late."""
    node = shutil.which("node")
    if node:
        command, kind = [node, str(HERE / "server.js"), str(delay_ms)], "node http"
    else:
        command, kind = [sys.executable, "-c", PY_SERVER, str(delay_ms)], "python aiohttp (no node: slower)"
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}", kind


PY_SERVER = """
import asyncio, socket, sys
from aiohttp import web
DELAY = int(sys.argv[1]) / 1000
async def handle(request):
    await request.read()
    if DELAY:
        await asyncio.sleep(DELAY)
    return web.Response(body=b'{"runId":"1-bench"}', content_type="application/json")
async def main():
    app = web.Application(); app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None); await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

CEILING = """
import asyncio, sys, time, orjson, aiohttp
try:
    import uvloop
except ImportError:
    uvloop = None
url, concurrency, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
bodies = [line.rstrip(b"\\n") for line in open(path, "rb")]
async def main():
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": "Bearer x", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        work = iter(enumerate(bodies))
        async def worker():
            for n, body in work:
                async with session.post(url, data=body, headers={"Idempotency-Key": f"k{n}"}) as r:
                    await r.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started
seconds = (uvloop.run if uvloop else asyncio.run)(main())
print(len(bodies) / seconds)
"""

SDK = """
import sys, time, orjson
from concurrent.futures import ThreadPoolExecutor
from courier import Courier
url, threads, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
events = [orjson.loads(line) for line in open(path, "rb")]
client = Courier(api_key="x", base_url=url, max_retries=0)
def send(event):
    client.automations.invoke.invoke_by_template(
        "order-confirmation", recipient=event["userId"], data=event, idempotency_key=event["messageId"]
    )
started = time.perf_counter()
if threads <= 1:
    for event in events:
        send(event)
else:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, events))
print(len(events) / (time.perf_counter() - started))
"""


def prepare_send(folder: Path, requests: int) -> tuple[Path, Path]:
    """Linked track events, one request each, as gzip'd NDJSON; and their bodies, pre-serialized."""
    rng = random.Random(7)
    events = []
    for n in range(requests):
        event = make_event(n, rng, kind="track")
        event["event"] = LINKED
        events.append(event)
    path = folder / "send.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    bodies = folder / "bodies.jsonl"
    bodies.write_bytes(
        b"".join(
            orjson.dumps({"brand": None, "data": e, "profile": None, "recipient": e["userId"]}) + b"\n"
            for e in events
        )
    )
    return path, bodies


def segroute_send(url: str, path: Path, config: Path, concurrency: int, folder: Path) -> float:
    report = folder / f"report-{concurrency}.json"
    ledger = folder / f"ledger-{concurrency}.sqlite3"
    for stale in folder.glob(f"{ledger.name}*"):  # a fresh ledger each run, or all would be already sent
        stale.unlink()
    command = segroute_command() + ["send", str(path), "-c", str(config), "--api-url", url, "-q"]
    command += ["--concurrency", str(concurrency), "--report", str(report), "--ledger", str(ledger)]
    env = dict(os.environ, COURIER_API_KEY=API_KEY)
    measured(command, env=env)
    found = json.loads(report.read_text())
    assert found["totals"] == {"sent": found["read"]}, found["totals"]
    return float(found["requests_per_second"])


def with_latency(delay_ms: int, requests: int, send_path: Path, config: Path, folder: Path) -> dict[str, Any]:
    """segroute at concurrency 16 and 64, and the SDK sequential and on 16 threads, against an endpoint
    that answers ``delay_ms`` late: where a user's time goes to the network, not to the client."""
    lines = send_path.read_bytes().splitlines(True)
    path = folder / "latency.jsonl"
    path.write_bytes(b"".join(lines[:requests]))
    # The sequential SDK waits out every answer: fewer requests, or it alone would take minutes.
    sdk_path = folder / "latency-sdk.jsonl"
    sdk_path.write_bytes(b"".join(lines[: max(1, min(requests, 5_000 // max(delay_ms, 1)))]))
    server, url, _ = start_server(delay_ms)
    try:
        found: dict[str, Any] = {"delay_ms": delay_ms, "requests": requests}
        for concurrency in (16, 64):
            found[f"segroute_c{concurrency}_req_per_s"] = round(
                segroute_send(url, path, config, concurrency, folder)
            )
        found["sdk_sequential_req_per_s"] = round(python_rate(SDK, url, "1", str(sdk_path)))
        found["sdk_threads16_req_per_s"] = round(python_rate(SDK, url, "16", str(path)))
        return found
    finally:
        server.terminate()
        server.wait()


def python_rate(code: str, *args: str) -> float:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark loop failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip())


# --- reading from a bucket ----------------------------------------------------------------------

S3_BUCKET = "bench-archive"
S3_SOURCE = "Bq7Rt2Lm9X"
DAY_MS = 86_400_000
FIRST_DAY_MS = 1_772_323_200_000  # 2026-03-01
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-not-secret",
    "AWS_REGION": "us-east-1",
}
S3_READ_AHEAD = 4
"""segroute's own default (buckets.READ_AHEAD), set explicitly for the row with latency."""


def s3_missing() -> str | None:
    """Why the bucket rows cannot run here, or None: segroute needs the ``s3`` extra (obstore), the
    bucket moto's S3 server behind tests/bucket_server.py (both in the ``test`` extra). Asked of a
    process of its own, so that this one stays lean (see ``BUCKET_SERVER``)."""
    command = [sys.executable, "-c", "import obstore, boto3, tests.bucket_server"]
    done = subprocess.run(command, env=_with_root(), capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return None
    why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    return f"{why} (the s3 extra and moto's server: pip install -e '.[test]')"


def _with_root() -> dict[str, str]:
    """This environment, with the checkout first on PYTHONPATH (for ``tests.bucket_server``)."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def write_tree(root: Path, events: int, objects: int) -> dict[str, Path]:
    """A segment-logs tree of ``events`` events in ``objects`` gzip'd files over three day folders."""
    rng = random.Random(2026)
    per_object = max(1, events // objects)
    files: dict[str, Path] = {}
    for n in range(objects):
        day = FIRST_DAY_MS + DAY_MS * (n * 3 // objects)
        key = f"segment-logs/{S3_SOURCE}/{day}/{day + n * 1000}.{n:04d}.gz"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with _gzip_writer(path) as out:
            out.write(
                b"".join(orjson.dumps(make_event(n * per_object + i, rng)) + b"\n" for i in range(per_object))
            )
        files[key] = path
    return files


BUCKET_SERVER = """
import logging, sys
from pathlib import Path
import boto3, obstore
from obstore.store import S3Store
from tests.bucket_server import BucketServer
root, bucket, key_id, secret, region = sys.argv[1:]
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
server = BucketServer()
server.start()
boto3.client(
    "s3", endpoint_url=server.url, region_name=region, aws_access_key_id=key_id, aws_secret_access_key=secret
).create_bucket(Bucket=bucket)
store = S3Store(
    bucket, endpoint=server.url, region=region, access_key_id=key_id, secret_access_key=secret,
    client_options={"allow_http": True},
)
for path in sorted(Path(root).rglob("*.gz")):
    obstore.put(store, path.relative_to(root).as_posix(), path.read_bytes())
print(server.url, flush=True)
for line in sys.stdin:  # a latency in ms for the requests from now on
    server.latency = int(line) / 1000
    print("ok", flush=True)
server.stop()
"""
"""moto's S3 on 127.0.0.1 (tests/bucket_server.py) with the files under ``root`` in a bucket, in a
process of its own: a child's max RSS never reads below its parent's, so a server in this process
(moto, boto3, the objects: over 100 MB) would be the peak memory of every row."""


def from_bucket(
    folder: Path, config: Path, events: int, objects: int, latency_ms: int, repeat: int
) -> dict[str, Any]:
    """One segment-logs tree dry-run from disk, from moto's S3 on 127.0.0.1, and from it with
    ``latency_ms`` added to every request, read-ahead on and off; ``repeat`` times each in turns:
    the median time of each, and the highest peak memory."""
    root = folder / "logs"
    files = write_tree(root, events, objects)
    count = max(1, events // objects) * objects
    size = sum(path.stat().st_size for path in files.values())
    url = f"s3://{S3_BUCKET}/"
    rows: dict[str, tuple[str, int, str | None]] = {
        "disk": (str(root), 0, None),
        "bucket": (url, 0, None),
        "bucket_latency": (url, latency_ms, str(S3_READ_AHEAD)),
        "bucket_latency_no_read_ahead": (url, latency_ms, "0"),
    }
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in rows}
    credentials = [
        S3_CREDENTIALS[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    ]
    server = subprocess.Popen(
        [sys.executable, "-c", BUCKET_SERVER, str(root), S3_BUCKET, *credentials],
        env=_with_root(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        endpoint = server.stdout.readline().strip()
        if not endpoint:
            raise SystemExit(f"the bucket server exited {server.wait()} before it served")
        for _ in range(repeat):
            for name, (source, latency, read_ahead) in rows.items():
                server.stdin.write(f"{latency}\n")
                server.stdin.flush()
                server.stdout.readline()
                runs[name].append(_bucket_dry_run(endpoint, source, config, read_ahead, count))
    finally:
        server.stdin.close()
        server.wait()
        shutil.rmtree(root)
    seconds = {name: statistics.median(taken for taken, _ in found) for name, found in runs.items()}
    return {
        "events": count,
        "objects": objects,
        "gzip_mb": round(size / 1e6, 1),
        "latency_ms": latency_ms,
        "read_ahead": S3_READ_AHEAD,
        **{f"{name}_events_per_s": round(count / seconds[name]) for name in rows},
        "bucket_fraction_of_disk": round(seconds["disk"] / seconds["bucket"], 3),
        "read_ahead_speedup": round(seconds["bucket_latency_no_read_ahead"] / seconds["bucket_latency"], 2),
        **{f"{name}_max_rss_mb": max(rss for _, rss in found) for name, found in runs.items()},
        "bucket_peak_max_rss_mb": max(rss for name in rows if name != "disk" for _, rss in runs[name]),
        "runs": {f"{name}_s": [round(taken, 2) for taken, _ in found] for name, found in runs.items()},
    }


def _bucket_dry_run(
    endpoint: str, source: str, config: Path, read_ahead: str | None, count: int
) -> tuple[float, int]:
    """``segroute send SOURCE --dry-run -o jsonl -q --no-ledger`` with the bucket's credentials and
    endpoint in the environment, as AWS tools take them; checks from its report that it read every
    event."""
    env = dict(os.environ, **S3_CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
    env.pop("SEGROUTE_READ_AHEAD", None)
    if read_ahead is not None:
        env["SEGROUTE_READ_AHEAD"] = read_ahead
    report = config.with_name("report-bucket.json")
    command = [*segroute_command(), "send", source, "--dry-run", "-o", "jsonl", "-q", "--no-ledger"]
    command += ["-c", str(config), "--report", str(report)]
    with open(os.devnull, "wb") as devnull:
        found = measured(command, env=env, stdout=devnull)
    read = json.loads(report.read_text())["read"]
    if read != count:
        raise SystemExit(f"{source}: segroute read {read} events of {count}")
    return found


# --- the run ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="dry-run sizes")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per send measurement")
    parser.add_argument("--sdk-requests", type=int, default=2_000, help="requests per SDK measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--out", type=Path, help="write the results here [default: bench/results/<time>.json]"
    )
    parser.add_argument("--compare", type=Path, help="an earlier results file to show beside this run")
    parser.add_argument("--skip-send", action="store_true", help="only the dry runs (from disk and bucket)")
    parser.add_argument("--skip-s3", action="store_true", help="without the rows that read from a bucket")
    parser.add_argument("--s3-events", type=int, default=100_000, help="events in the bucket's archive")
    parser.add_argument("--s3-objects", type=int, default=200, help="objects the archive is split into")
    parser.add_argument(
        "--s3-latency-ms",
        type=int,
        default=20,
        help="added to every request to the bucket in its rows with latency, as a network adds",
    )
    parser.add_argument(
        "--latency-ms",
        type=int,
        default=20,
        help="the sends against an endpoint that answers this late, as an API across a network does",
    )
    parser.add_argument("--latency-requests", type=int, default=4_000, help="requests per send with latency")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per dry-run and send measurement; the median is shown"
    )
    parser.add_argument(
        "--startup-runs", type=int, default=9, help="runs per start-up measurement; the median is shown"
    )
    args = parser.parse_args()
    compile_segroute()

    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "dry_run": [],
        "send": [],
    }
    with tempfile.TemporaryDirectory(prefix="segroute-bench-") as scratch:
        folder = Path(scratch)
        config = folder / "segroute.toml"
        config.write_text(CONFIG)
        results["startup"] = startup(config, args.startup_runs)
        print(f"start-up: {results['startup']}", file=sys.stderr)
        for size in args.sizes:
            path = folder / f"events-{size}.jsonl.gz"
            mean = write_events(path, size)
            row = dry_run(path, config, size, args.repeat) | {"mean_event_bytes": round(mean)}
            results["dry_run"].append(row)
            print(f"dry run {size:>9,} events: {row}", file=sys.stderr)
            path.unlink()
        missing = "--skip-s3" if args.skip_s3 else s3_missing()
        if missing:
            results["s3"] = {"skipped": missing}
        else:
            results["s3"] = from_bucket(
                folder, config, args.s3_events, args.s3_objects, args.s3_latency_ms, args.repeat
            )
        print(f"from a bucket: {results['s3']}", file=sys.stderr)
        # The memory rows cannot read below this: see _megabytes.
        results["bench_max_rss_mb"] = _megabytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        if not args.skip_send:
            server, url, kind = start_server()
            results["endpoint"] = kind
            try:
                send_path, bodies = prepare_send(folder, args.requests)
                sdk_path = folder / "sdk.jsonl"
                sdk_path.write_bytes(b"".join(send_path.read_bytes().splitlines(True)[: args.sdk_requests]))
                for concurrency in args.concurrency:
                    # Taken in turns, then the median of each: one run moves by 10-25% on a shared VM.
                    ours, ceiling = [], []
                    for _ in range(args.repeat):
                        ours.append(segroute_send(url, send_path, config, concurrency, folder))
                        ceiling.append(python_rate(CEILING, url, str(concurrency), str(bodies)))
                    row = {
                        "concurrency": concurrency,
                        "segroute_req_per_s": round(statistics.median(ours)),
                        "ceiling_req_per_s": round(statistics.median(ceiling)),
                        "runs": {
                            "segroute": [round(x) for x in ours],
                            "ceiling": [round(x) for x in ceiling],
                        },
                    }
                    row["fraction_of_ceiling"] = round(
                        row["segroute_req_per_s"] / row["ceiling_req_per_s"], 3
                    )
                    results["send"].append(row)
                    print(f"send c={concurrency}: {row}", file=sys.stderr)
                results["sdk_sequential_req_per_s"] = round(python_rate(SDK, url, "1", str(sdk_path)))
                results["sdk_threads16_req_per_s"] = round(python_rate(SDK, url, "16", str(sdk_path)))
            finally:
                server.terminate()
                server.wait()
            if args.latency_ms:
                results["latency"] = with_latency(
                    args.latency_ms, args.latency_requests, send_path, config, folder
                )
                print(f"with latency: {results['latency']}", file=sys.stderr)
    out = args.out or HERE / "results" / f"{results['date'].replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    earlier = json.loads(args.compare.read_text()) if args.compare else None
    print(table(results, earlier))
    print(f"\nresults: {out}")


def table(results: dict[str, Any], earlier: dict[str, Any] | None) -> str:
    """The results as one table (Markdown, so it can be pasted into docs/benchmarks.md)."""
    m = results["machine"]
    lines = [
        f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['platform']}, commit {m['commit']}",
        "",
        "| measurement | segroute | beside it | ratio |" + (" earlier segroute |" if earlier else ""),
        "|---|---|---|---|" + ("---|" if earlier else ""),
    ]

    past = earlier or {}

    def before(value: Any) -> str:
        """The earlier run's figure for a row, as a last cell: - when that run lacks it."""
        if earlier is None:
            return ""
        return f" {value:,} |" if isinstance(value, int | float) else " - |"

    def past_row(section: str, key: str, value: Any) -> dict[str, Any]:
        """The earlier run's row of a section with the same ``key``, if it has one."""
        return next((row for row in past.get(section, []) if row.get(key) == value), {})

    for row in results["dry_run"]:
        n = row["events"]
        lines.append(
            f"| dry run, {n:,} events (~{row['mean_event_bytes']} B), events/s "
            f"| {row['segroute_events_per_s']:,} "
            f"| floor {row['floor_events_per_s']:,} | {row['fraction_of_floor']:.0%} of floor |"
            + before(past_row("dry_run", "events", n).get("segroute_events_per_s"))
        )
        if "floor_text_events_per_s" in row:
            lines.append(
                f"| dry run, {n:,} events, beside a floor that copies each line in, events/s "
                f"| {row['segroute_events_per_s']:,} "
                f"| floor copying lines {row['floor_text_events_per_s']:,} "
                f"| {row['fraction_of_floor_text']:.0%} of it |"
                + before(past_row("dry_run", "events", n).get("segroute_events_per_s"))
            )
        if "segroute_jq_events_per_s" in row:
            lines.append(
                f"| dry run, {n:,} events, the linked name with a jq condition and data mapping, events/s "
                f"| {row['segroute_jq_events_per_s']:,} | plain links {row['segroute_events_per_s']:,} "
                f"| {row['jq_us_per_linked_event']} µs more per linked event |"
                + before(past_row("dry_run", "events", n).get("segroute_jq_events_per_s"))
            )
        lines.append(
            f"| dry run, {n:,} events, peak memory (MB) | {row['segroute_max_rss_mb']} "
            f"| floor {row['floor_max_rss_mb']} | |"
            + before(past_row("dry_run", "events", n).get("segroute_max_rss_mb"))
        )
    lines += _bucket_rows(results.get("s3"), past.get("s3"), earlier is not None)
    if "startup" in results:
        found, started = results["startup"], past.get("startup", {})
        lines.append(
            f"| start-up, `segroute --help`, ms | {found['segroute_help_ms']} "
            f"| bare typer app {found['typer_app_help_ms']}, python {found['python_ms']} | |"
            + before(started.get("segroute_help_ms"))
        )
        lines.append(
            f"| start-up, `segroute links`, ms | {found['segroute_links_ms']} | | |"
            + before(started.get("segroute_links_ms"))
        )
    sequential = results.get("sdk_sequential_req_per_s")
    for row in results["send"]:
        c = row["concurrency"]
        vs_sdk = f"; {row['segroute_req_per_s'] / sequential:.0f}x the sequential SDK" if sequential else ""
        lines.append(
            f"| send, concurrency {c}, requests/s | {row['segroute_req_per_s']:,} "
            f"| raw aiohttp {row['ceiling_req_per_s']:,} | {row['fraction_of_ceiling']:.0%} of raw{vs_sdk} |"
            + before(past_row("send", "concurrency", c).get("segroute_req_per_s"))
        )
    if sequential:
        for label, key in (
            ("Courier SDK (trycourier), sequential, requests/s", "sdk_sequential_req_per_s"),
            ("Courier SDK, 16 threads, requests/s", "sdk_threads16_req_per_s"),
        ):
            lines.append(f"| {label} | | {results[key]:,} | |" + before(past.get(key)))
    if "latency" in results:
        found = results["latency"]
        ms, sdk = found["delay_ms"], found["sdk_sequential_req_per_s"]
        for c in (16, 64):
            ours = found[f"segroute_c{c}_req_per_s"]
            lines.append(
                f"| send, endpoint {ms} ms late, concurrency {c}, requests/s | {ours:,} "
                f"| SDK sequential {sdk:,}, on 16 threads {found['sdk_threads16_req_per_s']:,} "
                f"| {ours / sdk:.0f}x the sequential SDK |"
                + before(past.get("latency", {}).get(f"segroute_c{c}_req_per_s"))
            )
    if "bench_max_rss_mb" in results:
        lines.append(
            f"\npeak memory: a process's max RSS, which reads no lower than the benchmark's own peak "
            f"before it started ({results['bench_max_rss_mb']} MB)"
        )
    if "endpoint" in results:
        lines.append(f"\nendpoint: {results['endpoint']} on 127.0.0.1")
    return "\n".join(lines)


def _bucket_rows(found: dict[str, Any] | None, past: dict[str, Any] | None, compare: bool) -> list[str]:
    """The rows that read the archive from disk and from the bucket; or one that says why they were
    skipped. An earlier run's figures are shown only for the same archive and latency."""
    if found is None:  # results from before the bucket rows
        return []
    if "skipped" in found:
        return [
            f"| archive from a bucket (s3://) | skipped: {found['skipped']} | | |"
            + (" - |" if compare else "")
        ]
    same = ("events", "objects", "latency_ms", "read_ahead")
    earlier = past if past and all(past.get(key) == found[key] for key in same) else {}

    def before(key: str) -> str:
        if not compare:
            return ""
        value = earlier.get(key)
        return f" {value:,} |" if isinstance(value, int | float) else " - |"

    ms, ahead = found["latency_ms"], found["read_ahead"]
    disk, bucket = found["disk_events_per_s"], found["bucket_events_per_s"]
    slow, slow_off = found["bucket_latency_events_per_s"], found["bucket_latency_no_read_ahead_events_per_s"]
    peak = found["bucket_peak_max_rss_mb"]
    return [
        f"| archive of {found['events']:,} events in {found['objects']} objects "
        f"({found['gzip_mb']} MB gzip'd), from disk, events/s | {disk:,} | | |" + before("disk_events_per_s"),
        f"| the archive from moto's S3 on 127.0.0.1, events/s | {bucket:,} | from disk {disk:,} "
        f"| {found['bucket_fraction_of_disk']:.0%} of disk |" + before("bucket_events_per_s"),
        f"| the archive from the bucket, {ms} ms a request, read-ahead {ahead}, events/s | {slow:,} "
        f"| read-ahead off {slow_off:,} | {found['read_ahead_speedup']:.1f}x read-ahead off |"
        + before("bucket_latency_events_per_s"),
        f"| the archive from the bucket, {ms} ms a request, read-ahead off, events/s | {slow_off:,} "
        f"| no latency {bucket:,} | {slow_off / bucket:.0%} of it |"
        + before("bucket_latency_no_read_ahead_events_per_s"),
        f"| the archive from the bucket, peak memory (MB), the highest of its rows | {peak} "
        f"| from disk {found['disk_max_rss_mb']} | |" + before("bucket_peak_max_rss_mb"),
    ]


if __name__ == "__main__":
    main()
