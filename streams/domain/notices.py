"""System messages: what tools and votes tell a channel.

They are ChatMessages by a SYSTEM author, each the root of its own thread. Relevance
answers none of them, except a vote call, which asks the agents it mentions for a
ballot (metadata ``kind=vote_call``).
"""

from __future__ import annotations

from datetime import datetime

from schemas.events import ChatMessage

MAX_TEXT = 4000  # a notice quotes tool output; the channel needs the gist, not all of it
# Metadata keys the platform reads on its own notices: refused from anyone else, so a
# person cannot make agents vote, or a message pass for a vote call.
RESERVED_METADATA = frozenset({"kind", "vote_id", "options", "outcome", "tool_request_id",
                               "tool", "status"})


def reserved_keys(message: ChatMessage) -> list[str]:
    """The reserved metadata keys a message carries without being a system notice."""
    if message.get("author_kind") == "SYSTEM":
        return []
    return sorted(RESERVED_METADATA & set(message.get("metadata") or {}))


def system_message(event_id: str, channel_id: str, author_id: str, text: str, now: datetime,
                   metadata: dict[str, str], mentions: list[str] | None = None) -> ChatMessage:
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT - 1] + "…"
    return {"event_id": event_id, "channel_id": channel_id, "thread_id": event_id,
            "reply_to": None, "author_id": author_id, "author_kind": "SYSTEM", "text": text,
            "mentions": list(mentions or []), "thread_depth": 0, "created_at": now,
            "task_id": None, "metadata": metadata, "sources": None}
