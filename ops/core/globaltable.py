"""A compacted topic read as a live table (a global table): by every worker (the
registry, agent status, tool approvals) and by the gateway (the registry).

Each reader reads all partitions from the beginning, outside any consumer group, and
keeps the latest value per key; a null value deletes the key, a record the decoder
maps to None is skipped. ``start`` returns once the reader has caught up with where
the partitions ended when it began (``ops.core.kafka.ends``, Tansu's short end offsets
included), so nobody decides with a half-loaded registry; ``caught_up`` does the same
for any later moment (read your own writes). (Faust's own GlobalTable expects a Faust
changelog topic; the registry is a plain Avro topic that the CLI and the gateway
write, so it gets this small reader instead.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from ops.core import kafka
from ops.core.config import Settings

log = structlog.get_logger("agora.globaltable")
V = TypeVar("V")
CAUGHT_UP_S = 10.0  # past this the caller fails (a dead letter), never hangs


class GlobalTable(Generic[V]):
    def __init__(self, settings: Settings, topic: str, decode: Callable[[bytes], V | None]):
        self.settings, self.topic, self.decode = settings, topic, decode
        self.data: dict[str, V] = {}
        self._task: asyncio.Task | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._position: dict[int, int] = {}  # partition -> next offset, once applied
        self._moved = asyncio.Condition()

    def __getitem__(self, key: str) -> V:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> V | Any:
        return self.data.get(key, default)

    def values(self) -> list[V]:
        return list(self.data.values())

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.broker,
                                          group_id=None, enable_auto_commit=False,
                                          auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await self._consumer.start()
        partitions = [TopicPartition(self.topic, p)
                      for p in sorted(await self._partitions())]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.get_running_loop().create_task(self._follow(partitions))
        await self.caught_up(timeout_s=None)
        log.info("globaltable.ready", topic=self.topic, keys=len(self.data))

    async def _partitions(self) -> set[int]:
        for _ in range(50):
            parts = self._consumer.partitions_for_topic(self.topic)
            if parts:
                return parts
            await self._consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
            await asyncio.sleep(0.1)
        raise kafka.MissingTopic(f"{self.topic} does not exist (run `agora topics create`)")

    async def _follow(self, partitions: list[TopicPartition]) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self._apply(record.key, record.value)
            # The consumer's position, not the last record's offset: compaction and
            # transaction markers can leave an end that no record reaches.
            position = {tp.partition: await self._consumer.position(tp) for tp in partitions}
            async with self._moved:
                self._position = position
                self._moved.notify_all()

    async def caught_up(self, timeout_s: float | None = CAUGHT_UP_S) -> None:
        """Return once every record written before the call has been applied."""
        ends = await asyncio.to_thread(kafka.ends, self.settings, [self.topic])
        async with self._moved:
            await asyncio.wait_for(self._moved.wait_for(lambda: all(
                self._position.get(p, 0) >= end for (_, p), end in ends.items())), timeout_s)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = key.decode()
        if value is None:
            self.data.pop(name, None)
            return
        try:
            decoded = self.decode(value)
            if decoded is not None:  # None: a record this table does not keep
                self.data[name] = decoded
        except ValueError as exc:
            # A bad registry record must not stop the worker; the previous value stays.
            log.warning("globaltable.bad_record", topic=self.topic, key=name, error=str(exc))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()
