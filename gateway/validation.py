"""Checks of request fields at the gateway, before anything reaches Kafka.

Each function returns the value to use, or raises InvalidField naming the offending
field (the caller passes its path, ``mentions[2]``), which the gateway answers with
INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ops.core.errors import Invalid
from schemas.ids import IDENTIFIER
from streams.domain.notices import RESERVED_METADATA
from streams.domain.relevance import messages


class InvalidField(Invalid):
    """A request field that fails its check: ``field`` is its path, ``reason`` what is wrong."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_MENTIONS = 50
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 1024


def identifier(value: str, field: str) -> str:
    if not value:
        raise InvalidField(field, "is required")
    if not IDENTIFIER.fullmatch(value):
        raise InvalidField(field, f"{value[:140]!r} is not an id: 1 to 128 ASCII letters, "
                                  "digits, '.', '_', ':' or '-', starting with a letter or digit")
    return value


def channel_id(value: str, field: str = "channel_id") -> str:
    return identifier(value, field)


def agent_id(value: str, field: str = "agent_id") -> str:
    return identifier(value, field)


def text(value: str, field: str = "text") -> str:
    """Message text the relevance engine accepts: its own rule, so the gateway refuses
    exactly what it would dead-letter."""
    try:
        messages.validate_text(value)
    except messages.InvalidMessage as exc:
        raise InvalidField(field, str(exc)) from None
    return value


def idempotency_key(value: str, field: str = "idempotency_key") -> str:
    if not value:
        raise InvalidField(field, "is required: a key unique per operation, e.g. a UUID")
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise InvalidField(field, "must be 1 to 128 ASCII letters, digits, '.', '_', ':' "
                                  "or '-'")
    return value


def page_size(value: int, field: str = "page_size") -> int:
    """0 means the default; sizes above the maximum are served at the maximum."""
    if value < 0:
        raise InvalidField(field, f"must not be negative, not {value}")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def mentions(values: Iterable[str], field: str = "mentions") -> list[str]:
    """Agent ids, each once, in the order given."""
    values = list(values)
    if len(values) > MAX_MENTIONS:
        raise InvalidField(field, f"at most {MAX_MENTIONS} mentions, not {len(values)}")
    for i, value in enumerate(values):
        agent_id(value, f"{field}[{i}]")
    return list(dict.fromkeys(values))


def metadata(values: Mapping[str, str], field: str = "metadata") -> dict[str, str]:
    if len(values) > MAX_METADATA_ENTRIES:
        raise InvalidField(field, f"at most {MAX_METADATA_ENTRIES} entries, not {len(values)}")
    for key, value in values.items():
        if key in RESERVED_METADATA:
            raise InvalidField(f"{field}[{key}]", "is reserved for the platform's own notices")
        if not key or len(key) > MAX_METADATA_KEY:
            raise InvalidField(field, f"keys are 1 to {MAX_METADATA_KEY} characters, "
                                      f"not {key[:80]!r}")
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidField(f"{field}[{key}]", f"at most {MAX_METADATA_VALUE} characters, "
                                                  f"not {len(value)}")
    return dict(values)
