"""Live channel events for StreamChannel: one Kafka consumer per gateway process, any
number of subscribers.

The ``Tail`` reads the channel topics (messages, reply chunks, relevance decisions,
tool results, votes and vote results, incidents) from their end when the gateway
starts, decodes each record once and hands it to the subscribers of its channel
(StreamChannel shows all but the incidents, which StreamIncidents follows). A subscriber's position is the
next offset of every topic partition (the cursor), so:

* from now: the position is the tail's own at the moment of subscribing, taken under
  the same lock that hands records out, so nothing falls between the two;
* from a cursor or a time: a reader of its own (``_catch_up``) reads Kafka from there
  up to that moment's position, then the subscriber continues with the live records
  it queued meanwhile, skipping any it already had;
* a subscriber too slow for its queue is not dropped: it goes back to reading Kafka
  from its own cursor, then live again. Nothing is lost or repeated either way.

Only records someone follows are decoded. On the topics keyed by channel id the
Kafka key says whose a record is before decoding it; docs/ARCHITECTURE.md asks every producer to
key so (a channel's order and its worker's state depend on it), and a record keyed
otherwise does not reach streams.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from confluent_kafka import Consumer, TopicPartition

from ops.core import kafka
from ops.core.config import Settings
from schemas import codec
from schemas.topics import (
    CHAT_MESSAGES,
    INCIDENTS,
    RELEVANCE_DECISIONS,
    REPLY_CHUNKS,
    TOOL_RESULTS,
    VOTE_RESULTS,
    VOTES,
)

log = structlog.get_logger("agora.gateway")
_SHOWN = (CHAT_MESSAGES, REPLY_CHUNKS, RELEVANCE_DECISIONS, TOOL_RESULTS, VOTES, VOTE_RESULTS,
          INCIDENTS)
TOPICS = tuple(t.name for t in _SHOWN)
_KEYED_BY_CHANNEL = frozenset(t.name for t in _SHOWN if t.key == "channel_id")
QUEUE_SIZE = 10_000

Position = dict[tuple[str, int], int]  # (topic, partition) -> next offset


@dataclass(frozen=True)
class Item:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    name: str
    record: dict


def channel_of(record: dict) -> str | None:
    """Every event shown in a channel names it (VoteDeadline on agora.votes does not,
    and is not shown)."""
    return record.get("channel_id")


def _consumer(settings: Settings) -> Consumer:
    # A cursor's offset that retention has deleted resumes at the oldest record left.
    return kafka.consumer(settings, "agora-gateway-tail", **{"auto.offset.reset": "earliest"})


def _decode(message) -> Item | None:
    try:
        name, record = codec.decode(message.value())
    except codec.CodecError:
        return None  # garbage is the dead-letter path's business, not a subscriber's
    return Item(message.topic(), message.partition(), message.offset(),
                message.timestamp()[1], name, record)


class _Subscriber:
    def __init__(self, channel_id: str, loop: asyncio.AbstractEventLoop):
        self.channel_id = channel_id
        self.loop = loop
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False

    def offer(self, item: Item) -> None:  # on the event loop
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class Tail:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.position: Position = {}
        self._subscribers: dict[str, set[_Subscriber]] = {}  # by channel
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin at every partition's current end (blocking: call before serving)."""
        self.position = kafka.ends(self.settings, TOPICS)
        consumer = _consumer(self.settings)
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in self.position.items()])
        self._thread = threading.Thread(target=self._run, args=(consumer,), name="gateway-tail",
                                        daemon=True)
        self._thread.start()
        log.info("gateway.tail_started", partitions=len(self.position))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._read(consumer)
                except Exception:  # a dead tail thread would silence every stream
                    log.exception("gateway.tail_failed")
        finally:
            consumer.close()

    def _read(self, consumer: Consumer) -> None:
        message = consumer.poll(0.2)
        if message is None or message.error():
            return
        topic, partition, offset = kafka.position(message)
        with self._lock:
            if not self._wanted(message):
                self.position[(topic, partition)] = offset + 1
                return
        # Decoded outside the lock; whoever subscribes meanwhile still gets the record,
        # since the position moves past it only below, with the hand-out.
        item = _decode(message)
        with self._lock:
            self.position[(topic, partition)] = offset + 1
            if item is None or (channel := channel_of(item.record)) is None:
                return
            for sub in self._subscribers.get(channel, ()):
                sub.loop.call_soon_threadsafe(sub.offer, item)

    def _wanted(self, message) -> bool:
        if not self._subscribers:
            return False
        key = message.key()
        if message.topic() in _KEYED_BY_CHANNEL and key is not None:
            return key.decode(errors="replace") in self._subscribers
        return True

    def _subscribe(self, channel_id: str) -> tuple[_Subscriber, Position]:
        sub = _Subscriber(channel_id, asyncio.get_running_loop())
        with self._lock:
            self._subscribers.setdefault(channel_id, set()).add(sub)
            return sub, dict(self.position)

    def _unsubscribe(self, sub: _Subscriber) -> None:
        with self._lock:
            subs = self._subscribers.get(sub.channel_id, set())
            subs.discard(sub)
            if not subs:
                self._subscribers.pop(sub.channel_id, None)

    def offsets_at(self, when: datetime) -> Position:
        """Every partition's first offset at or after ``when`` (blocking)."""
        consumer = _consumer(self.settings)
        try:
            ms = codec.epoch_ms(when)
            found = consumer.offsets_for_times(
                [TopicPartition(t, p, ms) for t, p in self.position], timeout=10)
            # -1: nothing that late yet, so from the partition's end.
            return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0
                    else self.position[(tp.topic, tp.partition)] for tp in found}
        finally:
            consumer.close()

    async def follow(self, channel_id: str, start: Position | None,
                     subscribed: Callable[[], Awaitable[None]] | None = None
                     ) -> AsyncIterator[tuple[Item, Position]]:
        """The channel's events from ``start`` (None: from now), each with the position
        right after it, until the caller stops iterating. ``subscribed()`` is awaited
        once the live feed is held: from then on, nothing produced is missed."""
        cursor: Position = dict(start) if start is not None else {}
        while True:
            sub, now = self._subscribe(channel_id)
            try:
                if subscribed is not None:
                    await subscribed()
                    subscribed = None
                if start is None and not cursor:
                    cursor = now
                else:
                    for key, offset in now.items():
                        cursor.setdefault(key, offset)  # a partition new to the cursor
                    async for item in _catch_up(self.settings, channel_id, cursor, now):
                        cursor[(item.topic, item.partition)] = item.offset + 1
                        yield item, dict(cursor)
                while not sub.overflowed or not sub.queue.empty():
                    item = await sub.queue.get()
                    key = (item.topic, item.partition)
                    if item.offset < cursor.get(key, 0):
                        continue  # read already, while catching up
                    cursor[key] = item.offset + 1
                    yield item, dict(cursor)
                log.warning("gateway.subscriber_lagging", channel=channel_id)
            finally:
                self._unsubscribe(sub)


async def _catch_up(settings: Settings, channel_id: str, start: Position, until: Position
                    ) -> AsyncIterator[Item]:
    """The channel's records from ``start`` up to (not including) ``until``, read by a
    consumer of their own in a thread."""
    if all(start.get(key, 0) >= offset for key, offset in until.items()):
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(1000)
    stop, finished = threading.Event(), threading.Event()

    def put(item) -> None:  # waits while the subscriber's queue is full
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def read() -> None:
        try:
            for message in kafka.read_range(settings, start, until, stop,
                                            group="agora-gateway-tail"):
                item = _decode(message)
                if item is not None and channel_of(item.record) == channel_id:
                    put(item)
            if not stop.is_set():
                put(None)
        except Exception as exc:  # surfaced to the subscriber, not lost in the thread
            put(exc)
        finally:
            finished.set()

    # A thread of its own: a slow subscriber holds it, not the loop's shared executor.
    threading.Thread(target=read, name="gateway-catch-up", daemon=True).start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        while not finished.is_set():  # the reader may wait on a full queue: drain it
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.01)
