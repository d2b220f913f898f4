"""One real round trip through each service of the stack.

``agora demo`` runs these to show the stack works end to end; the integration
tests run them and check what comes back.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import clickhouse_connect
import psycopg
from confluent_kafka import Consumer

from ops.core import kafka
from ops.core.config import Settings
from schemas import codec
from schemas.topics import CHAT_MESSAGES


def chat_message(channel_id: str, text: str, author_id: str = "human:demo") -> dict:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    message_id = str(uuid.uuid4())
    return {
        "event_id": message_id, "channel_id": channel_id, "thread_id": message_id,
        "reply_to": None, "author_id": author_id, "author_kind": "HUMAN", "text": text,
        "mentions": [], "thread_depth": 0, "created_at": now, "metadata": {},
    }


def kafka_roundtrip(settings: Settings, message: dict, group: str,
                    timeout_s: float = 30) -> tuple[dict, int]:
    """Produce an Avro ChatMessage keyed by channel, read it back in a consumer group.

    Returns the decoded message and the partition it was read from.
    """

    producer = kafka.producer(settings)
    producer.produce(CHAT_MESSAGES.name, key=message["channel_id"].encode(),
                     value=codec.encode("ChatMessage", message))
    if producer.flush(timeout_s):
        raise TimeoutError("the broker did not acknowledge the message")
    consumer = Consumer({
        "bootstrap.servers": settings.broker, "group.id": group,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.heartbeat_interval_s * 1000),
    })
    try:
        consumer.subscribe([CHAT_MESSAGES.name])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is None or record.error():
                continue
            _, decoded = codec.decode(record.value(), expected="ChatMessage")
            if decoded["event_id"] == message["event_id"]:
                consumer.commit(record, asynchronous=False)
                return decoded, record.partition()
        raise TimeoutError(f"message {message['event_id']} not consumed in {timeout_s}s")
    finally:
        consumer.close()


def postgres_roundtrip(settings: Settings, text: str) -> str:
    with psycopg.connect(settings.postgres_dsn, connect_timeout=5) as conn:
        conn.execute("CREATE TEMP TABLE smoke (id uuid PRIMARY KEY, body text NOT NULL)")
        row_id = uuid.uuid4()
        conn.execute("INSERT INTO smoke VALUES (%s, %s)", (row_id, text))
        return conn.execute("SELECT body FROM smoke WHERE id = %s", (row_id,)).fetchone()[0]


def clickhouse_roundtrip(settings: Settings, rows: int) -> tuple[str, int]:
    """Insert ``rows`` rows into a MergeTree table and count them; returns (version, count)."""

    client = clickhouse_connect.get_client(dsn=settings.clickhouse)
    try:
        client.command("CREATE DATABASE IF NOT EXISTS smoke")
        client.command("DROP TABLE IF EXISTS smoke.events")
        client.command("CREATE TABLE smoke.events (id UInt64, channel LowCardinality(String), "
                       "at DateTime64(3)) ENGINE = MergeTree ORDER BY (channel, at)")
        now = datetime.now(timezone.utc)
        client.insert("smoke.events", [[i, f"c{i % 3}", now] for i in range(rows)],
                      column_names=["id", "channel", "at"])
        count = client.command("SELECT count() FROM smoke.events")
        client.command("DROP DATABASE smoke")
        return client.server_version, int(count)
    finally:
        client.close()
