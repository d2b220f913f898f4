"""Each service of the local stack, used for real over loopback."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from ops.core.kafka import ensure_topics
from ops.devstack import smoke
from schemas.topics import AGENTS, ALL, CHAT_MESSAGES

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


def test_qdrant_upsert_and_search(settings):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(50, 384)).astype(np.float32)
    query = vectors[17] + rng.normal(scale=0.01, size=384).astype(np.float32)
    ranked = smoke.qdrant_roundtrip(settings, vectors, query)
    assert ranked[0] == 17 and len(ranked) == 50


def test_our_producers_partition_keys_like_faust(settings, topics):
    """A channel's records must meet on one partition whoever produced them."""
    from aiokafka.partitioner import DefaultPartitioner

    from ops.core import kafka
    from schemas.topics import Topic

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
