"""The knowledge Faust agent: documents in, searchable passages out.

For each KnowledgeDocument it checks the event (``domain.knowledge.documents``), decides
what it does to the document as stored (a stale copy is dead-lettered, the same content
again changes nothing), then for an add extracts the text, chunks it, embeds the chunks
on Triton in batches (the document's row shows the progress) and swaps the passages in
at once. A removal takes them out. Whatever cannot be ingested becomes a dead letter with
its reason, and the document's row says FAILED with the same reason; a previous version
stays searchable.
"""

from __future__ import annotations

import asyncio

import faust
import numpy as np
import structlog
from prometheus_client import Counter, Histogram

from inference.client import InferenceTimeout, InferenceUnavailable
from ops.core.errors import Conflict
from ops.core.retry import Retry, retrying
from schemas import codec
from schemas.events import KnowledgeDocument
from schemas.topics import DEADLETTER, KNOWLEDGE_DOCUMENTS
from streams.app import topic
from streams.deadletter import dead_letter_on_failure
from streams.domain.knowledge.chunks import chunk
from streams.domain.knowledge.documents import check, plan, sha256
from streams.domain.knowledge.extract import BadDocument, extract
from streams.services import Services, stored

log = structlog.get_logger("agora.knowledge")
DOCUMENTS = Counter("agora_knowledge_documents_total", "Knowledge documents by outcome",
                    ["outcome"])
CHUNKS = Counter("agora_knowledge_chunks_total", "Passages embedded and stored")
INGEST = Histogram("agora_knowledge_ingest_seconds", "A document's extract, embed and store",
                   buckets=(.1, .25, .5, 1, 2, 5, 10, 30, 60, 120, 300))
EMBED_BATCH = 64  # the embedder's max_batch_size: one request per batch


class Stale(Conflict):
    """A version or removal older than the document's last change."""


class Knowledge:
    """What the knowledge agent holds: its topics, the worker's services and the
    knowledge store."""

    def __init__(self, app: faust.App, services: Services):
        self.services, self.store = services, services.knowledge
        self.max_bytes = services.settings.knowledge_max_bytes
        self.documents, self.deadletter = topic(app, KNOWLEDGE_DOCUMENTS), topic(app, DEADLETTER)

    async def embed(self, texts: list[str]) -> np.ndarray:
        # The document waits for Triton (its offset stays uncommitted), however long.
        return await retrying(lambda: self.services.inference.embed(texts), Retry(),
                              (InferenceUnavailable, InferenceTimeout),
                              "knowledge.embed_retry")

    async def ingest(self, record: KnowledgeDocument) -> str:
        store, content = self.store, record["content"] or b""  # check(): an add has content
        digest = sha256(content)
        try:
            extracted = await asyncio.to_thread(extract, content, record["source"],
                                                record["media_type"], record["title"])
        except BadDocument as exc:
            await stored(store.begin, record, len(content), digest, record["media_type"] or "",
                         record["title"] or record["source"])
            await stored(store.fail, record["document_id"], record["event_id"], str(exc))
            raise
        await stored(store.begin, record, len(content), digest, extracted.media_type,
                     extracted.title)
        passages = chunk(record["document_id"], extracted.text)
        vectors = []
        for start in range(0, len(passages), EMBED_BATCH):
            batch = passages[start:start + EMBED_BATCH]
            vectors.append(await self.embed([p.embedded_text(extracted.title) for p in batch]))
            await stored(store.progress, record["document_id"], record["event_id"],
                         len(passages), start + len(batch))
        swapped = await stored(store.swap, record, passages, np.concatenate(vectors))
        CHUNKS.inc(len(passages) if swapped else 0)
        return "ingested" if swapped else "superseded"

    async def apply(self, record: KnowledgeDocument) -> str:
        check(record, self.max_bytes)
        current = await stored(self.store.document, record["document_id"])
        action = plan(current, record)
        if action == "stale":
            assert current is not None  # only a stored document is newer than the record
            raise Stale(f"{record['action']} of {record['created_at'].isoformat()} is older "
                        f"than the document's last change ({current['changed_at'].isoformat()})")
        if action == "remove":
            await stored(self.store.remove, record["document_id"], record["event_id"],
                         record["created_at"], record["added_by"])
            return "removed"
        if action == "unchanged":
            return "unchanged"
        with INGEST.time():
            return await self.ingest(record)

    async def consume(self, stream: faust.StreamT) -> None:
        """The agent."""
        await self.services.ready()
        async for event in stream.events():
            outcome = "dead_letter"
            async with dead_letter_on_failure(self.deadletter, event.message, "knowledge"):
                record = codec.decode_as(event.message.value, KnowledgeDocument)
                outcome = await self.apply(record)
                log.info("knowledge.document", document=record["document_id"],
                         source=record["source"], channel=record["channel_id"],
                         outcome=outcome)
            DOCUMENTS.labels(outcome).inc()


def register(app: faust.App, services: Services) -> faust.types.AgentT:
    agent = Knowledge(app, services)
    return app.agent(agent.documents, name="knowledge")(agent.consume)
