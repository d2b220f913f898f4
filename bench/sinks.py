"""What the sinks cost: our stores vs the raw client on the same rows, side by side.

- ClickHouse: ``ClickHouseStore.write`` (row mapping, the stored-id check, insert) vs
  a raw clickhouse-connect insert of the already-mapped rows into a twin table.
- Postgres: ``PostgresStore.write`` (row mapping, idempotent upserts, the channel
  counter, one transaction per batch) vs a raw ``COPY`` of the same rows into a twin
  table.

    .venv/bin/python bench/sinks.py [EVENTS]
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid

from common import Settings, local_stack

from ops import smoke
from schemas import codec
from streams.sinks.clickhouse import ClickHouseStore, open_client
from streams.sinks.clickhouse_rows import COLUMNS, rows
from streams.sinks.consumer import Event
from streams.sinks.postgres import PostgresStore

CH_BATCH, PG_BATCH = 2000, 500


def events(count: int) -> list[Event]:
    """Chat messages as the sink decodes them, spread over 16 channels."""
    out = []
    for i in range(count):
        record = smoke.chat_message(f"bench-{i % 16}", f"bench message {i} " + "x" * 80)
        _, decoded = codec.decode(codec.encode("ChatMessage", record))
        out.append(Event("ChatMessage", decoded, None))
    return out


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def clickhouse(settings: Settings, batch: list[Event]) -> tuple[float, float]:
    store = ClickHouseStore(settings)
    started = time.perf_counter()
    for i in range(0, len(batch), CH_BATCH):
        store.write(batch[i:i + CH_BATCH])
    ours = rate(len(batch), time.perf_counter() - started)
    store.close()
    client = open_client(settings)
    try:
        client.command("CREATE TABLE IF NOT EXISTS chat_messages_raw AS chat_messages")
        mapped = [row for e in batch for _, row in rows(e.name, e.record)]
        started = time.perf_counter()
        for i in range(0, len(mapped), CH_BATCH):
            client.insert("chat_messages_raw", mapped[i:i + CH_BATCH],
                          column_names=COLUMNS["chat_messages"])
        raw = rate(len(mapped), time.perf_counter() - started)
    finally:
        client.close()
    return ours, raw


def postgres(settings: Settings, batch: list[Event]) -> tuple[float, float]:
    import psycopg
    from psycopg.types.json import Jsonb

    from ops import migrate

    migrate.postgres(settings)
    store = PostgresStore(settings)
    started = time.perf_counter()
    for i in range(0, len(batch), PG_BATCH):
        store.write(batch[i:i + PG_BATCH])
    ours = rate(len(batch), time.perf_counter() - started)
    columns = ["event_id", "channel_id", "thread_id", "reply_to", "author_id", "author_kind",
               "text", "mentions", "thread_depth", "created_at", "task_id", "metadata"]
    with psycopg.connect(settings.postgres_dsn) as conn:
        table = f"messages_raw_{uuid.uuid4().hex[:8]}"
        conn.execute(f"CREATE TEMP TABLE {table} (LIKE messages INCLUDING DEFAULTS)")
        started = time.perf_counter()
        for i in range(0, len(batch), PG_BATCH):
            with conn.transaction(), conn.cursor().copy(
                    f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for e in batch[i:i + PG_BATCH]:
                    copy.write_row([Jsonb(e.record[c]) if c == "metadata" else e.record[c]
                                    for c in columns])
        raw = rate(len(batch), time.perf_counter() - started)
    return ours, raw


def main(count: int) -> None:
    batch = events(count)
    with tempfile.TemporaryDirectory(prefix="agora-bench-ch-") as directory:
        ch_ours, ch_raw = clickhouse(Settings(clickhouse_url=f"chdb://{directory}"), batch)
    print(f"clickhouse: our sink {ch_ours:,.0f} rows/s, raw clickhouse-connect insert "
          f"{ch_raw:,.0f} rows/s ({count} chat messages, batches of {CH_BATCH})")
    with local_stack() as settings:
        pg_ours, pg_raw = postgres(settings, events(count))
    print(f"postgres: our sink {pg_ours:,.0f} rows/s, raw COPY {pg_raw:,.0f} rows/s "
          f"({count} chat messages, transactions of {PG_BATCH})")
    print(f"RATIO clickhouse_sink_rows_per_s {ch_ours / ch_raw:.3f} target 0.7")
    print(f"RATIO postgres_sink_rows_per_s {pg_ours / pg_raw:.3f} target 0.5")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
