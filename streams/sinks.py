"""A batching Kafka sink: consume, write a batch to a store, then commit offsets.

Offsets are committed only after the store has committed the batch, so a crash
mid-batch replays it, and the stores' writes are idempotent by event id, so the
replay changes nothing. When the store is down, the sink pauses its partitions and
retries with backoff: it neither drops records nor buffers without bound. A record
the store rejects for good (not an outage) is dead-lettered with the reason, and the
rest of its batch is written.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterable

import structlog
from confluent_kafka import Consumer, Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from ops.core import kafka
from ops.core.config import Settings
from ops.core.errors import Unavailable
from ops.core.retry import Retry
from ops.store.sink import Event, Rejected, Store
from schemas import codec
from schemas.events import DeadLetter
from schemas.topics import DEADLETTER, STORED
from streams.deadletter import dead_letter
from streams.lag import LagGauge, from_librdkafka_stats

log = structlog.get_logger("agora.sinks")
EVENTS = Counter("agora_sink_events_total", "Events written by a sink", ["sink", "outcome"])
BATCH = Histogram("agora_sink_batch_size", "Events per sink batch", ["sink"],
                  buckets=(1, 10, 50, 100, 250, 500, 1000, 2000))
LATENCY = Histogram("agora_sink_batch_seconds", "Time to write and commit a batch", ["sink"],
                    buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
RETRIES = Counter("agora_sink_retries_total", "Batches retried after a store error", ["sink"])
PAUSED = Gauge("agora_sink_paused", "1 while the sink waits for its store, consumption paused",
               ["sink"])
STORE_RETRY = Retry(base_s=0.2, cap_s=5.0)  # forever: the batch waits for its store


def _dead_letter(message: Message, sink: str, reason: str, error_type: str) -> DeadLetter:
    return dead_letter(*kafka.position(message), message.key(), message.value(), sink, reason,
                       error_type)


def decode(messages: Iterable[Message], sink: str) -> tuple[list[Event], list[DeadLetter]]:
    events, dead = [], []
    for message in messages:
        if message.value() is None:
            events.append(Event("Tombstone", {}, message))
            continue
        try:
            name, record = codec.decode(message.value())
        except codec.CodecError as exc:
            dead.append(_dead_letter(message, sink, str(exc), type(exc).__name__))
            continue
        events.append(Event(name, record, message))
    return events, dead


def run(settings: Settings, sink: str, store: Store, *, batch_size: int = 500,
        batch_wait_s: float = 0.2, until_idle_s: float | None = None) -> None:
    """Consume every topic into ``store`` until SIGTERM or SIGINT, or, with
    ``until_idle_s``, until that long passes without a record once partitions are
    assigned (a one-off catch-up)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    group = f"{settings.app_id}-sink-{sink}"
    lag = LagGauge(group)
    PAUSED.labels(sink).set(0)
    consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": group,
                         # librdkafka computes each partition's lag; stats_cb publishes it
                         "statistics.interval.ms": 10000,
                         "stats_cb": lambda text: lag.update(
                             from_librdkafka_stats(json.loads(text))),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": max(6000, int(settings.session_timeout_s * 1000)),
                         "max.poll.interval.ms": 300000})
    dead_letters = kafka.producer(settings)
    topics = [t.name for t in STORED]
    consumer.subscribe(topics)
    log.info("sink.ready", sink=sink, topics=topics)
    last_record = time.monotonic()
    try:
        while not stop.is_set():
            messages = [m for m in consumer.consume(batch_size, batch_wait_s) if not m.error()]
            if not messages:
                if not consumer.assignment():
                    last_record = time.monotonic()  # the group is still forming
                elif until_idle_s is not None and time.monotonic() - last_record >= until_idle_s:
                    log.info("sink.idle", sink=sink, idle_s=until_idle_s)
                    break
                continue
            last_record = time.monotonic()
            started = time.perf_counter()
            events, dead = decode(messages, sink)
            if not _write(consumer, store, events, dead, sink, stop):
                break  # stopping during an outage: nothing committed, the batch replays
            for record in dead:
                dead_letters.produce(DEADLETTER.name, key=record["source_topic"].encode(),
                                     value=codec.encode("DeadLetter", record))
            if dead and dead_letters.flush(30):
                raise RuntimeError("dead letters not acknowledged; the batch will replay")
            consumer.commit(asynchronous=False)  # only after the store committed
            BATCH.labels(sink).observe(len(messages))
            LATENCY.labels(sink).observe(time.perf_counter() - started)
            EVENTS.labels(sink, "written").inc(len(events))
            EVENTS.labels(sink, "dead_letter").inc(len(dead))
    finally:
        consumer.close()
        store.close()
        log.info("sink.stopped", sink=sink)


def _serve_group(consumer: Consumer) -> None:
    """Poll while paused so that the group sees us alive; a record from a partition
    assigned meanwhile is put back (seek) and its partition paused too."""
    message = consumer.poll(0)
    if message is not None and not message.error():
        consumer.seek(TopicPartition(*kafka.position(message)))
    consumer.pause(consumer.assignment())


def _write(consumer: Consumer, store: Store, events: list[Event], dead: list[DeadLetter],
           sink: str, stop: threading.Event) -> bool:
    """Write one batch, waiting out outages with the partitions paused; False if asked
    to stop before the store came back."""
    attempt = 0
    while True:
        try:
            store.write(events)
            break
        except Rejected as exc:
            for index, reason in sorted(exc.reasons.items(), reverse=True):
                bad = events.pop(index)
                dead.append(_dead_letter(bad.message, sink, reason, "Rejected"))
        except Unavailable as exc:
            attempt += 1
            RETRIES.labels(sink).inc()
            if attempt == 1:
                consumer.pause(consumer.assignment())
                PAUSED.labels(sink).set(1)
            delay = STORE_RETRY.delay_s(attempt)
            log.warning("sink.store_unavailable", sink=sink, attempt=attempt,
                        retry_in_s=round(delay, 2), error=str(exc))
            if stop.wait(delay):
                return False
            _serve_group(consumer)
    if attempt:
        consumer.resume(consumer.assignment())
        PAUSED.labels(sink).set(0)
        log.info("sink.store_back", sink=sink, attempts=attempt)
    return True
