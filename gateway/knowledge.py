"""KnowledgeService: documents in and out of the knowledge base, and its search.

An added document is read whole (up to AGORA_KNOWLEDGE_MAX_BYTES, refused as soon as the
stream passes it) and its text extracted here, so that an empty, binary, corrupt or
undecodable file gets its reason at once; then it is published on
``agora.knowledge.documents`` for the workers to chunk and embed. The same content
again is answered with the document as it is, and publishes nothing. A removal takes the
passages out of Postgres before the call returns (and is published for the record).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

from gateway import cursor as cursors
from gateway import validation
from gateway.auth import Role
from gateway.guard import caller, require_channel
from gateway.publish import send
from gateway.validation import InvalidField
from inference.client import InferenceClient
from ops.core.config import Settings
from ops.core.errors import Invalid, NotFound, Unavailable
from ops.core.kafka import AsyncProducer
from ops.store.knowledge import KnowledgeStore
from schemas import codec
from schemas.agora.v1 import knowledge_pb2, knowledge_pb2_grpc
from schemas.codec import epoch_ms, from_epoch_ms
from schemas.convert import timestamp
from schemas.topics import KNOWLEDGE_DOCUMENTS
from streams.domain.knowledge.documents import (
    WORKSPACE,
    check,
    document_id,
    plan,
    sha256,
)
from streams.domain.knowledge.extract import extract

STATES = {"ingesting": knowledge_pb2.DOCUMENT_STATE_INGESTING,
          "active": knowledge_pb2.DOCUMENT_STATE_ACTIVE,
          "failed": knowledge_pb2.DOCUMENT_STATE_FAILED,
          "removed": knowledge_pb2.DOCUMENT_STATE_REMOVED}
DEFAULT_PASSAGES, MAX_PASSAGES, MAX_QUERY = 5, 20, 2000


def document(row: dict) -> knowledge_pb2.Document:
    return knowledge_pb2.Document(
        document_id=row["document_id"], channel_id=row["channel_id"] or "",
        source=row["source"], title=row["title"], media_type=row["media_type"],
        content_sha256=row["content_sha256"], size_bytes=row["size_bytes"],
        state=STATES[row["status"]], error=row["error"] or "", chunks=row["chunks"],
        chunks_embedded=row["chunks_embedded"], added_by=row["added_by"],
        changed_at=timestamp(row["changed_at"]))


def _now() -> datetime:
    """Now, to the millisecond as the event carries it: the row and the event must agree
    on when the change happened (events apply in event time)."""
    return from_epoch_ms(epoch_ms(datetime.now(timezone.utc)))


def _scope(channel_id: str | None, change: bool) -> None:
    """Denied unless the caller may read (or ``change``) documents of that scope."""
    if channel_id is None:
        if change:
            require_channel(WORKSPACE, Role.ADMIN)
        return
    require_channel(channel_id, Role.MEMBER if change else Role.VIEWER)


class KnowledgeService(knowledge_pb2_grpc.KnowledgeServiceServicer):
    def __init__(self, settings: Settings, producer: AsyncProducer):
        self.settings = settings
        self.producer = producer
        self.store = KnowledgeStore(settings.postgres_dsn)
        self.inference = InferenceClient(settings.triton_grpc,
                                         timeout_s=settings.inference_timeout_s)

    async def close(self) -> None:
        await self.inference.close()
        await asyncio.to_thread(self.store.close)

    async def _document(self, document_id: str) -> dict:
        row = await asyncio.to_thread(self.store.document,
                                      validation.identifier(document_id, "document_id"))
        if row is None:
            raise NotFound(f"no document {document_id!r}")
        return row

    async def AddDocument(self, request_iterator, context):
        first, data, limit = None, bytearray(), self.settings.knowledge_max_bytes
        async for request in request_iterator:
            if first is None:
                first = request
                channel = None if request.workspace else \
                    validation.channel_id(request.channel_id)
                if request.workspace and request.channel_id:
                    raise InvalidField("workspace", "a document is for one channel or the "
                                                    "workspace, not both")
                _scope(channel, change=True)  # before reading any more of it
            elif request.channel_id or request.source or request.title or \
                    request.media_type or request.workspace:
                raise InvalidField("data", "only the first message names the document")
            data += request.data
            if len(data) > limit:
                raise Invalid(f"the document is over {limit / 2**20:.1f} MiB, the limit "
                              "(AGORA_KNOWLEDGE_MAX_BYTES)")
        if first is None:
            raise InvalidField("source", "no message: the first names the document")
        record = {"event_id": str(uuid.uuid4()),
                  "document_id": document_id(channel, first.source), "action": "ADD",
                  "channel_id": channel, "source": first.source, "title": first.title or None,
                  "media_type": first.media_type or None, "content": bytes(data),
                  "content_sha256": None, "added_by": caller().subject,
                  "created_at": _now()}
        check(record, limit)
        extracted = await asyncio.to_thread(extract, record["content"], record["source"],
                                            record["media_type"], record["title"])
        current = await asyncio.to_thread(self.store.document, record["document_id"])
        if plan(current, record) == "unchanged":
            return document(current)
        # Shown (INGESTING) from now on; the knowledge agent takes it from there.
        await asyncio.to_thread(self.store.begin, record, len(data), sha256(record["content"]),
                                extracted.media_type, extracted.title, again=False)
        try:
            await self._publish(record)
        except Unavailable as exc:
            await asyncio.to_thread(self.store.fail, record["document_id"], record["event_id"],
                                    f"not published: {exc}")
            raise
        return document(await self._document(record["document_id"]))

    async def _publish(self, record: dict) -> None:
        await send(self.producer, KNOWLEDGE_DOCUMENTS.name, record["document_id"],
                   codec.encode("KnowledgeDocument", record))

    async def GetDocument(self, request, context):
        row = await self._document(request.document_id)
        _scope(row["channel_id"], change=False)
        return document(row)

    async def ListDocuments(self, request, context):
        channel = validation.channel_id(request.channel_id) if request.channel_id else None
        _scope(channel, change=False)
        size = validation.page_size(request.page_size)
        after = ""
        if request.page_token:
            try:
                after = str(cursors.from_b64json(request.page_token))
            except ValueError:
                raise InvalidField("page_token", "not a token from a previous page") from None
        rows = await asyncio.to_thread(self.store.documents, [channel, None],
                                       request.include_removed, after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        token = cursors.b64json(f"{rows[-1]['source']}\x01{rows[-1]['document_id']}") \
            if more else ""
        return knowledge_pb2.ListDocumentsResponse(documents=[document(r) for r in rows],
                                                   next_page_token=token)

    async def RemoveDocument(self, request, context):
        row = await self._document(request.document_id)
        _scope(row["channel_id"], change=True)
        record = {"event_id": str(uuid.uuid4()), "document_id": row["document_id"],
                  "action": "REMOVE", "channel_id": row["channel_id"], "source": row["source"],
                  "title": None, "media_type": None, "content": None, "content_sha256": None,
                  "added_by": caller().subject, "created_at": _now()}
        removed = await asyncio.to_thread(self.store.remove, row["document_id"],
                                          record["event_id"], record["created_at"],
                                          record["added_by"])
        await self._publish(record)
        return document(removed)

    async def Search(self, request, context):
        channel = validation.channel_id(request.channel_id) if request.channel_id else None
        _scope(channel, change=False)
        query = request.query.strip()
        if not query or len(query) > MAX_QUERY:
            raise InvalidField("query", f"1 to {MAX_QUERY} characters")
        if request.limit < 0:
            raise InvalidField("limit", "must not be negative")
        limit = min(request.limit or DEFAULT_PASSAGES, MAX_PASSAGES)
        [vector] = await self.inference.embed([query])
        found = await asyncio.to_thread(self.store.search, channel, query, vector, limit)
        return knowledge_pb2.SearchResponse(passages=[knowledge_pb2.Passage(
            chunk_id=p["chunk_id"], document_id=p["document_id"], title=p["title"],
            heading=p["heading"], content=p["content"], position=p["position"],
            score=float(p["score"]), vector_rank=p["vector_rank"], text_rank=p["text_rank"])
            for p in found])
