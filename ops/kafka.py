"""Kafka clients configured the way every Agora producer must be."""

from __future__ import annotations

from confluent_kafka import Producer

from ops.config import Settings


def producer(settings: Settings, **conf) -> Producer:
    """A confluent-kafka producer that partitions like Faust, aiokafka and Java clients.

    librdkafka hashes keys with CRC32 by default, the others with murmur2: with mixed
    partitioners one channel's messages would land on two partitions, losing their
    order and splitting the channel's table state. Any external producer must use
    murmur2 too (the Java default).
    """
    return Producer({"bootstrap.servers": settings.broker, "acks": "all",
                     "partitioner": "murmur2_random", **conf})
