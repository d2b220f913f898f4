"""An agent's reply while it is generated: the text of the action's ``"reply"`` string,
read out of the JSON as the model streams it, and the ReplyChunk events it becomes.

The action grammar writes required properties first, in schema order, so the reply
is the object's first member and its text can be shown long before the JSON closes.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from schemas.events import ChatMessage, InferenceTask, ReplyChunk
from schemas.ids import derived_id
from streams.domain.responder.actions import reply_id

_OPENING = re.compile(r'\s*\{\s*"reply"\s*:\s*"')
_HIGH_SURROGATE = (("d", "D"), tuple("89abAB"))  # \uD800 to \uDBFF


class ReplyText:
    """Feed the generated JSON piece by piece; get the reply's new text each time."""

    def __init__(self) -> None:
        self._json = ""
        self._read: int | None = None  # where the undecoded part of the reply begins
        self.done = False
        self.text = ""  # the reply so far, decoded

    def feed(self, piece: str) -> str:
        self._json += piece
        if self.done:
            return ""
        if self._read is None:
            opening = _OPENING.match(self._json)
            if opening is None:
                return ""  # not there yet, or a JSON whose first member is not the reply
            self._read = opening.end()
        body = self._json[self._read:]
        whole, self.done = _scan(body)
        body = body[:whole]
        if not body:
            return ""
        self._read += len(body)
        new = json.loads(f'"{body}"')
        self.text += new
        return new


def _scan(body: str) -> tuple[int, bool]:
    """How much of a JSON string body can be decoded now, and whether its closing quote
    ends that much. It stops before an escape cut short by the piece boundary, and
    before a surrogate pair's first half while the second is not there yet."""
    i = 0
    while i < len(body):
        char = body[i]
        if char == '"':
            return i, True
        if char != "\\":
            i += 1
            continue
        if body[i + 1:i + 2] != "u":
            size = 2
        elif (body[i + 2:i + 3] in _HIGH_SURROGATE[0]
              and body[i + 3:i + 4] in _HIGH_SURROGATE[1]):
            size = 12  # a high surrogate and its low half
        else:
            size = 6
        if i + size > len(body):
            break
        i += size
    return i, False


def chunk(task: InferenceTask, message: ChatMessage, agent_id: str, seq: int, offset: int,
          text: str) -> ReplyChunk:
    """The ReplyChunk record of ``text``, the reply's characters from ``offset`` on."""
    return {"event_id": derived_id(task["event_id"], "chunk", seq),
            "message_id": reply_id(task["event_id"]), "task_id": task["event_id"],
            "channel_id": task["channel_id"], "thread_id": message["thread_id"],
            "reply_to": message["event_id"], "agent_id": agent_id, "seq": seq,
            "offset": offset, "text": text, "created_at": datetime.now(timezone.utc)}
