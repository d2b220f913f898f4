"""Records that cannot be processed go to ``agora.deadletter`` with their reason."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import datetime, timezone

import faust
import structlog
from prometheus_client import Counter

from schemas.events import DeadLetter
from schemas.ids import derived_id
from streams.app import send_all

log = structlog.get_logger("agora.deadletter")
FAILURES = Counter("agora_record_failures_total",
                   "Records whose handling failed and went to the dead-letter topic", ["stage"])


MAX_VALUE = 512 * 1024  # a larger value (a knowledge document) is not copied


def dead_letter(topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, stage: str, reason: str, error_type: str) -> DeadLetter:
    """The DeadLetter record of one source record, from a Faust agent or a sink. A value
    over MAX_VALUE is left out (the reason says so): the dead-letter topic takes records
    of ordinary size, and the source offset finds the original."""
    if value is not None and len(value) > MAX_VALUE:
        reason = f"{reason} (the {len(value)}-byte value is not copied; see the source offset)"
        value = None
    # Deterministic id: a replay of the same bad record yields the same dead letter.
    return {
        "event_id": derived_id(topic, partition, offset, stage),
        "source_topic": topic, "partition": partition, "offset": offset,
        "key": key, "value": value, "reason": reason, "error_type": error_type,
        "stage": stage, "attempts": 1, "failed_at": datetime.now(timezone.utc),
    }


async def send_dead_letter(topic: faust.TopicT, message: faust.types.Message, stage: str,
                           error: BaseException) -> None:
    record = dead_letter(message.topic, message.partition, message.offset, message.key,
                         message.value, stage, str(error) or type(error).__name__,
                         type(error).__name__)
    # Keyed by source topic (docs/ARCHITECTURE.md); durable before the bad record's offset is committed.
    await send_all([(topic, message.topic, "DeadLetter", record)])


@asynccontextmanager
async def dead_letter_on_failure(topic: faust.TopicT, message: faust.types.Message, stage: str):
    """Wrap one record's handling: any failure becomes a dead letter with its reason,
    and the stream goes on (an escaping exception would restart the agent, which acks
    the record: lost, after whatever side effect it already had)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - each failure is reported as a dead letter
        FAILURES.labels(stage).inc()
        log.exception("agent.record_failed", stage=stage, topic=message.topic,
                      partition=message.partition, offset=message.offset)
        await send_dead_letter(topic, message, stage, exc)
