"""Avro codec for Agora events, framed with Avro single-object encoding.

Wire format (Avro spec, "Single-object encoding")::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical
    Form, 8 bytes little-endian | Avro binary body

The fingerprint names the writer schema, so a payload is self-describing
without a registry: :func:`decode` finds the writer schema among the current
and released versions of every event and resolves the body to the *current*
schema of that event (Avro schema resolution), which is how an old payload is
read after a backward-compatible change.

Usage::

    data = encode("ChatMessage", {...})
    name, record = decode(data, expected="ChatMessage")

Timestamps (``timestamp-millis``) are encoded from timezone-aware
``datetime`` objects or from ints (milliseconds since the epoch) and decode to
aware UTC ``datetime`` objects. Fields with a default (nullables, arrays,
maps) may be left out of the record given to :func:`encode`.

Schemas live beside this module: ``avro/<Name>.avsc`` is the current schema
of an event, ``released/<Name>/v<N>.avsc`` the frozen copies of released
versions. Every error raised for a bad payload or record is a
:class:`CodecError` whose message is meant to be read by an operator, for
example as the reason of a dead letter. An unknown event name is a
programming error and raises a plain ``ValueError``.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import fastavro
from fastavro.schema import fingerprint as _schema_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from ops.core.errors import Invalid

R = TypeVar("R")  # an event's record type (schemas.events)

__all__ = [
    "EVENT_NAMES",
    "SCHEMA_ROOT",
    "CodecError",
    "InvalidRecord",
    "MalformedPayload",
    "SchemaSet",
    "SchemaVersion",
    "UnknownSchema",
    "WrongEventType",
    "decode",
    "decode_as",
    "encode",
    "epoch_ms",
    "from_epoch_ms",
    "fingerprint",
    "known_fingerprints",
    "released_versions",
    "schema",
]

SCHEMA_ROOT = Path(__file__).parent
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def epoch_ms(moment: dt.datetime) -> int:
    """Milliseconds since the epoch, exactly as a ``timestamp-millis`` field stores them
    (integer arithmetic: ``timestamp() * 1000`` rounds wrong for some instants)."""
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def safe_text(text: str) -> str:
    """Text an Avro string can hold: lone surrogates (undecodable bytes) become U+FFFD."""
    if text.isascii():  # the common case, checked without encoding
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def from_epoch_ms(ms: int) -> dt.datetime:
    """The aware UTC datetime of ``epoch_ms`` (exact, unlike ``fromtimestamp(ms / 1000)``)."""
    return _EPOCH + dt.timedelta(milliseconds=ms)
NAMESPACE = "agora.events"

# Single-object encoding. A second framing (for example Confluent's magic byte
# + registry id) would be another pair of _frame/_unframe functions keyed by
# its own schema id; the schema lookup below does not depend on the framing.
MARKER = b"\xc3\x01"
FINGERPRINT_SIZE = 8
HEADER_SIZE = len(MARKER) + FINGERPRINT_SIZE
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class CodecError(Invalid):
    """Base class of every error this codec raises for bad data."""


class MalformedPayload(CodecError):
    """The bytes are not a well-formed Agora event."""


class UnknownSchema(CodecError):
    """The payload names a writer schema this process does not know."""

    def __init__(self, fingerprint: bytes):
        self.fingerprint = fingerprint
        super().__init__(
            f"unknown schema fingerprint {fingerprint.hex()}: the payload was "
            "written with a schema that is neither the current nor a released "
            "version of any Agora event (a producer newer than this consumer, "
            "or a schema changed without being released)"
        )


class WrongEventType(CodecError):
    """The payload is a valid event, but not the kind the caller expects."""

    def __init__(self, expected: str, actual: str):
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"expected a {expected} event but the payload is a {actual} "
            "(wrong topic or a producer bug)"
        )


class InvalidRecord(CodecError):
    """A record does not match its event schema (raised by :func:`encode`)."""

    def __init__(self, event: str, field: str | None, problem: str):
        self.event = event
        self.field = field
        where = f"field '{field}'" if field else "record"
        super().__init__(f"invalid {event} record: {where} {problem}")


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one event schema."""

    name: str
    version: int | None  # None for the current schema, N for released/vN
    raw: dict  # the JSON of the .avsc file, untouched
    parsed: Any  # fastavro's parsed form, used for reading and writing
    fingerprint: bytes  # CRC-64-AVRO of the Parsing Canonical Form, little-endian

    @property
    def label(self) -> str:
        return "current" if self.version is None else f"v{self.version}"


def _load(name: str, version: int | None, path: Path) -> SchemaVersion:
    raw = json.loads(path.read_text(encoding="utf-8"))
    if raw.get("name") != name:
        raise ValueError(f"{path}: record name {raw.get('name')!r} does not match the file name")
    # A fresh named-types dict per file: each .avsc defines its enums and
    # nested records inline, so files never depend on each other.
    parsed = fastavro.parse_schema(raw, named_schemas={})
    fp = bytes.fromhex(_schema_fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return SchemaVersion(name, version, raw, parsed, fp)


class SchemaSet:
    """The current and released schemas found under one directory.

    The module-level functions use the set shipped with the package; tests
    build their own to exercise schema evolution.
    """

    def __init__(self, root: Path = SCHEMA_ROOT):
        self.root = Path(root)
        self._current: dict[str, SchemaVersion] = {}
        self._released: dict[str, dict[int, SchemaVersion]] = {}
        for path in sorted((self.root / "avro").glob("*.avsc")):
            self._current[path.stem] = _load(path.stem, None, path)
        for path in sorted((self.root / "released").glob("*/v*.avsc")):
            name, version = path.parent.name, int(path.stem[1:])
            self._released.setdefault(name, {})[version] = _load(name, version, path)
        self.names: tuple[str, ...] = tuple(sorted(self._current))
        orphans = set(self._released) - set(self._current)
        if orphans:
            raise ValueError(f"released schemas without a current schema: {', '.join(sorted(orphans))}")

        # Released versions first so that the current schema wins when a
        # release and the current schema share a canonical form (a change in
        # docs or defaults only): both describe the same bytes.
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for sv in [v for vs in self._released.values() for v in vs.values()] + list(
            self._current.values()
        ):
            other = self._by_fingerprint.get(sv.fingerprint)
            if other is not None and other.name != sv.name:
                raise ValueError(
                    f"schemas {other.name} and {sv.name} have the same fingerprint "
                    f"{sv.fingerprint.hex()}; rename a field to tell them apart"
                )
            self._by_fingerprint[sv.fingerprint] = sv

    def current(self, name: str) -> SchemaVersion:
        """The current schema of event ``name``."""
        try:
            return self._current[name]
        except KeyError:
            raise ValueError(f"unknown event {name!r}; known events: {', '.join(self.names)}") from None

    def released(self, name: str) -> dict[int, SchemaVersion]:
        """Released versions of event ``name``, by version number."""
        self.current(name)
        return dict(self._released.get(name, {}))

    def version(self, name: str, version: int | None = None) -> SchemaVersion:
        """The current schema (``version=None``) or a released one."""
        if version is None:
            return self.current(name)
        try:
            return self.released(name)[version]
        except KeyError:
            raise ValueError(f"{name} has no released version v{version}") from None

    def known_fingerprints(self) -> dict[bytes, tuple[str, int | None]]:
        """Every fingerprint :meth:`decode` accepts -> (event name, version or None for current).

        A release with the same canonical form as the current schema is listed as current.
        """
        return {fp: (sv.name, sv.version) for fp, sv in self._by_fingerprint.items()}

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Validate ``record`` against the current schema of ``name`` and encode it."""
        sv = self.current(name)
        _check_record(sv, record)
        body = io.BytesIO()
        try:
            fastavro.schemaless_writer(body, sv.parsed, record)
        except Exception as exc:  # validation passed, so this is a value fastavro cannot write
            raise InvalidRecord(name, None, f"could not be encoded: {type(exc).__name__}: {exc}") from exc
        return _frame(sv.fingerprint, body.getvalue())

    def decode(self, data: bytes | None, expected: str | None = None) -> tuple[str, Any]:
        """Decode a framed payload into ``(event name, record)`` in the current schema."""
        if expected is not None:
            self.current(expected)
        fp, body = _unframe(data)
        writer = self._by_fingerprint.get(fp)
        if writer is None:
            raise UnknownSchema(fp)
        # Checked before the body is read: a payload on the wrong topic is
        # rejected for that, whatever its body holds.
        if expected is not None and writer.name != expected:
            raise WrongEventType(expected, writer.name)
        reader = self._current[writer.name]
        stream = io.BytesIO(body)
        try:
            record: Any = fastavro.schemaless_reader(
                stream,
                writer.parsed,
                None if writer is reader else reader.parsed,
            )
        except Exception as exc:  # any failure on arbitrary bytes means the body is corrupt
            raise MalformedPayload(
                f"{writer.name} body ({len(body)} bytes, writer schema {writer.label}, "
                f"fingerprint {fp.hex()}) does not decode: {type(exc).__name__}: {exc}"
            ) from exc
        if stream.tell() != len(body):
            raise MalformedPayload(
                f"{writer.name} payload has {len(body) - stream.tell()} trailing bytes "
                f"after a {stream.tell()}-byte body (corrupt or concatenated payload)"
            )
        if not _is_uuid(record.get("event_id")):
            raise MalformedPayload(
                f"{writer.name} event_id {str(record.get('event_id'))[:80]!r} is not a UUID "
                "(ids name files, rows and derived events, so only UUIDs are accepted)")
        return writer.name, record


def _is_uuid(value: object) -> bool:
    """The canonical lowercase form, as ``str(uuid.UUID(...))`` writes it."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def _frame(fp: bytes, body: bytes) -> bytes:
    return MARKER + fp + body


def _unframe(data: bytes | None) -> tuple[bytes, bytes]:
    if data is None:
        raise MalformedPayload("no payload (null value or tombstone) where an event was expected")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise MalformedPayload(
            f"payload is {len(data)} bytes; an Agora event needs at least {HEADER_SIZE} "
            "(marker C3 01 and an 8-byte schema fingerprint)"
        )
    if data[:2] != MARKER:
        raise MalformedPayload(
            f"payload starts with {data[:2].hex(' ')}, not the Avro single-object marker "
            "c3 01: not an Agora event (JSON, Confluent framing or raw Avro?)"
        )
    return data[2:HEADER_SIZE], data[HEADER_SIZE:]


def _check_record(sv: SchemaVersion, record: Any) -> None:
    """Raise InvalidRecord naming the first field of ``record`` that does not fit."""
    name = sv.name
    if not isinstance(record, Mapping):
        raise InvalidRecord(name, None, f"must be a mapping, got {type(record).__name__}")
    fields = {f["name"]: f for f in sv.parsed["fields"]}
    # fastavro silently drops unknown keys; a misspelt field would be lost.
    for key in record:
        if key not in fields:
            raise InvalidRecord(name, str(key), "is not in the schema (misspelt?)")
    for fname, field in fields.items():
        if fname not in record and "default" not in field:
            raise InvalidRecord(name, fname, f"is missing (expected {_describe(field['type'])})")
        # fastavro reads a naive datetime as machine-local time; refuse to guess.
        value = record.get(fname)
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            raise InvalidRecord(name, fname, "is a naive datetime; use a timezone-aware datetime (UTC)")
    try:
        validate(record, sv.parsed, raise_errors=True)
    except ValidationError as exc:
        first = exc.errors[0]
        # Union errors come one per branch, all naming the same field.
        expected = " or ".join(
            dict.fromkeys(_describe(e.schema) for e in exc.errors if e.field == first.field)
        )
        got = f"{type(first.datum).__name__} {first.datum!r}"
        if len(got) > 80:
            got = got[:77] + "..."
        raise InvalidRecord(
            name, first.field.removeprefix(NAMESPACE + ".").removeprefix(name + "."),
            f"is {got}, expected {expected}",
        ) from None


def _describe(schema: Any) -> str:
    """Short human description of a (parsed) Avro type for error messages."""
    if isinstance(schema, list):
        return " or ".join(_describe(s) for s in schema)
    if isinstance(schema, str):
        return schema.removeprefix(NAMESPACE + ".")
    logical = schema.get("logicalType")
    if logical == "timestamp-millis":
        return "timestamp-millis (aware datetime or int epoch millis)"
    kind = schema["type"]
    if kind == "enum":
        return "one of " + ", ".join(schema["symbols"])
    if kind == "array":
        return f"array of {_describe(schema['items'])}"
    if kind == "map":
        return f"map of string to {_describe(schema['values'])}"
    if kind in ("record", "fixed"):
        return f"{kind} {schema['name'].removeprefix(NAMESPACE + '.')}"
    return _describe(kind)


_DEFAULT = SchemaSet()

#: Names of all events, for example ``"ChatMessage"``.
EVENT_NAMES: tuple[str, ...] = _DEFAULT.names


def schema(name: str, version: int | None = None) -> dict:
    """JSON of the current schema of ``name`` (or of released ``version``), a copy."""
    return copy.deepcopy(_DEFAULT.version(name, version).raw)


def released_versions(name: str) -> tuple[int, ...]:
    """Version numbers of the released copies of ``name``, oldest first."""
    return tuple(sorted(_DEFAULT.released(name)))


def fingerprint(name: str, version: int | None = None) -> bytes:
    """8-byte CRC-64-AVRO fingerprint (little-endian) of the current or a released schema."""
    return _DEFAULT.version(name, version).fingerprint


def known_fingerprints() -> dict[bytes, tuple[str, int | None]]:
    """Every fingerprint :func:`decode` accepts -> (event name, version or None for current)."""
    return _DEFAULT.known_fingerprints()


def encode(name: str, record: Mapping[str, Any]) -> bytes:
    """Encode ``record`` as event ``name``; raises InvalidRecord naming the bad field."""
    return _DEFAULT.encode(name, record)


def decode(data: bytes | None, expected: str | None = None) -> tuple[str, Any]:
    """Decode a payload into ``(event name, record)`` in the event's current schema (the
    record is a dict; callers type it as its event, ``schemas.events``).

    Raises MalformedPayload, UnknownSchema, or WrongEventType when ``expected``
    is given and the payload is another event.
    """
    return _DEFAULT.decode(data, expected)


def decode_as(data: bytes | None, event: type[R]) -> R:
    """A payload of ``event`` (a record type of ``schemas.events``, whose name is the
    event's) decoded as that type; raises as :func:`decode` with ``expected``."""
    return decode(data, expected=event.__name__)[1]


def records_of(event: type[R]) -> Callable[[bytes], R]:
    """A decoder of ``event`` payloads to their records (for a ``GlobalTable``)."""
    return lambda data: decode_as(data, event)
