"""Agent memory, pgvector against Qdrant's local mode, through the one Memory interface.

For each store size (10k and 100k remembered messages over 50 channels), both backends
hold the same vectors, loaded in bulk outside the timing; then, timed through
``ops.store.memory``'s interface as the workers call it:

- recall: one channel's 3 nearest messages to a query (the responder's call), p50/p99;
- write: ``remember`` of a batch of 64 messages (relevance's call), messages/s.

pgvector runs in the local stack's Postgres (HNSW, cosine); Qdrant local mode opens its
directory on each call, since only one process may hold it (what a worker does).

    .venv/bin/python bench/memory.py [SIZES]        (default 10000,100000)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from qdrant_client import QdrantClient, models

from common import local_stack
from ops.store.memory import PgMemory
from ops.store.qdrant import MESSAGES, QdrantMemory
from schemas.ids import derived_id

CHANNELS = 50
BATCH = 64
RECALLS = 200
WRITES = 20
BUDGET_S = 60  # per measurement: Qdrant's local mode reloads the collection per call
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Clustered unit vectors (messages are about a few dozen topics), float32."""
    centres = rng.normal(size=(40, 384)).astype(np.float32)
    v = centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def messages(run: str, start: int, n: int) -> list[dict]:
    return [{"event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{start + i}")),
             "channel_id": f"bench-{run}-{(start + i) % CHANNELS}",
             "author_id": f"human:{(start + i) % 97}", "text": f"message {start + i}",
             "created_at": START + timedelta(seconds=start + i)} for i in range(n)]


def fill_postgres(dsn: str, rows: list[dict], v: np.ndarray) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor().copy("COPY channel_memory (message_id, channel_id, author_id, text, "
                                "created_at, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "text", "text", "timestamptz", "vector"])
            for m, vec in zip(rows, v):
                copy.write_row((m["event_id"], m["channel_id"], m["author_id"], m["text"],
                                m["created_at"], vec))


def fill_qdrant(path: str, rows: list[dict], v: np.ndarray) -> None:
    QdrantMemory(path).vectors(["warm"])  # creates the collections
    client = QdrantClient(path=path)
    try:
        for i in range(0, len(rows), 2000):
            client.upsert(MESSAGES, points=[models.PointStruct(
                id=derived_id(m["event_id"]), vector=vec.tolist(),
                payload={"message_id": m["event_id"], "channel_id": m["channel_id"],
                         "author_id": m["author_id"], "text": m["text"],
                         "created_ms": int(m["created_at"].timestamp() * 1000)})
                for m, vec in zip(rows[i:i + 2000], v[i:i + 2000])])
    finally:
        client.close()


def measure(memory, run: str, rng: np.random.Generator, next_id: int) -> dict[str, float]:
    """RECALLS recalls and WRITES batch writes, each series cut at BUDGET_S."""
    queries = vectors(rng, RECALLS)
    took: list[float] = []
    until = time.perf_counter() + BUDGET_S
    for i, q in enumerate(queries):
        started = time.perf_counter()
        hits = memory.recall(f"bench-{run}-{i % CHANNELS}", q, 3)
        took.append(time.perf_counter() - started)
        assert len(hits) == 3
        if started > until:
            break
    took.sort()
    started, written = time.perf_counter(), 0
    for w in range(WRITES):
        memory.remember(messages(run, next_id + w * BATCH, BATCH), vectors(rng, BATCH))
        written += BATCH
        if time.perf_counter() - started > BUDGET_S:
            break
    return {"p50_ms": statistics.median(took) * 1000,
            "p99_ms": took[min(len(took) - 1, int(len(took) * 0.99))] * 1000,
            "recalls": len(took), "writes_per_s": written / (time.perf_counter() - started)}


def main(sizes: tuple[int, ...] = (10_000, 100_000)) -> None:
    rng = np.random.default_rng(19)
    results: dict[tuple[str, int], dict[str, float]] = {}
    with local_stack() as settings, tempfile.TemporaryDirectory() as qdrant_dir:
        run, held = uuid.uuid4().hex[:6], 0
        pg, qd = PgMemory(settings.memory), QdrantMemory(qdrant_dir)
        try:
            for size in sizes:
                rows, v = messages(run, held, size - held), vectors(rng, size - held)
                started = time.perf_counter()
                fill_postgres(settings.memory, rows, v)
                print(f"pgvector: {len(rows)} loaded in {time.perf_counter() - started:.0f} s",
                      flush=True)
                started = time.perf_counter()
                fill_qdrant(qdrant_dir, rows, v)
                print(f"qdrant local: {len(rows)} loaded in "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
                held = size
                for name, memory in (("pgvector", pg), ("qdrant-local", qd)):
                    results[(name, size)] = measure(memory, run, rng, 10**7 + size)
                    r = results[(name, size)]
                    print(f"{name:>13} at {size:>7,}: recall p50 {r['p50_ms']:8.1f} ms  p99 "
                          f"{r['p99_ms']:8.1f} ms ({r['recalls']:.0f} recalls)  write "
                          f"{r['writes_per_s']:8.0f} messages/s", flush=True)
        finally:
            pg.close()
            qd.close()
            with psycopg.connect(settings.memory, autocommit=True) as conn:
                conn.execute("DELETE FROM channel_memory WHERE channel_id LIKE %s",
                             (f"bench-{run}-%",))
    print(f"\n{'backend':<13} {'vectors':>8} {'recall p50':>11} {'recall p99':>11} "
          f"{'writes/s':>9}")
    for (name, size), r in results.items():
        print(f"{name:<13} {size:>8,} {r['p50_ms']:>9.1f}ms {r['p99_ms']:>9.1f}ms "
              f"{r['writes_per_s']:>9.0f}")
    for size in sizes:
        pg_r, qd_r = results[("pgvector", size)], results[("qdrant-local", size)]
        print(f"RATIO recall_p50_speedup_{size // 1000}k {qd_r['p50_ms'] / pg_r['p50_ms']:.1f} "
              "target 1")
        print(f"RATIO write_speedup_{size // 1000}k "
              f"{pg_r['writes_per_s'] / qd_r['writes_per_s']:.1f} target 1")


if __name__ == "__main__":
    main(tuple(int(s) for s in sys.argv[1].split(",")) if len(sys.argv) > 1 else
         (10_000, 100_000))
