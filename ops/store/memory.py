"""Agent memory: the vectors of reference texts (agents' expertise) and the embedded
messages of channels.

One interface, two backends, chosen by ``AGORA_MEMORY_URL``:

- ``postgresql://…``: pgvector tables (migrations 0004, 0005) that every worker shares through a
  small connection pool, HNSW indexes for cosine distance. The local stack's default.
- ``http(s)://…`` (a Qdrant server) or a directory (Qdrant's local mode, one process at a
  time): ``ops.store.qdrant``.

Callers are synchronous (the workers call them in a thread).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from ops.core.errors import Unavailable
from ops.store.qdrant import QdrantMemory
from schemas.codec import epoch_ms
from schemas.ids import derived_id


class Memory(Protocol):
    def put_vectors(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Keep the vectors of reference texts (agents' expertise and example messages)."""

    def vectors(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """text -> its vector, for the texts whose vector is kept."""

    def remember(self, messages: Sequence[dict], vectors: np.ndarray) -> None:
        """Store chat messages with their embeddings (idempotent by message id)."""

    def recall(self, channel_id: str, vector: np.ndarray, limit: int,
               exclude: Sequence[str] = ()) -> list[dict]:
        """The channel's past messages closest to ``vector``, best first: dicts of
        message_id, channel_id, author_id, text, created_ms."""

    def close(self) -> None: ...


def open_memory(url: str) -> Memory:
    if url.startswith(("postgresql://", "postgres://")):
        return PgMemory(url)
    return QdrantMemory(url)


def _configure(conn: psycopg.Connection) -> None:
    try:
        register_vector(conn)
    except psycopg.ProgrammingError as exc:  # the vector type does not exist yet
        raise Unavailable(f"pgvector is not set up (agora db migrate): {exc}") from exc
    # Filtered nearest-neighbour scans (one channel's messages) keep scanning the index
    # until they have enough rows, instead of returning what survived the filter.
    conn.execute("SET hnsw.iterative_scan = relaxed_order")


def pool(dsn: str, max_size: int = 4) -> ConnectionPool:
    """A pool of autocommit connections that speak pgvector's ``vector`` type."""
    return ConnectionPool(dsn, min_size=0, max_size=max_size, open=True, configure=_configure,
                          kwargs={"autocommit": True, "connect_timeout": 5})


@contextmanager
def connection(from_pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """A pooled connection. Unavailable when Postgres cannot be reached, drops the
    connection or is not migrated: callers wait it out (the one retry policy)."""
    try:
        with from_pool.connection(timeout=10) as conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise Unavailable(f"Postgres: {str(exc).strip() or type(exc).__name__}") from exc
    except psycopg.errors.UndefinedTable as exc:
        raise Unavailable(f"the database is not migrated (agora db migrate): "
                          f"{str(exc).strip()}") from exc


class PgMemory:
    def __init__(self, dsn: str):
        self.pool = pool(dsn)

    def close(self) -> None:
        self.pool.close()

    def put_vectors(self, vectors: Mapping[str, np.ndarray]) -> None:
        with connection(self.pool) as conn, conn.cursor() as cur:
            cur.executemany("""INSERT INTO text_vectors (text_id, text, embedding)
                VALUES (%s, %s, %s) ON CONFLICT (text_id) DO UPDATE
                SET embedding = EXCLUDED.embedding""",
                            [(derived_id(text), text, np.asarray(vector, np.float32))
                             for text, vector in vectors.items()])

    def vectors(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if not texts:
            return {}
        with connection(self.pool) as conn:
            rows = conn.execute("SELECT text, embedding FROM text_vectors "
                                "WHERE text_id = ANY(%s::uuid[])",
                                ([derived_id(t) for t in texts],)).fetchall()
        return {text: vector.to_numpy() for text, vector in rows}

    def remember(self, messages: Sequence[dict], vectors: np.ndarray) -> None:
        with connection(self.pool) as conn, conn.cursor() as cur:
            cur.executemany("""INSERT INTO channel_memory (message_id, channel_id, author_id,
                text, created_at, embedding) VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (message_id) DO NOTHING""",
                            [(m["event_id"], m["channel_id"], m["author_id"], m["text"],
                              m["created_at"], np.asarray(v, np.float32))
                             for m, v in zip(messages, vectors)])

    def recall(self, channel_id: str, vector: np.ndarray, limit: int,
               exclude: Sequence[str] = ()) -> list[dict]:
        with connection(self.pool) as conn:
            rows = conn.cursor(row_factory=dict_row).execute(
                """SELECT message_id, channel_id, author_id, text, created_at
                   FROM channel_memory WHERE channel_id = %s AND message_id <> ALL(%s)
                   ORDER BY embedding <=> %s LIMIT %s""",
                (channel_id, list(exclude), np.asarray(vector, np.float32), limit)).fetchall()
        for row in rows:
            row["created_ms"] = epoch_ms(row.pop("created_at"))
        return rows
