"""What the sinks cost: our stores vs the raw client on the same rows, side by side.

- ClickHouse: ``ClickHouseStore.write`` (row mapping, the stored-id check, insert) vs
  a raw clickhouse-connect insert of the already-mapped rows into the same table.
- Postgres: ``PostgresStore.write`` (row mapping, staged idempotent inserts, the
  channel counters, one transaction per batch) vs a raw ``COPY`` of the same rows into
  the same table.

    .venv/bin/python bench/sinks.py [EVENTS [ROUNDS]]
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import datetime, timezone

from common import Settings, local_stack
from ops.devstack import smoke
from ops.store.clickhouse import ClickHouseStore
from ops.store.clickhouse_rows import COLUMNS, rows
from ops.store.postgres import PostgresStore
from ops.store.sink import Event
from schemas import codec

CH_BATCH, PG_BATCH = 2000, 500


def events(count: int) -> list[Event]:
    """Chat messages as the sink decodes them, spread over 16 channels, each stamped
    with the time it was made (milliseconds), as the services stamp theirs."""
    out = []
    for i in range(count):
        record = smoke.chat_message(f"bench-{i % 16}", f"bench message {i} " + "x" * 80)
        record["created_at"] = datetime.now(timezone.utc)
        _, decoded = codec.decode(codec.encode("ChatMessage", record))
        out.append(Event("ChatMessage", decoded, None))
    return out


def best_rates(count: int, rounds: int, raw, ours, empty) -> tuple[float, float]:
    """Rows/s of ``ours()`` and ``raw()``, each the best of ``rounds`` alternating runs
    into the same table, emptied (``empty()``) after each: the machine's noise (2 cores,
    background merges) hits both sides alike."""
    best = {"ours": 0.0, "raw": 0.0}
    for _ in range(rounds):
        for side, write in (("raw", raw), ("ours", ours)):
            started = time.perf_counter()
            write()
            best[side] = max(best[side], count / (time.perf_counter() - started))
            empty()
    return best["ours"], best["raw"]


def clickhouse(settings: Settings, batch: list[Event], rounds: int) -> tuple[float, float]:
    """Ours: mapping, the stored-key lookup and the insert. Raw: the insert of the
    already-mapped rows. Both into the same migrated table, materialized view included."""
    mapped = [row for e in batch for _, row in rows(e.name, e.record)]
    store = ClickHouseStore(settings)
    store.write(batch[:0])  # connect and migrate outside the timing
    client = store.client

    def raw():
        for i in range(0, len(mapped), CH_BATCH):
            client.insert("chat_messages", mapped[i:i + CH_BATCH],
                          column_names=COLUMNS["chat_messages"])

    def ours():
        for i in range(0, len(batch), CH_BATCH):
            store.write(batch[i:i + CH_BATCH])
        assert int(client.command("SELECT count() FROM chat_messages")) == len(batch)

    def empty():
        for table in ("chat_messages", "messages_per_minute"):
            client.command(f"TRUNCATE TABLE {table}")

    try:
        return best_rates(len(batch), rounds, raw, ours, empty)
    finally:
        store.close()


def postgres(settings: Settings, batch: list[Event], rounds: int) -> tuple[float, float]:
    """Ours: mapping, staged idempotent inserts and the channel counters, a transaction
    per batch. Raw: a COPY of the same rows. Both into the same table (indexes, WAL)."""
    import psycopg
    from psycopg.types.json import Jsonb

    from ops.store import migrate

    migrate.postgres(settings)
    columns = ["event_id", "channel_id", "thread_id", "reply_to", "author_id", "author_kind",
               "text", "mentions", "thread_depth", "created_at", "task_id", "metadata"]
    store = PostgresStore(settings)
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        def raw():
            for i in range(0, len(batch), PG_BATCH):
                with conn.transaction(), conn.cursor().copy(
                        f"COPY messages ({', '.join(columns)}) FROM STDIN") as copy:
                    for e in batch[i:i + PG_BATCH]:
                        copy.write_row([Jsonb(e.record[c]) if c == "metadata"
                                        else e.record[c] for c in columns])

        def ours():
            for i in range(0, len(batch), PG_BATCH):
                store.write(batch[i:i + PG_BATCH])
            assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == len(batch)

        try:
            return best_rates(len(batch), rounds, raw, ours,
                              lambda: conn.execute("TRUNCATE messages, channels"))
        finally:
            store.close()


def main(count: int = 20000, rounds: int = 3) -> None:
    batch = events(count)
    with tempfile.TemporaryDirectory(prefix="agora-bench-ch-") as directory:
        ch_ours, ch_raw = clickhouse(Settings(clickhouse_url=f"chdb://{directory}"), batch,
                                     rounds)
    print(f"clickhouse: our sink {ch_ours:,.0f} rows/s, raw clickhouse-connect insert "
          f"{ch_raw:,.0f} rows/s ({count} chat messages, batches of {CH_BATCH}, "
          f"best of {rounds})")
    with local_stack() as settings:
        pg_ours, pg_raw = postgres(settings, batch, rounds)
    print(f"postgres: our sink {pg_ours:,.0f} rows/s, raw COPY {pg_raw:,.0f} rows/s "
          f"({count} chat messages, transactions of {PG_BATCH}, best of {rounds})")
    print(f"RATIO clickhouse_sink_rows_per_s {ch_ours / ch_raw:.3f} target 0.7")
    print(f"RATIO postgres_sink_rows_per_s {pg_ours / pg_raw:.3f} target 0.5")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
