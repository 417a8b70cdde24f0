"""Dry-run and send rates of two segroute checkouts, measured in pairs: is a change within the noise?

    python bench/pairs.py /path/to/other/checkout                # this checkout against that one
    python bench/pairs.py OTHER --runs 5 --dry-run-events 100000 --concurrency --latency-concurrency 64

Each row runs both checkouts in turns, ``--runs`` times: the dry run over generated events as
bench/run.py makes them (events/s, the process's whole run), then sends against the benchmark's
endpoint (bench/server.js; it needs node) answering at once and answering 20 ms late, with the
ledger on as by default (requests/s, from the run's report). It prints the medians and every run, so
a difference can be told from the spread of one side. Both checkouts run in this interpreter, with
its packages: the other one through PYTHONPATH.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    CONFIG,
    measured,
    prepare_send,
    segroute_command,
    segroute_send,
    start_server,
    write_events,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("other", type=Path, help="the other checkout (its folder holding segroute/)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each side per row")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run at once")
    parser.add_argument("--latency-requests", type=int, default=4_000, help="requests per run with latency")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--dry-run-events", type=int, default=100_000, help="0 for no dry-run row")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16, 64], help="at once")
    parser.add_argument("--latency-concurrency", type=int, nargs="*", default=[16, 64], help="with latency")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parent.parent)
    sides = {"this": here, "other": str(args.other.resolve())}
    rows = [(0, c, args.requests) for c in args.concurrency]
    rows += [(args.latency_ms, c, args.latency_requests) for c in args.latency_concurrency]
    print(f"this: {here}\nother: {sides['other']}\n")
    print("| row | concurrency | this | other | this / other | each run: this; other |")
    print("|---|---:|---:|---:|---:|---|")
    for path in sides.values():  # as pip install does, or each run would compile them again
        compileall.compile_dir(Path(path) / "segroute", quiet=1)
    with tempfile.TemporaryDirectory(prefix="segroute-pairs-") as scratch:
        folder = Path(scratch)
        config = folder / "segroute.toml"
        config.write_text(CONFIG)
        if args.dry_run_events:
            events = folder / "events.jsonl.gz"
            write_events(events, args.dry_run_events)
            command = segroute_command() + ["send", str(events), "-c", str(config), "--dry-run"]
            command += ["-o", "jsonl", "-q", "--no-ledger"]
            rates: dict[str, list[float]] = {"this": [], "other": []}
            with open(os.devnull, "wb") as devnull:
                for _ in range(args.runs):
                    for side, path in sides.items():
                        os.environ["PYTHONPATH"] = path
                        seconds, _ = measured(command, stdout=devnull)
                        rates[side].append(args.dry_run_events / seconds)
            row("dry run (events/s)", "", rates)
        for delay, concurrency, requests in rows:
            send_path, _ = prepare_send(folder, requests)
            server, url, _ = start_server(delay)
            runs: dict[str, list[float]] = {"this": [], "other": []}
            try:
                for _ in range(args.runs):
                    for side, path in sides.items():
                        os.environ["PYTHONPATH"] = path
                        runs[side].append(segroute_send(url, send_path, config, concurrency, folder))
            finally:
                server.terminate()
                server.wait()
            row(f"send, endpoint {delay} ms late" if delay else "send, endpoint at once", concurrency, runs)


def row(what: str, concurrency: object, runs: dict[str, list[float]]) -> None:
    this, other = statistics.median(runs["this"]), statistics.median(runs["other"])
    each = "; ".join(", ".join(f"{x:,.0f}" for x in found) for found in runs.values())
    print(
        f"| {what} | {concurrency} | {this:,.0f} | {other:,.0f} | {this / other:.3f} | {each} |", flush=True
    )


if __name__ == "__main__":
    main()
