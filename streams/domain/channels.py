"""What the workers remember about a channel, as plain functions over a JSON dict.

The relevance agent keeps one such dict per channel in a Faust table keyed by
channel id (co-partitioned with the chat topic; its changelog holds JSON): the last
messages (the responder's prompt history, reply-to lookups), when each agent last spoke
(cool-down), when an agent and another author last exchanged messages (the social
factor), and the channel's open incidents (``incidents``, kept by incident detection).

A message that selected agents stays in the history past its turn, pinned until its
tasks' deadline: the responder reads the message from here, and in a busy channel its
tasks may wait behind many newer messages.
"""

from __future__ import annotations

from schemas.codec import epoch_ms
from schemas.events import ChatMessage

EXCHANGES_KEPT = 256
PINNED_KEPT = 200  # bounds the table value (the changelog gets all of it on each write)


def empty() -> dict:
    return {"history": [], "spoke": {}, "exchanges": {}}


def entry(message: ChatMessage) -> dict:
    return {"id": message["event_id"], "author_id": message["author_id"],
            "author_kind": message["author_kind"], "text": message["text"],
            "reply_to": message["reply_to"], "thread_id": message["thread_id"],
            "metadata": message["metadata"],
            "created_ms": epoch_ms(message["created_at"])}


def author_of(state: dict, message_id: str | None) -> str | None:
    for item in reversed(state["history"]):
        if item["id"] == message_id:
            return item["author_id"]
    return None


def _pair(a: str, b: str) -> str:
    return "|".join(sorted((a, b)))


def last_exchange(state: dict, agent_id: str, author_id: str) -> int | None:
    return state["exchanges"].get(_pair(agent_id, author_id))


def remember(state: dict, message: ChatMessage, history_size: int, *, now_ms: int | None = None,
             pinned_until_ms: int | None = None) -> dict:
    """The state after ``message``; the input is left untouched (tables need a new value).

    The history keeps the last ``history_size`` messages, and older ones pinned until a
    time after ``now_ms`` (the message's own time if not given), the newest
    ``PINNED_KEPT`` of them. ``pinned_until_ms`` pins ``message``; a replay keeps the
    later pin.
    """
    item = entry(message)
    before: dict = next((h for h in state["history"] if h["id"] == item["id"]), {})
    pin = max(pinned_until_ms or 0, before.get("pinned_until_ms", 0))
    if pin:
        item["pinned_until_ms"] = pin
    history = [h for h in state["history"] if h["id"] != item["id"]] + [item]
    spoke = dict(state["spoke"])
    if item["author_kind"] == "AGENT":
        spoke[item["author_id"]] = max(spoke.get(item["author_id"], 0), item["created_ms"])
    exchanges = dict(state["exchanges"])
    partner = author_of(state, item["reply_to"])
    if partner and partner != item["author_id"]:
        pair = _pair(partner, item["author_id"])
        exchanges[pair] = max(exchanges.get(pair, 0), item["created_ms"])
        if len(exchanges) > EXCHANGES_KEPT:
            exchanges = dict(sorted(exchanges.items(), key=lambda kv: kv[1])[-EXCHANGES_KEPT:])
    now_ms = item["created_ms"] if now_ms is None else now_ms
    pinned = [h for h in history[:-history_size] if h.get("pinned_until_ms", 0) > now_ms]
    return {**state, "history": pinned[-PINNED_KEPT:] + history[-history_size:],
            "spoke": spoke, "exchanges": exchanges}
