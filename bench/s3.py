"""The same archive read from disk and from an S3-compatible server on 127.0.0.1, in events per second.

    pip install -e ".[fast,bench,test]" && python bench/s3.py         # about 3 minutes on 2 cores
    python bench/s3.py --events 20000 --objects 40 --repeat 1         # a quicker look

A segment-logs tree of ``--events`` events (bench/run.py's, about 1 KB each, gzip'd NDJSON) in
``--objects`` files over three day folders is written to disk and put into a bucket of moto's S3,
served on 127.0.0.1 by tests/bucket_server.py in this process. Each row is
``segroute send INPUT --dry-run -o jsonl -q`` in a process of its own, start-up included, the
median of ``--repeat`` runs taken in turns: from disk; from the bucket; and from the bucket with
``--latency-ms`` added to every request, as a bucket across a network has, with read-ahead on
(SEGROUTE_READ_AHEAD, 4 objects) and off (0: each object asked for when the reader reaches it).
moto is no S3: it serves from Python, on the same two cores as segroute, so the bucket rows are a
floor for what a real bucket nearby gives, and the latency rows show what read-ahead hides.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

import obstore
import orjson
from obstore.store import S3Store

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import CONFIG, _gzip_writer, make_event, measured, segroute_command  # noqa: E402

from tests.bucket_server import BucketServer  # noqa: E402

BUCKET = "bench-archive"
SOURCE = "Bq7Rt2Lm9X"
DAY_MS = 86_400_000
FIRST_DAY_MS = 1_772_323_200_000  # 2026-03-01
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-not-secret",
    "AWS_REGION": "us-east-1",
}


def write_tree(root: Path, events: int, objects: int) -> dict[str, Path]:
    """A segment-logs tree of ``events`` events in ``objects`` gzip'd files over three day folders."""
    rng = random.Random(2026)
    per_object = max(1, events // objects)
    files: dict[str, Path] = {}
    for n in range(objects):
        day = FIRST_DAY_MS + DAY_MS * (n * 3 // objects)
        key = f"segment-logs/{SOURCE}/{day}/{day + n * 1000}.{n:04d}.gz"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with _gzip_writer(path) as out:
            out.write(
                b"".join(orjson.dumps(make_event(n * per_object + i, rng)) + b"\n" for i in range(per_object))
            )
        files[key] = path
    return files


def fill(server: BucketServer, files: dict[str, Path]) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=server.url, **_boto_credentials())
    client.create_bucket(Bucket=BUCKET)
    store = S3Store(
        BUCKET,
        endpoint=server.url,
        region="us-east-1",
        access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        client_options={"allow_http": True},
    )
    for key, path in files.items():
        obstore.put(store, key, path.read_bytes())


def _boto_credentials() -> dict[str, str]:
    return {
        "region_name": CREDENTIALS["AWS_REGION"],
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    server = BucketServer()
    server.start()
    with tempfile.TemporaryDirectory(prefix="segroute-bench-s3-") as scratch:
        folder = Path(scratch)
        config = folder / "segroute.toml"
        config.write_text(CONFIG)
        files = write_tree(folder / "logs", args.events, args.objects)
        fill(server, files)
        events = (args.events // args.objects) * args.objects
        size = sum(path.stat().st_size for path in files.values())
        rows: dict[str, tuple[str, int, str | None]] = {
            "disk": (str(folder / "logs"), 0, None),
            "bucket": (f"s3://{BUCKET}/", 0, None),
            f"bucket, {args.latency_ms} ms a request, read-ahead 4": (
                f"s3://{BUCKET}/",
                args.latency_ms,
                "4",
            ),
            f"bucket, {args.latency_ms} ms a request, read-ahead 0": (
                f"s3://{BUCKET}/",
                args.latency_ms,
                "0",
            ),
        }
        taken: dict[str, list[tuple[float, int]]] = {name: [] for name in rows}
        for _ in range(args.repeat):
            for name, (source, latency, read_ahead) in rows.items():
                taken[name].append(_run(server, source, config, latency, read_ahead))
    server.stop()
    print(f"{events:,} events in {args.objects} objects, {size / 1e6:.1f} MB gzip'd; median of {args.repeat}")
    print(f"{'input':<44} {'events/s':>10} {'max RSS MB':>11}  runs (s)")
    for name, found in taken.items():
        seconds = statistics.median(t for t, _ in found)
        runs = ", ".join(f"{t:.2f}" for t, _ in found)
        print(f"{name:<44} {round(events / seconds):>10,} {max(r for _, r in found):>11}  {runs}")


def _run(
    server: BucketServer, source: str, config: Path, latency_ms: int, read_ahead: str | None
) -> tuple[float, int]:
    server.latency = latency_ms / 1000
    env: dict[str, str] = dict(os.environ, **CREDENTIALS, AWS_ENDPOINT_URL=server.url)
    if read_ahead is not None:
        env["SEGROUTE_READ_AHEAD"] = read_ahead
    command = segroute_command() + ["send", source, "-c", str(config), "--dry-run", "-o", "jsonl", "-q"]
    with open(os.devnull, "wb") as devnull:
        return measured(command + ["--no-ledger"], env=env, stdout=devnull)


if __name__ == "__main__":
    main()
