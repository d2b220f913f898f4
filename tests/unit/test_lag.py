"""The consumer-lag gauge: librdkafka's statistics read right, revoked partitions
dropped from the exported series."""

from __future__ import annotations

from prometheus_client import REGISTRY

from streams.lag import LagGauge, from_librdkafka_stats


def sample(group: str, topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("agora_consumer_lag", {
        "group": group, "topic": topic, "partition": str(partition)})


def test_lag_from_librdkafka_statistics():
    stats = {"topics": {
        "agora.chat.messages": {"partitions": {
            "0": {"consumer_lag": 12}, "1": {"consumer_lag": 0},
            "2": {"consumer_lag": -1},  # not assigned here
            "-1": {"consumer_lag": 5}}},  # librdkafka's internal partition
        "agora.votes": {"partitions": {"3": {"consumer_lag": 7}}},
        "agora.empty": {}}}
    assert from_librdkafka_stats(stats) == {
        ("agora.chat.messages", 0): 12, ("agora.chat.messages", 1): 0, ("agora.votes", 3): 7}
    assert from_librdkafka_stats({}) == {}


def test_the_gauge_follows_the_assignment():
    gauge = LagGauge("test-group")
    gauge.update({("t", 0): 5, ("t", 1): -3})  # a stale end below the position reads 0
    assert (sample("test-group", "t", 0), sample("test-group", "t", 1)) == (5, 0)
    gauge.update({("t", 1): 2})  # partition 0 revoked: its series goes
    assert (sample("test-group", "t", 0), sample("test-group", "t", 1)) == (None, 2)
    gauge.update({})
    assert sample("test-group", "t", 1) is None
