"""Kafka clients configured the way every Agora producer must be."""

from __future__ import annotations

import asyncio
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from ops.config import Settings
from schemas import codec


def producer(settings: Settings, **conf) -> Producer:
    """A confluent-kafka producer that partitions like Faust, aiokafka and Java clients.

    librdkafka hashes keys with CRC32 by default, the others with murmur2: with mixed
    partitioners one channel's messages would land on two partitions, losing their
    order and splitting the channel's table state. Any external producer must use
    murmur2 too (the Java default).
    """
    return Producer({"bootstrap.servers": settings.broker, "acks": "all",
                     "partitioner": "murmur2_random", **conf})


def publish(settings: Settings, topic: str, records: list[tuple[str, str, dict]],
            timeout_s: float = 10) -> None:
    """Encode and produce ``(event name, key, record)`` triples; returns once acknowledged."""
    out = producer(settings)
    for name, key, record in records:
        out.produce(topic, key=key.encode(), value=codec.encode(name, record))
    if out.flush(timeout_s):
        raise TimeoutError(f"the broker did not acknowledge {topic} records in {timeout_s}s")


class AsyncProducer:
    """``producer()`` for asyncio code: ``await send(...)`` returns once the broker has
    acknowledged the record. A thread serves librdkafka's delivery callbacks, so many
    sends in flight share batches (linger) instead of one flush each."""

    def __init__(self, settings: Settings, **conf):
        self._producer = producer(settings, **{"linger.ms": 2, **conf})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-delivery", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def send(self, topic: str, key: str, name: str, record: dict) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def delivered(error, _message) -> None:
            outcome = (done.set_exception, KafkaException(error)) if error else \
                (done.set_result, None)
            loop.call_soon_threadsafe(lambda: done.done() or outcome[0](outcome[1]))

        self._producer.produce(topic, key=key.encode(), value=codec.encode(name, record),
                               on_delivery=delivered)
        await done

    def close(self, timeout_s: float = 10) -> None:
        self._producer.flush(timeout_s)
        self._stop.set()
        self._thread.join()


class TopicReader:
    """Reads topics from their beginning (no consumer group), decoding every record;
    waits for the records a caller is looking for."""

    def __init__(self, settings: Settings, *topics: str):
        self.consumer = Consumer({"bootstrap.servers": settings.broker,
                                  "group.id": "agora-reader", "enable.auto.commit": False})
        partitions = []
        for topic in topics:
            meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
            partitions += [TopicPartition(topic, p, 0) for p in meta.partitions]
        self.consumer.assign(partitions)
        self.records: list[tuple[str, dict]] = []
        self.undecodable = 0
        # Next offset per partition, from the records read: Tansu's high watermark
        # counts batches, not records, so it cannot tell where a partition ends.
        self.ends: dict[tuple[str, int], int] = {}

    def poll(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            record = self.consumer.poll(0.1)
            if record is None or record.error():
                continue
            self.ends[(record.topic(), record.partition())] = record.offset() + 1
            try:
                self.records.append(codec.decode(record.value()))
            except codec.CodecError:
                self.undecodable += 1  # someone's garbage: the dead-letter tests write some

    def wait(self, predicate, count: int = 1, timeout_s: float = 90) -> list[dict]:
        """The first ``count`` records for which ``predicate(name, record)`` holds;
        ``TimeoutError`` (naming how many were found) if they do not all arrive."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [r for name, r in self.records if predicate(name, r)]
            if len(found) >= count:
                return found[:count]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} records after {timeout_s}s")
            self.poll(0.5)

    def close(self) -> None:
        self.consumer.close()
