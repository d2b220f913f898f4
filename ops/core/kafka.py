"""Kafka clients configured the way every Agora producer must be, the one way to find
where a partition ends (``ends``) and the one way to read topics up to it
(``read_range``). Bytes in, bytes out: records are encoded by their owners
(``schemas.codec``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from ops.core.config import Settings
from ops.core.errors import Conflict, Unavailable

log = structlog.get_logger("agora.kafka")


def producer(settings: Settings, **conf) -> Producer:
    """A confluent-kafka producer that partitions like Faust, aiokafka and Java clients.

    librdkafka hashes keys with CRC32 by default, the others with murmur2: with mixed
    partitioners one channel's messages would land on two partitions, losing their
    order and splitting the channel's table state. Any external producer must use
    murmur2 too (the Java default). Records may be as large as a knowledge document.
    """
    return Producer({"bootstrap.servers": settings.broker, "acks": "all",
                     "partitioner": "murmur2_random",
                     "message.max.bytes": settings.knowledge_max_bytes + 2**20, **conf})


def publish(settings: Settings, topic: str, records: Iterable[tuple[str, bytes]],
            timeout_s: float = 10) -> None:
    """Produce ``(key, value)`` pairs; returns once all are acknowledged."""
    out = producer(settings)
    for key, value in records:
        out.produce(topic, key=key.encode(), value=value)
    if out.flush(timeout_s):
        raise TimeoutError(f"the broker did not acknowledge {topic} records in {timeout_s}s")


def consumer(settings: Settings, group: str, **conf) -> Consumer:
    """A consumer for readers that assign partitions and track positions themselves
    (the group commits nothing)."""
    return Consumer({"bootstrap.servers": settings.broker, "group.id": group,
                     "enable.auto.commit": False, **conf})


class MissingTopic(Unavailable):
    """A topic Agora needs does not exist yet."""


def position(message: Message) -> tuple[str, int, int]:
    """A consumed record's topic, partition and offset (confluent-kafka types them
    optional: only a message that was never consumed lacks them)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def read_past(broker: str, reported: dict[tuple[str, int], int | None],
              timeout_s: float = 30) -> dict[tuple[str, int], int | None]:
    """The offset after the last record of each partition, found by reading past
    ``reported``, its end offset as the broker reports it. Tansu reports the base offset
    of a partition's last batch + 1 (it counts batches), short of the rest of that batch;
    on Kafka the answer is the reported end, for one fetch per partition."""
    found = dict(reported)
    waiting = {tp for tp, end in found.items() if end and end > 0}
    if not waiting:
        return found
    reader = Consumer({"bootstrap.servers": broker, "group.id": "agora-ends",
                       "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        reader.assign([TopicPartition(t, p, found[(t, p)] - 1) for t, p in waiting])
        deadline = time.monotonic() + timeout_s
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end found in {timeout_s}s for {sorted(waiting)}")
            record = reader.poll(0.2)
            if record is None:
                continue
            tp = (record.topic(), record.partition())
            if record.error() is None:
                found[tp] = max(found[tp], record.offset() + 1)
            elif record.error().code() == KafkaError._PARTITION_EOF:
                waiting.discard(tp)
        return found
    finally:
        reader.close()


def ends(settings: Settings, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """The offset after the last record of every partition of ``topics``."""
    reader = consumer(settings, "agora-ends")
    try:
        reported = {(t, p): reader.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                    for t, p in partitions(reader, topics)}
    finally:
        reader.close()
    return read_past(settings.broker, reported)


def read_range(settings: Settings, start: dict[tuple[str, int], int],
               until: dict[tuple[str, int], int], stop: threading.Event | None = None,
               group: str = "agora-reader", poll_s: float = 0.2) -> Iterator[Message]:
    """The one way to read topics to a known end: every record of each partition from
    ``start`` up to (not including) ``until`` (``ends()``), without a consumer group;
    returns early once ``stop`` is set. An offset retention has deleted resumes at the
    oldest record left, and a partition whose records up to ``until`` are gone ends at
    its end-of-partition event, where no record would come to say so."""
    left = {tp: end for tp, end in until.items() if start.get(tp, 0) < end}
    if not left:
        return
    reader = consumer(settings, group, **{"auto.offset.reset": "earliest",
                                          "enable.partition.eof": True})
    try:
        reader.assign([TopicPartition(t, p, start.get((t, p), 0)) for t, p in left])
        while left and not (stop and stop.is_set()):
            record = reader.poll(poll_s)
            if record is None:
                continue
            tp = (record.topic(), record.partition())
            if tp not in left:
                continue
            if record.error():
                if (record.error().code() == KafkaError._PARTITION_EOF
                        and record.offset() >= left[tp]):
                    del left[tp]
                continue
            if record.offset() < left[tp]:
                yield record
            if record.offset() + 1 >= left[tp]:
                del left[tp]
    finally:
        reader.close()


def read_to_end(settings: Settings, topics: Iterable[str]) -> Iterator[Message]:
    """Every record of ``topics`` from their beginning to where they end now."""
    until = ends(settings, topics)
    return read_range(settings, {}, until)


def partitions(reader: Consumer, topics: Iterable[str], timeout_s: float = 10
               ) -> list[tuple[str, int]]:
    """Every (topic, partition) of ``topics``, in order."""
    found = []
    for topic in topics:
        meta = reader.list_topics(topic, timeout=timeout_s).topics[topic]
        if meta.error:
            raise MissingTopic(f"{topic}: {meta.error} (run `agora topics create`)")
        found += [(topic, p) for p in sorted(meta.partitions)]
    return found


def _settle(outcomes: list[tuple[asyncio.Future, object]]) -> None:
    for future, error in outcomes:
        if future.done():  # the sender was cancelled
            continue
        if error:
            future.set_exception(KafkaException(error))
        else:
            future.set_result(None)


class AsyncProducer:
    """``producer()`` for asyncio code: ``await send(...)`` returns once the broker has
    acknowledged the record. A thread serves librdkafka's delivery callbacks and hands
    each poll's outcomes to the event loop at once (one wake-up, not one per record),
    so many sends in flight share batches (linger) and wake-ups. A record not
    acknowledged within DELIVERY_TIMEOUT_MS fails (librdkafka would wait 5 minutes),
    so a caller learns of a broker outage while its client still waits."""

    DELIVERY_TIMEOUT_MS = 10_000

    def __init__(self, settings: Settings):
        self._producer = producer(settings, **{"linger.ms": 2,
                                               "delivery.timeout.ms": self.DELIVERY_TIMEOUT_MS})
        self._loop: asyncio.AbstractEventLoop | None = None  # of the senders
        self._outcomes: list[tuple[asyncio.Future, object]] = []  # the delivery thread's
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-delivery", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self._producer.poll(0.1)
                if self._outcomes:
                    outcomes, self._outcomes = self._outcomes, []
                    self._loop.call_soon_threadsafe(_settle, outcomes)
            except Exception:  # a dead delivery thread would leave every send waiting
                log.exception("kafka.delivery_failed")

    async def send(self, topic: str, key: str, value: bytes) -> None:
        self._loop = self._loop or asyncio.get_running_loop()
        done = self._loop.create_future()
        self._producer.produce(
            topic, key=key.encode(), value=value,
            on_delivery=lambda error, _: self._outcomes.append((done, error)))
        await done

    def close(self, timeout_s: float = 10) -> None:
        self._stop.set()
        self._thread.join()
        self._producer.flush(timeout_s)  # what is still in flight; its senders are gone


@dataclass
class TopicState:
    name: str
    partitions: int
    action: str  # created | exists


class TopicMismatch(Conflict):
    """A topic exists with another partition count than configured."""


def ensure_topics(settings: Settings, topics, timeout_s: float = 15) -> list[TopicState]:
    """Create ``topics`` (``schemas.topics.Topic``s: name, config) where missing."""
    admin = AdminClient({"bootstrap.servers": settings.broker})
    wanted = {t.name: NewTopic(t.name, num_partitions=settings.partitions,
                               replication_factor=settings.replication_factor,
                               config=dict(t.config)) for t in topics}
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [nt for name, nt in wanted.items() if name not in existing]
    created = set()
    for name, future in (admin.create_topics(missing, request_timeout=timeout_s).items()
                         if missing else []):
        try:
            future.result(timeout=timeout_s)
            created.add(name)
        except KafkaException as exc:
            # Another process created it between our listing and our request.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    metadata = admin.list_topics(timeout=timeout_s).topics
    states = []
    for name in wanted:
        count = len(metadata[name].partitions)
        if count != settings.partitions:
            # Kafka cannot shrink a topic, and growing it would move channels to
            # other partitions: an operator has to decide, so say it clearly.
            raise TopicMismatch(f"topic {name} has {count} partitions, configuration says "
                                f"{settings.partitions} (AGORA_PARTITIONS)")
        states.append(TopicState(name, count, "created" if name in created else "exists"))
    return states
