"""Event values made storable: the conversions both row mappers share."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ops.core.errors import Invalid
from schemas.codec import safe_text

Text = Callable[[str], str]  # what a store's text columns can hold


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(bytes(data)).decode("ascii")


def jsonable(value: Any, text: Text = safe_text) -> Any:
    """``value`` as strict JSON can carry it: text made storable, non-finite floats
    (Python's json reads NaN) null, bytes in base64, times in ISO 8601."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {text(str(k)): jsonable(v, text) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, text) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b64(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value), text)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def json_text(value: Any, text: Text = safe_text) -> str:
    return json.dumps(jsonable(value, text), ensure_ascii=False, allow_nan=False)


def arguments(arguments_json: str, text: Text = safe_text) -> tuple[str, bool]:
    """A ToolRequest's arguments as JSON text, and whether they were JSON: parsed and
    written again, or else the raw text as a JSON string."""
    try:
        return json_text(json.loads(arguments_json), text), True
    except (ValueError, TypeError, RecursionError):
        return json_text(arguments_json, text), False


def rows_of(handlers: Mapping[str, Callable[[dict], list]], store: str, name: str,
            record: dict) -> list:
    """What ``handlers`` make of one decoded event for ``store``; Invalid for an event
    the store does not keep."""
    try:
        handler = handlers[name]
    except KeyError:
        raise Invalid(f"no {store} rows for event {name!r}; known events: "
                      f"{', '.join(sorted(handlers))}") from None
    return handler(record)
