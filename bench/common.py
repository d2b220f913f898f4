"""What the benches share: a local stack to measure against."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# The repository and its test helpers (tests/support), when run as `python bench/NAME.py`.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from gateway import auth  # noqa: E402
from gateway.client import Client  # noqa: E402
from gateway.server import signer  # noqa: E402
from gateway.tls import channel_credentials  # noqa: E402
from ops import devstack as stack  # noqa: E402
from ops.core.config import Settings  # noqa: E402
from ops.devstack import smoke  # noqa: E402
from schemas import codec  # noqa: E402
from schemas.topics import CHAT_MESSAGES, RELEVANCE_DECISIONS  # noqa: E402
from support.kafka import TopicReader, publish_events  # noqa: E402


@contextmanager
def local_stack(fresh: bool = False) -> Iterator[Settings]:
    """The running local stack (unless ``fresh``), or one of our own in a temporary
    directory."""
    settings = Settings()
    if not fresh and all(s.state == "up" for s in stack.status(settings.stack_dir)):
        yield settings
        return
    own = Path(tempfile.mkdtemp(prefix="agora-bench-"))
    print(f"starting a local stack in {own}", flush=True)
    stack.up(own, progress=lambda line: print("  " + line, flush=True))
    try:
        yield Settings(stack_dir=own)
    finally:
        stack.down(own, progress=lambda line: None)


def rate(settings: Settings, topic: str, expected: int, timeout_s: float = 600,
         match: Callable[[dict], bool] | None = None) -> float:
    """Records per second on ``topic`` (those whose record ``match``es, when given),
    first to last broker timestamp, once ``expected`` of them arrived."""
    consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": "bench",
                         "enable.auto.commit": False})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    stamps: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(stamps) < expected and time.monotonic() < deadline:
        record = consumer.poll(0.5)
        if record is None or record.error():
            continue
        if match is None or match(codec.decode(record.value())[1]):
            stamps.append(record.timestamp()[1])
    consumer.close()
    if len(stamps) < expected:
        raise TimeoutError(f"{len(stamps)} of {expected} records on {topic}")
    return (expected - 1) / ((max(stamps) - min(stamps)) / 1000)


def connect(settings: Settings) -> Client:
    """A gateway client with a fresh token for every channel (tokens live at most
    AGORA_GATEWAY_TOKEN_MAX_S)."""
    token = auth.issue(signer(settings), "human:bench", ["*:member"],
                       settings.gateway_token_max_s)
    return Client(settings.gateway_address, token, channel_credentials(settings))


def caught_up(settings: Settings, rooms: list[str]) -> None:
    """Once a marker posted to every channel is decided, the group has read all before
    (a channel's messages share a partition, in order)."""
    markers = [smoke.chat_message(room, "marker", author_id="human:bench") for room in rooms]
    publish_events(settings, CHAT_MESSAGES.name, [("ChatMessage", m["channel_id"], m)
                                                 for m in markers])
    ids = {m["event_id"] for m in markers}
    reader = TopicReader(settings, RELEVANCE_DECISIONS.name)
    try:
        reader.wait(lambda _name, r: r["message_id"] in ids, count=len(ids), timeout_s=600)
    finally:
        reader.close()


POSTS_PER_S = 10  # one person's pace, under the gateway's per-caller rate


def post_labelled(settings: Settings, channel: str, messages: list[tuple[str, str]]
                  ) -> dict[str, tuple[str, str]]:
    """Post (text, label) pairs through the gateway at a person's pace; message id ->
    the pair."""
    posted = {}
    with connect(settings) as client:
        for text, label in messages:
            posted[client.post(channel, text).message_id] = (text, label)
            time.sleep(1 / POSTS_PER_S)
    return posted
