"""Segment raw-data archives built for tests, the way the S3 destination lays them out.

Events come from the official client (the ``segment_events`` fixture); `archived` adds what
Segment's servers add before archiving (``receivedAt``, ``sentAt``, ``originalTimestamp``, the
skew-corrected ``timestamp``, ``channel``, ``projectId``), as examples/capture.py does. Files go to
``segment-logs/<source-id>/<received-day-ms>/<name>.gz`` with the traps real archives have.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import load_capture

SOURCE_ID = "Ab12Cd34Ef"
"""The source id examples/capture.py archives under."""
DAY = timedelta(days=1)


def ms(moment: datetime) -> int:
    """Epoch milliseconds."""
    return int(moment.timestamp() * 1000)


def day_folder(moment: datetime) -> str:
    """The received-day folder name: the UTC day as epoch milliseconds at 00:00."""
    return str(ms(datetime(moment.year, moment.month, moment.day, tzinfo=UTC)))


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def archived(event: dict[str, Any], happened: datetime, received: datetime) -> dict[str, Any]:
    """An event as Segment archives it: happened on the device at ``happened``, received later
    (the fields Segment's servers add come from examples/capture.py, which ships the example archive)."""
    result: dict[str, Any] = load_capture().archived(dict(event, timestamp=iso(happened)), received)
    return result


def ndjson(events: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(event, separators=(",", ":")).encode() + b"\n" for event in events)


def spread(events: list[dict[str, Any]], start: datetime, days: int) -> list[tuple[datetime, dict[str, Any]]]:
    """Archive events over ``days`` days from ``start``; every fifth one arrives a day late (a phone
    that was offline), so it sits in a later folder than its timestamp says."""
    out = []
    step = (days * DAY) / max(len(events), 1)
    for n, event in enumerate(events):
        happened = start + step * n
        received = happened + (DAY if n % 5 == 4 else timedelta(seconds=2))
        out.append((received, archived(event, happened, received)))
    return out


def layout(archive: list[tuple[datetime, dict[str, Any]]]) -> dict[str, bytes]:
    """The files of a segment-logs tree, path -> content, with the traps real archives have.

    Each day folder holds gzip'd NDJSON files named ``<epoch-ms>.<n>.gz``. The first day's second
    file is already plain text though named .gz (S3 served it with Content-Encoding: gzip); the
    last day holds a gzip'd file with no .gz suffix and an empty file; dummy-object.txt sits at
    the top, as the destination's setup leaves it.
    """
    by_day: dict[str, list[dict[str, Any]]] = {}
    for received, event in sorted(archive, key=lambda pair: pair[0]):
        by_day.setdefault(day_folder(received), []).append(event)
    files: dict[str, bytes] = {"segment-logs/dummy-object.txt": b"dummy"}
    days = sorted(by_day)
    for index, day in enumerate(days):
        events = by_day[day]
        half = len(events) // 2
        base = f"segment-logs/{SOURCE_ID}/{day}"
        first, second = ndjson(events[:half]), ndjson(events[half:])
        files[f"{base}/{int(day) + 3_600_000}.0.gz"] = gzip.compress(first, mtime=0)
        if index == 0:
            files[f"{base}/{int(day) + 7_200_000}.1.gz"] = second  # plain text, named .gz
        elif index == len(days) - 1:
            files[f"{base}/{int(day) + 7_200_000}.1"] = gzip.compress(second, mtime=0)  # gzip, no .gz
            files[f"{base}/{int(day) + 9_000_000}.2.gz"] = b""
        else:
            files[f"{base}/{int(day) + 7_200_000}.1.gz"] = gzip.compress(second, mtime=0)
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def tar_bytes(files: dict[str, bytes], *, compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as bundle:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            bundle.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, content in files.items():
            bundle.writestr(name, content)
    return buffer.getvalue()


def tar_with(*members: tarfile.TarInfo, content: bytes = b"") -> bytes:
    """A tar of hand-made members (links, devices, odd names), each with ``content`` if a file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as bundle:
        for info in members:
            if info.isreg():
                info.size = len(content)
                bundle.addfile(info, io.BytesIO(content))
            else:
                bundle.addfile(info)
    return buffer.getvalue()
