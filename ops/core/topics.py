"""Create Agora's topics, idempotently, with their partition counts and policies."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.error import KafkaError

from ops.core.config import Settings


@dataclass
class TopicState:
    name: str
    partitions: int
    action: str  # created | exists


class TopicMismatch(RuntimeError):
    """A topic exists with another partition count than configured."""


def ensure_topics(settings: Settings, topics, timeout_s: float = 15) -> list[TopicState]:
    """Create ``topics`` (``schemas.topics.Topic``s: name, config) where missing."""
    admin = AdminClient({"bootstrap.servers": settings.broker})
    wanted = {t.name: NewTopic(t.name, num_partitions=settings.partitions,
                               replication_factor=settings.replication_factor,
                               config=dict(t.config)) for t in topics}
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [nt for name, nt in wanted.items() if name not in existing]
    created = set()
    for name, future in (admin.create_topics(missing, request_timeout=timeout_s).items()
                         if missing else []):
        try:
            future.result(timeout=timeout_s)
            created.add(name)
        except KafkaException as exc:
            # Another process created it between our listing and our request.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    metadata = admin.list_topics(timeout=timeout_s).topics
    states = []
    for name in wanted:
        count = len(metadata[name].partitions)
        if count != settings.partitions:
            # Kafka cannot shrink a topic, and growing it would move channels to
            # other partitions: an operator has to decide, so say it clearly.
            raise TopicMismatch(f"topic {name} has {count} partitions, configuration says "
                                f"{settings.partitions} (AGORA_PARTITIONS)")
        states.append(TopicState(name, count, "created" if name in created else "exists"))
    return states
