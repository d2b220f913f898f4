"""The Faust app of the Agora workers, built from the one settings object.

Topics carry Avro single-object payloads (``schemas.codec``) as raw bytes: Faust
moves bytes and our codec owns the contract, so any Kafka producer can take part.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust

from ops.config import Settings
from ops.stack.process import free_port
from schemas import codec
from schemas.topics import Topic


def create_app(settings: Settings) -> faust.App:
    datadir = settings.stack_dir / "faust" / settings.worker_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
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


async def send_all(records: Iterable[tuple[faust.TopicT, str, str, dict]]) -> None:
    """Encode and send ``(topic, key, event name, record)`` in order, then wait until
    every one is acknowledged: callers commit their input's offset only after that."""
    pending = [await topic.send(key=key.encode(), value=codec.encode(name, record))
               for topic, key, name, record in records]
    for sent in pending:
        await sent
