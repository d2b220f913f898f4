"""Accounting helpers shared by the sink tests and the fault drills: sinks started as
`agora sink` processes, every topic read to its end, and a consumer group's lag."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from ops.core import kafka
from ops.devstack.process import Proc, start_agora
from schemas.topics import ALL, STORED
from support.kafka import TopicReader


def start_sink(settings, name: str, store: str = "postgres", **env: str) -> Proc:
    return start_agora(settings.stack_dir, ["sink", store, "--batch-size", "200"],
                       f"sink-{name}", lambda log: "sink.ready" in log, timeout_s=60, **env)


def read_all(settings, timeout_s: float = 120) -> TopicReader:
    """A closed reader that has read every topic up to its end as of the call."""
    names = [t.name for t in ALL]
    at = kafka.ends(settings, names)
    reader = TopicReader(settings, *names)
    try:
        deadline = time.monotonic() + timeout_s
        while any(reader.ends.get(tp, 0) < end for tp, end in at.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not read to their ends in {timeout_s}s")
            reader.poll(0.5)
    finally:
        reader.close()
    return reader


def lag(settings, group: str) -> int:
    """Records on the stored topics (those a sink consumes) that ``group`` has not
    committed yet. Topics the sinks skip (reply chunks) do not count: the group never
    commits there."""
    at = kafka.ends(settings, [t.name for t in STORED])
    consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in at], timeout=10)
        return sum(max(0, at[(tp.topic, tp.partition)] - max(tp.offset, 0))
                   for tp in committed)
    finally:
        consumer.close()
