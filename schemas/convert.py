"""Small conversions between decoded Avro records and the agora.v1 messages.

The proto enums mirror the Avro enums with a prefix (``ACTIVE`` is
``AGENT_STATE_ACTIVE`` of ``AgentState``; tests/unit/test_gateway_logic.py keeps them in
step), so one pair of functions maps every enum both ways.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from typing import TypeVar, cast

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.timestamp_pb2 import Timestamp

E = TypeVar("E", bound=int)  # a generated proto enum


def timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


@cache  # enum() and symbol() run for every enum field converted: derive each once
def _prefix(kind: EnumTypeWrapper) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind.DESCRIPTOR.name).upper() + "_"


def enum(kind: type[E], symbol: str) -> E:
    """The proto value of an Avro enum symbol, typed as ``kind`` (the generated stubs
    declare each enum a class whose metaclass is EnumTypeWrapper)."""
    wrapper = cast(EnumTypeWrapper, kind)
    return cast(E, wrapper.Value(_prefix(wrapper) + symbol))


def symbol(kind: EnumTypeWrapper, value: int) -> str | None:
    """The Avro symbol of a proto enum value; None for UNSPECIFIED and unknown numbers."""
    name = kind.Name(value) if value in kind.values() else None
    return None if name is None or value == 0 else name.removeprefix(_prefix(kind))
