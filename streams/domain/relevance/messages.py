"""Which chat messages the relevance engine accepts. Plain code without Faust, so that
the gateway refuses at the door exactly what the engine would dead-letter."""

from __future__ import annotations

from ops.core.errors import Invalid
from schemas.events import ChatMessage
from streams.domain.notices import reserved_keys

MAX_TEXT = 16_000  # characters: longer messages are dead-lettered, not truncated silently


class InvalidMessage(Invalid):
    """A well-formed ChatMessage that the flow cannot accept."""


def validate(message: ChatMessage) -> None:
    validate_text(message["text"])
    if reserved := reserved_keys(message):
        raise InvalidMessage(f"invalid ChatMessage: metadata {', '.join(reserved)} is reserved "
                             "for the platform's own notices")


def validate_text(text: str) -> None:
    if not text.strip():
        raise InvalidMessage("invalid ChatMessage: empty text")
    if len(text) > MAX_TEXT:
        raise InvalidMessage(f"invalid ChatMessage: text of {len(text)} characters "
                             f"exceeds {MAX_TEXT}")
