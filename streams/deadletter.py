"""Records that cannot be processed go to ``agora.deadletter`` with their reason."""

from __future__ import annotations

from datetime import datetime, timezone

import faust

from schemas import codec
from schemas.ids import derived_id


def dead_letter_record(message: faust.types.Message, stage: str, error: BaseException) -> dict:
    # Deterministic id: a replay of the same bad record yields the same dead letter.
    return {
        "event_id": derived_id(message.topic, message.partition, message.offset, stage),
        "source_topic": message.topic, "partition": message.partition, "offset": message.offset,
        "key": message.key, "value": message.value,
        "reason": str(error) or type(error).__name__, "error_type": type(error).__name__,
        "stage": stage, "attempts": 1, "failed_at": datetime.now(timezone.utc),
    }


async def send_dead_letter(topic: faust.TopicT, message: faust.types.Message, stage: str,
                           error: BaseException) -> None:
    record = dead_letter_record(message, stage, error)
    # Keyed by source topic (DESIGN.md); durable before the bad record's offset is committed.
    await (await topic.send(key=message.topic.encode(), value=codec.encode("DeadLetter", record)))
