"""Each service of the local stack, used for real over loopback."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from ops.core import kafka
from ops.core.globaltable import GlobalTable
from ops.core.kafka import ensure_topics, publish
from ops.devstack import smoke
from schemas.topics import AGENTS, ALL, CHAT_MESSAGES, Topic

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def topics(settings):
    return ensure_topics(settings, ALL)


def test_topics_exist_with_partitions_and_policies(settings, topics):
    assert {t.name for t in topics} == {t.name for t in ALL}
    assert all(t.partitions == settings.partitions for t in topics)
    # A second run changes nothing and says so.
    assert {t.action for t in ensure_topics(settings, ALL)} == {"exists"}
    admin = AdminClient({"bootstrap.servers": settings.broker})
    resource = ConfigResource(ConfigResource.Type.TOPIC, AGENTS.name)
    config = admin.describe_configs([resource])[resource].result(10)
    assert config["cleanup.policy"].value == "compact"


def test_avro_chat_message_through_a_consumer_group(settings, topics):
    sent = smoke.chat_message(f"chan-{uuid.uuid4().hex[:6]}", "Is the index on messages used?")
    group = f"test-{uuid.uuid4().hex[:6]}"
    got, partition = smoke.kafka_roundtrip(settings, sent, group=group)
    assert {k: got[k] for k in sent} == sent  # fields not given keep their defaults

    # The group committed past the record: a new member resumes after it.
    consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": group})
    try:
        [committed] = consumer.committed([TopicPartition(CHAT_MESSAGES.name, partition)],
                                         timeout=10)
        low, high = consumer.get_watermark_offsets(
            TopicPartition(CHAT_MESSAGES.name, partition), timeout=10)
    finally:
        consumer.close()
    assert low < committed.offset <= high


def test_postgres_row_written_and_read(settings):
    text = "état: ✓ — 502 since deploy"
    assert smoke.postgres_roundtrip(settings, text) == text


def test_clickhouse_rows_written_and_counted(settings):
    version, count = smoke.clickhouse_roundtrip(settings, rows=5000)
    assert count == 5000
    assert int(version.split(".")[0]) >= 24


def test_our_producers_partition_keys_like_faust(settings, topics):
    """A channel's records must meet on one partition whoever produced them."""

    probe = Topic("agora.test.partitioning", "channel_id", ())
    ensure_topics(settings, topics=(probe,))
    producer, landed = kafka.producer(settings), {}
    keys = [f"channel-{i}".encode() for i in range(40)]
    for key in keys:
        producer.produce(probe.name, key=key, value=b"probe",
                         on_delivery=lambda err, msg: landed.__setitem__(msg.key(), msg.partition()))
    assert producer.flush(10) == 0
    partitions = list(range(settings.partitions))
    faust_side = {key: DefaultPartitioner()(key, partitions, partitions) for key in keys}
    assert landed == faust_side
    assert len(set(landed.values())) > 1  # the keys really spread


def _probe_topic(settings, name: str) -> str:
    probe = Topic(f"agora.test.{name}-{uuid.uuid4().hex[:6]}", "key", ())
    ensure_topics(settings, topics=(probe,))
    return probe.name


def test_topics_are_read_to_their_true_end(settings):
    """Tansu's end offsets count batches, short of a batch's later records: the one
    reader still returns every record, and only those after a start."""
    topic = _probe_topic(settings, "ends")
    sent = {f"v{i}".encode() for i in range(300)}
    publish(settings, topic, [(f"k{i % 7}", f"v{i}".encode()) for i in range(300)])

    assert sorted(r.value() for r in kafka.read_to_end(settings, [topic])) == sorted(sent)
    until = kafka.ends(settings, [topic])
    assert sum(until.values()) == 300 and len([e for e in until.values() if e]) > 1
    start = {tp: max(end - 5, 0) for tp, end in until.items()}
    later = list(kafka.read_range(settings, start, until))
    assert len(later) == sum(min(end, 5) for end in until.values())
    assert all(r.offset() >= start[(r.topic(), r.partition())] for r in later)
    stopped = threading.Event()
    stopped.set()
    assert list(kafka.read_range(settings, {}, until, stopped)) == []


def test_a_global_table_catches_up_with_what_was_written_before(settings):
    topic = _probe_topic(settings, "table")
    publish(settings, topic, [(f"k{i % 10}", f"v{i}".encode()) for i in range(50)])

    async def follow() -> None:
        table = GlobalTable(settings, topic, bytes.decode)
        await table.start()  # returns once the table holds the topic's end
        try:
            assert table.data == {f"k{i}": f"v{40 + i}" for i in range(10)}
            await asyncio.to_thread(publish, settings, topic, [("k1", b"changed")])
            await table.caught_up()
            assert table["k1"] == "changed" and len(table.values()) == 10
        finally:
            await table.stop()

    asyncio.run(follow())
