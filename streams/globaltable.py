"""A compacted topic read as a table by every worker (a global table).

Every worker reads all partitions from the beginning, outside any consumer group,
and keeps the latest value per key; a null value deletes the key, a record the decoder
maps to None is skipped. ``ready`` is set
once the reader has caught up with the end offsets it saw at start, so a worker
never decides with a half-loaded registry. (Faust's own GlobalTable expects a Faust
changelog topic; the registry is a plain Avro topic that the CLI and the gateway
write, so it gets this small reader instead.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

log = structlog.get_logger("agora.globaltable")
V = TypeVar("V")
FETCH_WAIT_MS = 100
CAUGHT_UP_S = 10.0  # past this the caller fails (a dead letter), never hangs


class GlobalTable(Generic[V]):
    def __init__(self, bootstrap: str, topic: str, decode: Callable[[bytes], V]):
        self.bootstrap, self.topic, self.decode = bootstrap, topic, decode
        self.data: dict[str, V] = {}
        self.ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._empty_fetches = 0  # fetches that came back with nothing: the follower is at the end
        self._idle = asyncio.Condition()

    def __getitem__(self, key: str) -> V:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> V | Any:
        return self.data.get(key, default)

    def values(self) -> list[V]:
        return list(self.data.values())

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest",
                                          fetch_max_wait_ms=FETCH_WAIT_MS)
        await self._consumer.start()
        partitions = [TopicPartition(self.topic, p)
                      for p in sorted(await self._partitions())]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        end = await self._consumer.end_offsets(partitions)
        self._task = asyncio.get_running_loop().create_task(self._follow(end))
        await self.ready.wait()

    async def _partitions(self) -> set[int]:
        for _ in range(50):
            parts = self._consumer.partitions_for_topic(self.topic)
            if parts:
                return parts
            await self._consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {self.topic} does not exist: run `agora topics create`")

    async def _follow(self, end: dict[TopicPartition, int]) -> None:
        pending = {tp for tp, offset in end.items() if offset > 0}
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    self._apply(record.key, record.value)
                if tp in pending and records and records[-1].offset + 1 >= end[tp]:
                    pending.discard(tp)
            if not batches:
                async with self._idle:
                    self._empty_fetches += 1
                    self._idle.notify_all()
            if pending and not batches:
                # Compaction or aborted writes can leave the end offset unreachable by
                # records: trust the position instead.
                for tp in list(pending):
                    if await self._consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
            # Ready once past the end offsets and a fetch comes back empty: Tansu's end
            # offsets count batches, so they can fall short of the last record.
            if not pending and not batches and not self.ready.is_set():
                log.info("globaltable.ready", topic=self.topic, keys=len(self.data))
                self.ready.set()

    async def caught_up(self) -> None:
        """Return once every record written before the call has been applied."""
        await self.ready.wait()
        # A fetch sent before the call may come back empty after it: wait it out, then
        # for an empty fetch sent after the call.
        await asyncio.sleep(FETCH_WAIT_MS * 2 / 1000)
        async with self._idle:
            target = self._empty_fetches + 1
            await asyncio.wait_for(
                self._idle.wait_for(lambda: self._empty_fetches >= target), CAUGHT_UP_S)

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
