"""Agent memory (``ops.store.memory.Memory``) in Qdrant: for production a server, for
its tests local mode.

Against a Qdrant server one client is kept open. Qdrant's local mode (the embedded
stack) lets one process at a time open its directory, so there each use opens the
store, does its work and closes it again, waiting while another process holds it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from ops.core.errors import Unavailable
from schemas.codec import epoch_ms
from schemas.ids import derived_id  # Qdrant ids are UUIDs: stable ones from ours

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

TEXTS = "text_vectors"
MESSAGES = "channel_messages"
DIM = 384


class QdrantMemory:
    def __init__(self, location: str, lock_timeout_s: float = 30.0):
        # Heavy (half a second): imported when a Qdrant memory is made, not by every
        # process that could make one (each `agora` command reaches this module).
        import qdrant_client.http.exceptions

        self._new_client, self.models = qdrant_client.QdrantClient, qdrant_client.models
        self._unreachable = qdrant_client.http.exceptions.ResponseHandlingException
        self.location, self.lock_timeout_s = location, lock_timeout_s
        self.remote = location.startswith(("http://", "https://"))
        self._client: QdrantClient | None = None
        self._ensured = False

    @contextmanager
    def _session(self) -> Iterator[QdrantClient]:
        if self.remote:
            self._client = self._client or self._new_client(url=self.location)
            try:
                self._ensure(self._client)
                yield self._client
            except self._unreachable as exc:  # the server cannot be reached
                raise Unavailable(f"Qdrant: {exc}") from exc
            return
        client = self._open_local()
        try:
            self._ensure(client)
            yield client
        finally:
            client.close()

    def _open_local(self) -> QdrantClient:
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                return self._new_client(path=self.location)
            except RuntimeError as exc:  # "already accessed by another instance"
                if "already accessed" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _ensure(self, client: QdrantClient) -> None:
        if self._ensured and self.remote:
            return
        for name in (TEXTS, MESSAGES):
            if not client.collection_exists(name):
                client.create_collection(name, vectors_config=self.models.VectorParams(
                    size=DIM, distance=self.models.Distance.COSINE))
        self._ensured = True

    def close(self) -> None:
        if self._client:
            self._client.close()

    # ------------------------------------------------------------------ expertise

    def put_vectors(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Keep the vectors of reference texts (agents' expertise and example messages)."""
        with self._session() as client:
            client.upsert(TEXTS, points=[self.models.PointStruct(
                id=derived_id(text), vector=np.asarray(vector).tolist(), payload={"text": text})
                for text, vector in vectors.items()])

    def vectors(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """text -> its vector, for the texts whose vector is kept."""
        if not texts:
            return {}
        with self._session() as client:
            points = client.retrieve(TEXTS, ids=[derived_id(t) for t in texts],
                                     with_vectors=True, with_payload=True)
        return {p.payload["text"]: np.asarray(p.vector, np.float32) for p in points}

    # ------------------------------------------------------------------- messages

    def remember(self, messages: Sequence[dict], vectors: np.ndarray) -> None:
        """Store chat messages with their embeddings (idempotent by message id)."""
        with self._session() as client:
            client.upsert(MESSAGES, points=[self.models.PointStruct(
                id=derived_id(m["event_id"]), vector=v.tolist(),
                payload={"message_id": m["event_id"], "channel_id": m["channel_id"],
                         "author_id": m["author_id"], "text": m["text"],
                         "created_ms": epoch_ms(m["created_at"])})
                for m, v in zip(messages, vectors)])

    def recall(self, channel_id: str, vector: np.ndarray, limit: int,
               exclude: Sequence[str] = ()) -> list[dict]:
        """The channel's past messages closest to ``vector`` (payloads, best first)."""
        with self._session() as client:
            hits = client.query_points(
                MESSAGES, query=vector.tolist(), limit=limit + len(exclude),
                query_filter=self.models.Filter(must=[self.models.FieldCondition(
                    key="channel_id", match=self.models.MatchValue(value=channel_id))])).points
        found = [h.payload for h in hits if h.payload["message_id"] not in exclude]
        return found[:limit]
