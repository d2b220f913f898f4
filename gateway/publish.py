"""Publishing what callers ask for: once per idempotency key, Kafka failures as UNAVAILABLE.

An event made for a call takes a deterministic id from the caller and the call's
idempotency key, so a retried call makes the same event, which every consumer drops
as a copy. ``Recent`` also answers a retry from this gateway's memory with the first
answer (same times, same deadline) without publishing again, and refuses a key reused
for a different request, also when the two calls arrive together.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from confluent_kafka import KafkaException
from google.protobuf.message import Message

from ops.core.errors import Conflict, Unavailable
from ops.core.kafka import AsyncProducer
from schemas import codec

RECENT = 10_000  # answers kept per service for retries


class Recent:
    def __init__(self, size: int = RECENT):
        self.size = size
        self._answers: OrderedDict[str, tuple[bytes, Message]] = OrderedDict()
        self._claims: dict[str, tuple[asyncio.Lock, int]] = {}  # event id -> (lock, users)

    def get(self, event_id: str, request: Message) -> Message | None:
        """The answer of an earlier call that made ``event_id``; Conflict when that call
        asked for something else under the same key."""
        if event_id not in self._answers:
            return None
        fingerprint, answer = self._answers[event_id]
        if fingerprint != request.SerializeToString(deterministic=True):
            raise Conflict("this idempotency key was used for another request")
        return answer

    def answer(self, event_id: str) -> Message | None:
        """The answer that made ``event_id``, whatever asked for it."""
        found = self._answers.get(event_id)
        return found[1] if found else None

    @asynccontextmanager
    async def claim(self, event_id: str) -> AsyncIterator[None]:
        """Calls that make the same event take turns."""
        lock, users = self._claims.get(event_id, (asyncio.Lock(), 0))
        self._claims[event_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._claims.pop(event_id)
            if users > 1:
                self._claims[event_id] = (lock, users - 1)

    def put(self, event_id: str, request: Message, answer: Message) -> None:
        self._answers[event_id] = (request.SerializeToString(deterministic=True), answer)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)


async def send(producer: AsyncProducer, topic: str, key: str, value: bytes) -> None:
    """Produce one record, acknowledged; Unavailable when Kafka cannot take it now."""
    try:
        await producer.send(topic, key, value)
    except (KafkaException, BufferError) as exc:  # BufferError: the local queue is full
        raise Unavailable(f"Kafka: {exc}") from exc


async def publish(producer: AsyncProducer, recent: Recent, request: Message, event_id: str,
                  topic: str, key: str, name: str, record: dict, answer: Message) -> Message:
    """Produce the event a call made, once the broker has it remember the call's
    ``answer`` for its retries, and return it. A retry racing its first call waits for
    it, then gets its answer (or Conflict) instead of publishing again."""
    async with recent.claim(event_id):
        if (earlier := recent.get(event_id, request)) is not None:
            return earlier
        await send(producer, topic, key, codec.encode(name, record))
        recent.put(event_id, request, answer)
        return answer
