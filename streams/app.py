"""The Faust app of the Agora workers, built from the one settings object.

Topics carry Avro single-object payloads (``schemas.codec``) as raw bytes: Faust
moves bytes and our codec owns the contract, so any Kafka producer can take part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import TP

from ops.core import kafka
from ops.core.config import Settings
from ops.core.net import free_port
from schemas import codec
from schemas.topics import Topic


class _ConsumerThread(faust_kafka.AIOKafkaConsumerThread):
    """Two fixes of Faust's aiokafka consumer, both seen as records lost by a worker
    restarted on a backlog:

    * Table recovery replays each changelog partition up to its end offset: with the
      end offset Tansu reports, the last writes of a table (the rest of the changelog's
      last batch) were left out, e.g. the newest messages of a channel's history, whose
      inference tasks then failed.
    * After recovery Faust resumes the stream partitions, skips what they deliver until
      its flow is back on, and relies on a seek to the committed offsets to read that
      again. aiokafka seeks only to committed offsets above 0, so a partition committed
      at 0 (or never) kept its position past the skipped records.
    """

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_to_committed)

    async def _seek_to_committed(self) -> Mapping[TP, int]:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        earliest = self.app.conf.consumer_auto_offset_reset == "earliest"
        changelogs = self.app.tables.changelog_topics  # positioned by recovery, not here
        for tp, offset in committed.items():
            if offset == 0 or (offset is None and earliest and tp.topic not in changelogs):
                consumer.seek(tp, 0)  # below the log start, the earliest record
        return committed

    async def _highwaters(self, partitions):
        reported = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return reported
        broker = ",".join(faust_kafka.server_list(self.transport.url,
                                                  self.transport.default_port))
        ends = await asyncio.to_thread(kafka.read_past, broker, {
            (tp.topic, tp.partition): end for tp, end in reported.items()})
        return {TP(*tp): end for tp, end in ends.items()}


class _Consumer(faust_kafka.Consumer):
    def _new_consumer_thread(self) -> faust_kafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """Seek to the committed offsets with the partitions paused: Faust notes where
        it reads from only once the seek is done, and records read again before that
        would be dropped as already seen."""
        held = {tp for tp in self.assignment() if tp not in self._paused_partitions}
        self.pause_partitions(held)
        try:
            await super().perform_seek()
        finally:
            self.resume_partitions(held)


class _Transport(faust_kafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    def _new_transport(self) -> faust_kafka.Transport:
        return _Transport(self.conf.broker_consumer, self)


def create_app(settings: Settings) -> faust.App:
    datadir = settings.stack_dir / "faust" / settings.worker_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = _App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.broker.split(",")],
        store=settings.store,
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,  # Faust's own changelog topics; ours come from `topics create`
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_every=100,
        broker_commit_interval=1.0,
        # A knowledge document is one record of up to AGORA_KNOWLEDGE_MAX_BYTES.
        consumer_max_fetch_size=settings.knowledge_max_bytes + 2**20,
        # Faust binds its web server even when unused: loopback, a port per worker.
        web_enabled=False,
        web_host="127.0.0.1",
        web_port=settings.web_port or free_port(),
        loghandlers=[],
    )
    return app


def topic(app: faust.App, spec: Topic, **kwargs: Any) -> faust.TopicT:
    """A Faust handle on one of our declared topics (created by ``agora topics create``)."""
    return app.topic(spec.name, key_type=bytes, value_type=bytes, internal=False, **kwargs)


async def send_all(records: Iterable[tuple[faust.TopicT, str, str, Mapping[str, Any]]]) -> None:
    """Encode and send ``(topic, key, event name, record)`` in order, then wait until
    every one is acknowledged: callers commit their input's offset only after that."""
    pending = [await topic.send(key=key.encode(), value=codec.encode(name, record))
               for topic, key, name, record in records]
    for sent in pending:
        await sent
