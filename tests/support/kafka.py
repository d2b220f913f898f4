"""Kafka helpers of tests and benches: read topics from their beginning, start a
consumer group at the ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from confluent_kafka import TopicPartition

from gateway.tail import Item
from ops.core.config import Settings
from ops.core.kafka import consumer, ends, partitions, publish
from schemas import codec


def publish_events(settings: Settings, topic: str,
                   events: Iterable[tuple[str, str, dict]]) -> None:
    """Encode and produce ``(event name, key, record)`` triples, acknowledged."""
    publish(settings, topic, [(key, codec.encode(name, record)) for name, key, record in events])


def start_at_ends(settings: Settings, group: str, topics: Iterable[str]) -> None:
    """Commit ``group`` at the current end of every partition of ``topics``: its
    members will read only what comes next."""
    at = ends(settings, topics)
    committer = consumer(settings, group)
    try:
        committer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in at.items()],
                         asynchronous=False)
    finally:
        committer.close()


class TopicReader:
    """Reads topics from their beginning (no consumer group), decoding every record and
    keeping those ``keep(name, record)`` accepts, with their positions (``entries``, as
    the gateway's tail reads them); waits for the records a caller is looking for."""

    def __init__(self, settings: Settings, *topics: str,
                 keep: Callable[[str, dict], bool] = lambda name, record: True):
        self.consumer = consumer(settings, "agora-reader")
        self.consumer.assign([TopicPartition(t, p, 0)
                              for t, p in partitions(self.consumer, topics)])
        self.keep = keep
        self.records: list[tuple[str, dict]] = []
        self.entries: list[Item] = []
        self.undecodable = 0
        # Next offset per partition, from the records read (``ends()`` says where a
        # partition ends; compare with this to know a reader got there).
        self.ends: dict[tuple[str, int], int] = {}

    def poll(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(0.1)
            if message is None or message.error():
                continue
            self.ends[(message.topic(), message.partition())] = message.offset() + 1
            try:
                name, record = codec.decode(message.value())
            except codec.CodecError:
                self.undecodable += 1  # someone's garbage: the dead-letter tests write some
                continue
            if self.keep(name, record):
                self.records.append((name, record))
                self.entries.append(Item(message.topic(), message.partition(),
                                         message.offset(), message.timestamp()[1], name,
                                         record))

    def drain(self, quiet_s: float = 2.0) -> None:
        """Read until nothing new arrives for ``quiet_s``."""
        while True:
            seen = len(self.records)
            self.poll(quiet_s)
            if len(self.records) == seen:
                return

    def named(self, name: str, topic: str | None = None) -> list[dict]:
        """The records of event ``name`` read so far (on ``topic`` only, if given)."""
        return [e.record for e in self.entries
                if e.name == name and (topic is None or e.topic == topic)]

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
