"""What a sink hands a store, and what a store may answer: ``Rejected`` for events it
refuses for good, ``ops.core.errors.Unavailable`` to have the same batch retried."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Message

from ops.core.errors import AgoraError


@dataclass(frozen=True)
class Event:
    name: str  # Avro event name; "Tombstone" for a null value on a compacted topic
    record: dict
    message: Message


class Rejected(AgoraError):
    """The store refused these events for good; ``reasons`` maps event index to why."""

    def __init__(self, reasons: dict[int, str]):
        super().__init__(f"{len(reasons)} events rejected")
        self.reasons = reasons


class Store(Protocol):
    def write(self, events: list[Event]) -> None:
        """Write the batch atomically; raise Unavailable or Rejected."""

    def close(self) -> None:
        """Release the connection (the sink is stopping)."""
