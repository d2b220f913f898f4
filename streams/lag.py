"""Consumer lag, the gauge every consuming process exports: per assigned partition,
the records between the consumer's position and the partition's end.

The sinks read it from librdkafka's statistics, the Faust workers from their
consumer; both publish through ``LagGauge``, which also drops the series of
partitions no longer assigned, so a rebalance leaves no stale lag behind. (Tansu's
log end counts batches, not records, so on the local broker the figure is low; on
Kafka it is exact.)
"""

from __future__ import annotations

from prometheus_client import Gauge

LAG = Gauge("agora_consumer_lag", "Records not yet consumed, per assigned partition",
            ["group", "topic", "partition"])


def from_librdkafka_stats(stats: dict) -> dict[tuple[str, int], int]:
    """Lag per partition from librdkafka's statistics JSON. ``consumer_lag`` is -1 for
    a partition not assigned here or not yet fetched, and partition -1 is librdkafka's
    internal bookkeeping: both are left out."""
    lags = {}
    for topic, entry in stats.get("topics", {}).items():
        for partition, p in entry.get("partitions", {}).items():
            if int(partition) >= 0 and p.get("consumer_lag", -1) >= 0:
                lags[(topic, int(partition))] = int(p["consumer_lag"])
    return lags


class LagGauge:
    def __init__(self, group: str):
        self.group = group
        self.published: set[tuple[str, int]] = set()

    def update(self, lags: dict[tuple[str, int], int]) -> None:
        for topic, partition in self.published - set(lags):
            LAG.remove(self.group, topic, str(partition))
        for (topic, partition), lag in lags.items():
            LAG.labels(self.group, topic, str(partition)).set(max(0, lag))
        self.published = set(lags)
