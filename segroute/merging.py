"""Merging ledgers: the ledgers of a sharded replay's machines, combined into one.

Every accepted request is kept once; the runs are copied under new ids, and a run the output holds
already is not copied again; an unsettled request keeps the row of its latest send.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from segroute.errors import UsageError
from segroute.journal import transaction
from segroute.ledger import Ledger

__all__ = ["merge"]

_PENDING_UPDATED = (
    "sent_key generation target message_id recipient sent_at expires_at stored_failure run".split()
)
"""The columns of an unsettled request's row that a later send's row replaces."""


_SAME_RUN = (
    "held.started_at = new.started_at AND held.api_url = new.api_url AND held.inputs = new.inputs "
    "AND held.shard IS new.shard"
)
"""A run of the source that the output holds already: the same start, API, inputs and shard."""
_MERGED_RUN = "(SELECT merged FROM temp.merged_runs WHERE id = row.run)"
"""The output's id of the run a source row names."""


def _merge_runs(connection: sqlite3.Connection) -> int:
    """Copy the attached source's runs the output does not hold, under new ids, and fill in the end
    of those it holds unfinished; map every source run to its id in the output
    (``temp.merged_runs``). Returns the runs added."""
    offset = connection.execute("SELECT coalesce(max(id), 0) FROM main.runs").fetchone()[0]
    connection.execute(
        "CREATE TEMP TABLE merged_runs AS SELECT new.id AS id, coalesce((SELECT held.id FROM "
        f"main.runs AS held WHERE {_SAME_RUN}), new.id + ?) AS merged FROM source.runs AS new",
        (offset,),
    )
    added = connection.execute(
        "INSERT INTO main.runs SELECT merged, started_at, ended_at, api_url, inputs, shard, stopped_by, "
        "counts FROM source.runs AS new JOIN temp.merged_runs USING (id) WHERE merged > ?",
        (offset,),
    ).rowcount
    connection.execute(
        "UPDATE main.runs AS held SET ended_at = new.ended_at, stopped_by = new.stopped_by, "
        "counts = new.counts FROM source.runs AS new "
        f"WHERE {_SAME_RUN} AND held.ended_at IS NULL AND new.ended_at IS NOT NULL"
    )
    return added


def merge(output: Path, inputs: Iterable[Path]) -> tuple[int, int]:
    """Combine ledgers (one per shard, say) into ``output``: (requests added, runs added).

    Merging a ledger again adds nothing: a run already held (the same start, API, inputs and shard)
    is not added twice, and of two rows for one unsettled request the later send's is kept.
    """
    sources = list(inputs)
    seen: dict[Path, Path] = {}
    for source in sources:
        if source.resolve() == output.resolve():
            raise UsageError(f"ledger merge: {source} is the output too")
        if source.resolve() in seen:
            raise UsageError(f"ledger merge: {source} is named twice (as {seen[source.resolve()]} too)")
        seen[source.resolve()] = source
        Ledger(source, create=False).close()  # checks it is a ledger of this version, before any change
    added_requests = added_runs = 0
    with Ledger(output) as target:
        connection = target.writer
        for source in sources:
            connection.execute("ATTACH DATABASE ? AS source", (str(source),))
            try:
                with transaction(connection):
                    added_runs += _merge_runs(connection)
                    cursor = connection.execute(
                        "INSERT OR IGNORE INTO main.requests SELECT api_url, key, target, message_id, "
                        "recipient, status, courier_run_id, courier_request_id, accepted_at, "
                        f"{_MERGED_RUN}, sent_key FROM source.requests AS row"
                    )
                    added_requests += cursor.rowcount  # rows inserted; those already held are ignored
                    connection.execute(
                        "INSERT INTO main.pending SELECT api_url, key, sent_key, generation, target, "
                        f"message_id, recipient, sent_at, expires_at, stored_failure, {_MERGED_RUN} "
                        "FROM source.pending AS row WHERE true ON CONFLICT (api_url, key) DO UPDATE SET "
                        + ", ".join(f"{name} = excluded.{name}" for name in _PENDING_UPDATED)
                        + " WHERE (excluded.generation, excluded.sent_at) > "
                        "(pending.generation, pending.sent_at)"
                    )
                    # A shard's unanswered request another shard saw accepted is settled.
                    connection.execute(
                        "DELETE FROM main.pending WHERE (api_url, key) IN "
                        "(SELECT api_url, key FROM main.requests)"
                    )
                    connection.execute("DROP TABLE temp.merged_runs")
            finally:
                connection.execute("DETACH DATABASE source")
    return added_requests, added_runs
