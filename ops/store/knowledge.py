"""The knowledge base in Postgres (migration 0004): documents, their passages with
vectors, and the hybrid search the responder and KnowledgeService.Search use.

A version's passages are swapped in whole, in one transaction holding the document's row
lock, so a search sees the previous version or the new one, never half. Removal takes a
document's passages out in one statement. Search fuses two rankings by reciprocal rank
(RRF): cosine similarity on the HNSW index, and Postgres full-text rank over the title,
heading (weight A) and content (weight B) with the query's words OR-ed, so a question
need not contain every word of the passage.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from pgvector import Vector
from psycopg.rows import dict_row

from ops.store.memory import connection, pool

RRF_K = 60  # the usual constant: ranks beyond a few dozen weigh little
CANDIDATES = 40  # per ranking, before fusion
DOCUMENT_COLUMNS = ("document_id", "channel_id", "source", "title", "media_type",
                    "content_sha256", "size_bytes", "status", "error", "chunks",
                    "chunks_embedded", "added_by", "event_id", "changed_at")

_SEARCH = f"""
WITH query AS (
    SELECT %(vector)s::vector AS v,
           -- any of the words, ranked by how many and where: OR, not plainto's AND
           nullif(replace(plainto_tsquery('english', %(text)s)::text, '&', '|'), '')::tsquery AS q
), scoped AS (
    SELECT k.* FROM knowledge_base k JOIN knowledge_documents d USING (document_id)
    WHERE d.status <> 'removed'
      AND (k.channel_id IS NULL OR k.channel_id = %(channel)s)
), by_vector AS (
    SELECT chunk_id, row_number() OVER (ORDER BY embedding <=> (SELECT v FROM query)) AS rank
    FROM (SELECT chunk_id, embedding FROM scoped
          ORDER BY embedding <=> (SELECT v FROM query) LIMIT {CANDIDATES}) nearest
), by_text AS (
    SELECT chunk_id, row_number() OVER (ORDER BY score DESC, chunk_id) AS rank
    FROM (SELECT chunk_id, ts_rank_cd(search, (SELECT q FROM query)) AS score FROM scoped
          WHERE search @@ (SELECT q FROM query)
          ORDER BY score DESC LIMIT {CANDIDATES}) matching
)
SELECT k.chunk_id, k.document_id, k.title, k.heading, k.content, k.position, k.source,
       coalesce(1.0 / ({RRF_K} + v.rank), 0) + coalesce(1.0 / ({RRF_K} + t.rank), 0) AS score,
       coalesce(v.rank, 0) AS vector_rank, coalesce(t.rank, 0) AS text_rank,
       1 - (k.embedding <=> (SELECT v FROM query)) AS similarity
FROM by_vector v FULL JOIN by_text t USING (chunk_id) JOIN knowledge_base k USING (chunk_id)
ORDER BY score DESC, k.chunk_id LIMIT %(limit)s"""


class KnowledgeStore:
    def __init__(self, dsn: str, max_size: int = 4):
        self.pool = pool(dsn, max_size)

    def close(self) -> None:
        self.pool.close()

    # ------------------------------------------------------------------ reading

    def document(self, document_id: str) -> dict | None:
        with connection(self.pool) as conn:
            return conn.cursor(row_factory=dict_row).execute(
                f"SELECT {', '.join(DOCUMENT_COLUMNS)} FROM knowledge_documents "
                "WHERE document_id = %s", (document_id,)).fetchone()

    def documents(self, channels: Sequence[str | None], include_removed: bool, after: str,
                  limit: int) -> list[dict]:
        """Documents of ``channels`` (None: the workspace's), by source then id, after
        the (source, id) cursor ``after`` ('' for the first page)."""
        named = [c for c in channels if c is not None]
        with connection(self.pool) as conn:
            return conn.cursor(row_factory=dict_row).execute(
                f"""SELECT {', '.join(DOCUMENT_COLUMNS)} FROM knowledge_documents
                    WHERE (channel_id = ANY(%s) OR (%s AND channel_id IS NULL))
                      AND (%s OR status <> 'removed')
                      AND (source || chr(1) || document_id) > %s
                    ORDER BY source || chr(1) || document_id LIMIT %s""",
                (named, None in channels, include_removed, after, limit)).fetchall()

    def search(self, channel_id: str | None, text: str, vector: np.ndarray,
               limit: int) -> list[dict]:
        """The passages of the channel's and the workspace's documents that best match,
        best first: chunk_id, document_id, title, heading, content, position, source,
        score, vector_rank, text_rank, similarity (cosine)."""
        with connection(self.pool) as conn:
            return conn.cursor(row_factory=dict_row).execute(_SEARCH, {
                "vector": np.asarray(vector, np.float32), "text": text,
                "channel": channel_id, "limit": limit}).fetchall()

    # ------------------------------------------------------------------ writing

    def begin(self, event: dict, size: int, sha: str, media_type: str, title: str,
              again: bool = True) -> None:
        """Record that ``event``'s version is being ingested (its row's progress), unless
        a later change is recorded; ``again``: also when this very event is (the
        knowledge agent starts over, the gateway only announces it)."""
        with connection(self.pool) as conn:
            conn.execute("""
                INSERT INTO knowledge_documents (document_id, channel_id, source, title,
                    media_type, content_sha256, size_bytes, status, error, chunks,
                    chunks_embedded, added_by, event_id, changed_at)
                VALUES (%(document_id)s, %(channel_id)s, %(source)s, %(title)s,
                        %(media_type)s, %(sha)s, %(size)s, 'ingesting', NULL, 0, 0,
                        %(added_by)s, %(event_id)s, %(created_at)s)
                ON CONFLICT (document_id) DO UPDATE SET title = excluded.title,
                    media_type = excluded.media_type, content_sha256 = excluded.content_sha256,
                    size_bytes = excluded.size_bytes, status = 'ingesting', error = NULL,
                    chunks = 0, chunks_embedded = 0, added_by = excluded.added_by,
                    event_id = excluded.event_id, changed_at = excluded.changed_at,
                    updated_at = now()
                WHERE knowledge_documents.changed_at < excluded.changed_at
                   OR (%(again)s AND knowledge_documents.changed_at = excluded.changed_at)""",
                         {**event, "sha": sha, "size": size, "media_type": media_type,
                          "title": title, "again": again})

    def progress(self, document_id: str, event_id: str, chunks: int, embedded: int) -> None:
        with connection(self.pool) as conn:
            conn.execute("""UPDATE knowledge_documents SET chunks = %s, chunks_embedded = %s,
                            updated_at = now() WHERE document_id = %s AND event_id = %s""",
                         (chunks, embedded, document_id, event_id))

    def fail(self, document_id: str, event_id: str, reason: str) -> None:
        """The version of ``event_id`` could not be ingested; an earlier one stays."""
        with connection(self.pool) as conn:
            conn.execute("""UPDATE knowledge_documents SET status = 'failed', error = %s,
                            updated_at = now() WHERE document_id = %s AND event_id = %s""",
                         (reason[:1000], document_id, event_id))

    def swap(self, event: dict, chunks: Sequence, vectors: np.ndarray) -> bool:
        """Replace the document's passages with ``chunks`` (``streams.domain.knowledge
        .chunks.Chunk``) and make it active, unless a newer version or a removal came
        meanwhile (False: nothing written)."""
        with connection(self.pool) as conn, conn.transaction(), conn.cursor() as cur:
            row = cur.execute("SELECT event_id, title, source FROM knowledge_documents "
                              "WHERE document_id = %s FOR UPDATE",
                              (event["document_id"],)).fetchone()
            if row is None or row[0] != event["event_id"]:
                return False
            cur.execute("DELETE FROM knowledge_base WHERE document_id = %s",
                        (event["document_id"],))
            with cur.copy("COPY knowledge_base (chunk_id, document_id, channel_id, title, "
                          "heading, content, position, content_hash, source, embedding) "
                          "FROM STDIN") as copy:
                for c, v in zip(chunks, vectors):
                    copy.write_row((c.chunk_id, event["document_id"], event["channel_id"],
                                    row[1], c.heading, c.content, c.position,
                                    c.content_hash, row[2], Vector(v).to_text()))
            cur.execute("""UPDATE knowledge_documents SET status = 'active', chunks = %s,
                           chunks_embedded = %s, updated_at = now() WHERE document_id = %s""",
                        (len(chunks), len(chunks), event["document_id"]))
        return True

    def remove(self, document_id: str, event_id: str, at: datetime, by: str) -> dict | None:
        """Take the document out of search (its passages deleted, its row kept as
        'removed'); None when there is no such document. A removal older than the
        document's last change does nothing."""
        with connection(self.pool) as conn, conn.transaction(), conn.cursor() as cur:
            row = cur.execute("SELECT changed_at FROM knowledge_documents WHERE document_id = %s "
                              "FOR UPDATE", (document_id,)).fetchone()
            if row is not None and row[0] <= at:
                cur.execute("DELETE FROM knowledge_base WHERE document_id = %s", (document_id,))
                cur.execute("""UPDATE knowledge_documents SET status = 'removed', error = NULL,
                               chunks = 0, chunks_embedded = 0, added_by = %s, event_id = %s,
                               changed_at = %s, updated_at = now() WHERE document_id = %s""",
                            (by, event_id, at, document_id))
        return None if row is None else self.document(document_id)
