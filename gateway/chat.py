"""ChatService: post a message, follow a channel live, read its history.

A posted message goes to agora.chat.messages like any producer's; its id derives
from the caller and the idempotency key. A retry to the same gateway gets the first
answer from its memory (``publish.Recent``) and publishes nothing; a retry after a
restart publishes the same id again, which every consumer drops as a copy. Posting
waits for Postgres only to find a reply_to parent it has not seen itself, and then for
at most ``PARENT_TIMEOUT_S`` to get a connection. History reads the Postgres state the
sink keeps; StreamChannel reads Kafka through the process's ``Tail``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from gateway import cursor as cursors
from gateway import validation
from gateway.auth import Role
from gateway.guard import caller, require_channel
from gateway.publish import Recent, publish, send
from gateway.tail import Item, Tail
from gateway.tools import tool_result
from gateway.votes import postgres_errors, vote_update
from ops.core.errors import AlreadyExists, NotFound, Unavailable
from ops.core.kafka import AsyncProducer
from ops.store import feedback as ratings
from ops.store.postgres_rows import MESSAGE_COLUMNS
from schemas import codec
from schemas.agora.v1 import chat_pb2, chat_pb2_grpc
from schemas.codec import epoch_ms, from_epoch_ms
from schemas.convert import enum, timestamp
from schemas.ids import derived_id
from schemas.topics import AGENT_FEEDBACK, CHAT_MESSAGES
from streams.domain import feedback

COLUMNS = ", ".join(MESSAGE_COLUMNS)
PARENT_TIMEOUT_S = 2  # a post waits no longer for a connection to look up its parent


def posted_id(author: str, idempotency_key: str) -> str:
    """The id of the message ``author`` posts with ``idempotency_key``: a client can know
    it before the answer comes."""
    return derived_id("gateway", author, idempotency_key)


def chat_message(record: dict) -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(
        message_id=record["event_id"], channel_id=record["channel_id"],
        thread_id=record["thread_id"], reply_to=record.get("reply_to") or "",
        author_id=record["author_id"],
        author_kind=enum(chat_pb2.AuthorKind, record["author_kind"]),
        text=record["text"], mentions=record.get("mentions") or [],
        thread_depth=record["thread_depth"], created_at=timestamp(record["created_at"]),
        task_id=record.get("task_id") or "", metadata=record.get("metadata") or {},
        sources=[chat_pb2.Source(**s) for s in record.get("sources") or ()])


def relevance(record: dict) -> chat_pb2.RelevanceSummary:
    scores = sorted(record.get("scores") or [], key=lambda s: -s["score"])
    return chat_pb2.RelevanceSummary(
        decision_id=record["event_id"], message_id=record["message_id"],
        thread_id=record["thread_id"], selected=record.get("selected") or [],
        scores=[chat_pb2.AgentScore(**{f: s[f] for f in (
            "agent_id", "score", "expertise", "workload", "social", "timing", "quality",
            "selected", "reason")}) for s in scores],
        skip_reason=record.get("skip_reason") or "", decided_at=timestamp(record["decided_at"]),
        config_version=record["config_version"])


def reply_chunk(record: dict) -> chat_pb2.ReplyChunk:
    return chat_pb2.ReplyChunk(
        message_id=record["message_id"], task_id=record["task_id"], agent_id=record["agent_id"],
        reply_to=record["reply_to"], thread_id=record["thread_id"], seq=record["seq"],
        offset=record["offset"], text=record["text"], created_at=timestamp(record["created_at"]))


# event name -> (ChannelEvent field, its conversion)
_SHOWN = {"ChatMessage": ("message", chat_message), "ReplyChunk": ("reply_chunk", reply_chunk),
          "RelevanceDecision": ("relevance", relevance), "ToolResult": ("tool_result", tool_result)}


def channel_event(item: Item, position: dict) -> chat_pb2.ChannelEvent | None:
    """The stream's form of a tail item; None for events a channel does not show."""
    body: dict[str, Any]
    if item.name in _SHOWN:
        field, convert = _SHOWN[item.name]
        body = {field: convert(item.record)}
    elif (update := vote_update(item.name, item.record)) is not None:
        body = {"vote_update": update}
    else:
        return None
    return chat_pb2.ChannelEvent(cursor=cursors.encode(item.record["channel_id"], position),
                                 time=timestamp(from_epoch_ms(item.timestamp_ms)), **body)


def _page_token(created_at: datetime, event_id: str) -> str:
    return cursors.b64json([epoch_ms(created_at), event_id])


def _after_token(token: str) -> tuple[datetime, str]:
    try:
        ms, event_id = cursors.from_b64json(token)
        return from_epoch_ms(int(ms)), str(event_id)
    except (ValueError, TypeError):
        raise validation.InvalidField("page_token", "not a token from a previous page") from None


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, producer: AsyncProducer, tail: Tail, pool: AsyncConnectionPool):
        self.producer = producer
        self.tail = tail
        self.pool = pool
        self.recent = Recent()  # message id -> the answer to the first post

    async def _stored_message(self, message_id: str) -> dict | None:
        async with postgres_errors(), self.pool.connection(timeout=PARENT_TIMEOUT_S) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {COLUMNS} FROM messages WHERE event_id = %s",
                              (message_id,))
            return await cur.fetchone()

    async def _parent(self, message_id: str) -> tuple[str, str, int] | None:
        """(channel, thread, depth) of a message to reply to: one this gateway posted
        lately, or one the sink stored."""
        if (posted := self.recent.answer(message_id)) is not None:
            return posted.channel_id, posted.thread_id, posted.thread_depth
        stored = await self._stored_message(message_id)
        if stored is None:
            return None
        return stored["channel_id"], stored["thread_id"], stored["thread_depth"]

    async def PostMessage(self, request, context):
        channel = validation.channel_id(request.channel_id)
        require_channel(channel, Role.MEMBER)
        text = validation.text(request.text)
        key = validation.idempotency_key(request.idempotency_key)
        mentions = validation.mentions(request.mentions)
        metadata = validation.metadata(request.metadata)
        author = caller().subject
        message_id = posted_id(author, key)
        if (answer := self.recent.get(message_id, request)) is not None:
            return answer
        thread_id, depth, reply_to = message_id, 0, None
        if request.reply_to:
            reply_to = validation.identifier(request.reply_to, "reply_to")
            parent = await self._parent(reply_to)
            if parent is None:
                raise NotFound(f"reply_to {reply_to!r}: no such message (yet)")
            if parent[0] != channel:
                raise validation.InvalidField("reply_to", f"the message is in channel "
                                              f"{parent[0]!r}, not {channel!r}")
            thread_id, depth = parent[1], parent[2] + 1
        record = {"event_id": message_id, "channel_id": channel, "thread_id": thread_id,
                  "reply_to": reply_to, "author_id": author, "author_kind": "HUMAN",
                  "text": text, "mentions": mentions, "thread_depth": depth,
                  "created_at": datetime.now(timezone.utc), "task_id": None,
                  "metadata": metadata, "sources": None}
        return await publish(self.producer, self.recent, request, message_id, CHAT_MESSAGES.name,
                             channel, "ChatMessage", record, chat_message(record))

    async def StreamChannel(self, request, context):
        channel = validation.channel_id(request.channel_id)
        require_channel(channel)
        start = None
        if request.WhichOneof("start") == "cursor":
            start = cursors.decode(request.cursor, channel)
        elif request.WhichOneof("start") == "start_time":
            start = await asyncio.to_thread(  # a broker round trip: off the event loop
                self.tail.offsets_at, request.start_time.ToDatetime(timezone.utc))
        # Initial metadata once subscribed: a client that waits for it (Client.stream
        # does) knows that anything it posts from then on reaches this stream.
        async for item, position in self.tail.follow(
                channel, start, lambda: context.send_initial_metadata(())):
            event = channel_event(item, position)
            if event is not None:
                yield event

    async def History(self, request, context):
        channel = validation.channel_id(request.channel_id)
        require_channel(channel)
        size = validation.page_size(request.page_size)
        where, params = ["channel_id = %s"], [channel]
        if request.thread_id:
            where.append("thread_id = %s")
            params.append(validation.identifier(request.thread_id, "thread_id"))
        if request.HasField("before"):
            where.append("created_at < %s")
            params.append(request.before.ToDatetime(timezone.utc))
        if request.page_token:
            where.append("(created_at, event_id) < (%s, %s)")
            params += _after_token(request.page_token)
        async with postgres_errors(), self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {COLUMNS} FROM messages WHERE {' AND '.join(where)} "
                "ORDER BY created_at DESC, event_id DESC LIMIT %s", (*params, size + 1))
            rows = await cur.fetchall()
        page, more = rows[:size], len(rows) > size
        return chat_pb2.HistoryResponse(
            messages=[chat_message(r) for r in page],
            next_page_token=_page_token(page[-1]["created_at"], page[-1]["event_id"])
            if more else "")

    async def RateReply(self, request, context):
        message_id = validation.identifier(request.message_id, "message_id")
        rater = caller().subject
        message = await self._stored_message(message_id)
        if message is None:
            raise NotFound(f"no message {message_id!r} (a reply of a moment ago may not "
                           "be stored yet)")
        require_channel(message["channel_id"], Role.MEMBER)
        record = feedback.rating(message, rater, request.rating, request.comment.strip(),
                                 _now())  # Invalid: INVALID_ARGUMENT, with the reason
        async with postgres_errors(), self.pool.connection() as conn:
            # Stored first: of two ratings of one reply by one person, one is kept.
            if not await ratings.claim(conn, record):
                raise AlreadyExists(f"{rater} rated reply {message_id} already")
            try:
                await send(self.producer, AGENT_FEEDBACK.name, record["agent_id"],
                           codec.encode("AgentFeedback", record))
            except Unavailable:
                await ratings.release(conn, record["event_id"])
                raise
        return chat_pb2.ReplyRating(
            rating_id=record["event_id"], message_id=message_id,
            channel_id=record["channel_id"], agent_id=record["agent_id"], rater_id=rater,
            rating=record["value"], comment=record["comment"] or "",
            rated_at=timestamp(record["created_at"]))


def _now() -> datetime:
    """Now, to the millisecond as the event carries it."""
    return from_epoch_ms(epoch_ms(datetime.now(timezone.utc)))
