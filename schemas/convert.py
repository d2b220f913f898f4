"""Small conversions between decoded Avro records and the agora.v1 messages.

The proto enums mirror the Avro enums with a prefix (``ACTIVE`` is
``AGENT_STATE_ACTIVE`` of ``AgentState``; tests/unit/test_gateway_logic.py keeps them in
step), so one pair of functions maps every enum both ways.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


@cache  # enum() and symbol() run for every enum field converted: derive each once
def _prefix(kind: EnumTypeWrapper) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind.DESCRIPTOR.name).upper() + "_"


def enum(kind: EnumTypeWrapper, symbol: str) -> int:
    """The proto value of an Avro enum symbol."""
    return kind.Value(_prefix(kind) + symbol)


def symbol(kind: EnumTypeWrapper, value: int) -> str | None:
    """The Avro symbol of a proto enum value; None for UNSPECIFIED and unknown numbers."""
    name = kind.Name(value) if value in kind.values() else None
    return None if name is None or value == 0 else name.removeprefix(_prefix(kind))
