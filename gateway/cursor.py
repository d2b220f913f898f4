"""StreamChannel's cursor: where a channel's stream resumes, opaque to clients.

A cursor holds, for each topic-partition the stream reads, the offset of the next
record to read (Kafka's committed-offset convention), so a resumed stream starts
right after the event that carried the cursor. Chat, relevance and tool-result
records of a channel share one partition (keyed by channel id), but vote records are
keyed by vote id, so a channel's votes span every partition of the vote topics:
hence a map, not one offset. The cursor names its channel too, so it cannot resume
another channel's stream.

Format: ``c1.`` then the unpadded base64url of the compact JSON
``{"c": channel_id, "o": {topic: {partition: offset}}}``; the prefix versions it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from gateway.validation import InvalidField
from schemas.topics import ALL

PREFIX = "c1."
MAX_LENGTH = 4096  # generous: dozens of partitions fit in well under 1 KiB
_TOPICS = frozenset(t.name for t in ALL)


def b64json(value) -> str:
    """``value`` as compact JSON in unpadded base64url: an opaque token safe in URLs."""
    body = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).rstrip(b"=").decode()


def from_b64json(token: str):
    """The value of a ``b64json`` token; ValueError when it is not one."""
    return json.loads(base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_",
                                       validate=True))


def encode(channel_id: str, offsets: Mapping[tuple[str, int], int]) -> str:
    """The cursor of ``channel_id`` at ``offsets`` ((topic, partition) -> next offset)."""
    by_topic: dict[str, dict[str, int]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, {})[str(partition)] = offset
    return PREFIX + b64json({"c": channel_id, "o": by_topic})


def decode(cursor: str, channel_id: str, field: str = "cursor") -> dict[tuple[str, int], int]:
    """The offsets of a cursor from ``channel_id``'s stream; InvalidField otherwise."""
    not_ours = InvalidField(field, "is not a cursor from StreamChannel")
    if len(cursor) > MAX_LENGTH:
        raise InvalidField(field, f"at most {MAX_LENGTH} characters, not {len(cursor)}")
    if not cursor.startswith(PREFIX):
        raise not_ours
    try:
        data = from_b64json(cursor.removeprefix(PREFIX))
    except ValueError:
        raise not_ours from None
    if not isinstance(data, dict) or not isinstance(data.get("o"), dict):
        raise not_ours
    if data.get("c") != channel_id:
        raise InvalidField(field, "is from another channel's stream")
    offsets = {}
    for topic, partitions in data["o"].items():
        if topic not in _TOPICS or not isinstance(partitions, dict):
            raise not_ours
        for partition, offset in partitions.items():
            numeric = partition.isascii() and partition.isdigit()
            if not numeric or type(offset) is not int or offset < 0:
                raise not_ours
            offsets[(topic, int(partition))] = offset
    return offsets
