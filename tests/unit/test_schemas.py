"""Event contracts: schema conventions, the single-object codec, compatibility."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import re
from pathlib import Path

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.codec import (
    EVENT_NAMES,
    CodecError,
    InvalidRecord,
    MalformedPayload,
    SchemaSet,
    UnknownSchema,
    WrongEventType,
    decode,
    encode,
)

ROOT = Path(codec.__file__).parent
EXPECTED_EVENTS = {
    "ChatMessage", "AgentProfile", "RelevanceDecision", "InferenceTask", "ToolRequest",
    "ToolResult", "VoteProposal", "Ballot", "VoteResult", "BallotRejected", "DeadLetter",
    "AgentStatus", "VoteDeadline", "ReplyChunk", "KnowledgeDocument", "IncidentDetected",
    "IncidentChanged", "AgentFeedback",
}
# Released schemas are frozen: a changed fingerprint here means a released
# file was edited, which would orphan every payload written with it.
RELEASED_FINGERPRINTS = {
    ("AgentFeedback", 1): "edcc4f5798b9dcf3",
    ("AgentProfile", 1): "0ba1a89fa3d89185",
    ("AgentStatus", 1): "8a4b9b0125047a4f",
    ("Ballot", 1): "0becc091f267ae77",
    ("BallotRejected", 1): "f91cab8bcc3c6756",
    ("ChatMessage", 1): "2f43b1c6b516ba99",
    ("ChatMessage", 2): "a1f61c0941374502",
    ("DeadLetter", 1): "1035c625cc402137",
    ("IncidentChanged", 1): "c4a0dcd0fbd8b2fb",
    ("IncidentDetected", 1): "c84bc6372b348150",
    ("InferenceTask", 1): "b1e2562c7d60af93",
    ("KnowledgeDocument", 1): "8f902a427f140a7d",
    ("RelevanceDecision", 1): "351a9068d7b734d8",
    ("ReplyChunk", 1): "fbe07f205483293f",
    ("ToolRequest", 1): "88b3620e1612c7f3",
    ("ToolResult", 1): "7fbdbbbf8960b31b",
    ("VoteDeadline", 1): "6c76086001304aa6",
    ("VoteProposal", 1): "4d230d1ab88d6d7f",
    ("VoteResult", 1): "c5ce34cdea23ade0",
    ("VoteResult", 2): "7e240a50e751bab3",
}
UTC = dt.timezone.utc
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def released_versions():
    return [(n, v) for n in EVENT_NAMES for v in codec.released_versions(n)]


def check_backward(reader, writer) -> list[str]:
    """What the Avro project's checker finds when ``reader`` (the new schema) reads data
    written with ``writer`` (the released one), as readable lines; empty: compatible."""
    reader, writer = (avro.schema.parse(s if isinstance(s, str) else json.dumps(s))
                      for s in (reader, writer))
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return [f"{kind.value} at {', '.join(sorted(result.locations))}: "
            f"{'; '.join(sorted(map(str, result.messages)))}"
            for kind in result.incompatibilities]


# --- a hypothesis strategy builder for Avro schemas -------------------------

PRIMITIVES = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=False, width=32),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=40),
    "string": st.text(max_size=40),
}
# Millisecond precision, aware UTC: what timestamp-millis decodes to.
TIMESTAMPS = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))


def avro_strategy(node, names=None, ns="", top=True):
    """Valid values for an Avro schema. At the top level, fields with a default may be left out."""
    names = {} if names is None else names
    if isinstance(node, list):
        return st.one_of(*[avro_strategy(b, names, ns, False) for b in node])
    if isinstance(node, str):
        if node in PRIMITIVES:
            return PRIMITIVES[node]
        full = node if "." in node else f"{ns}.{node}"
        return st.deferred(lambda: names[full])
    if node.get("logicalType") == "timestamp-millis":
        return TIMESTAMPS
    kind = node["type"]
    if kind == "array":
        return st.lists(avro_strategy(node["items"], names, ns, False), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), avro_strategy(node["values"], names, ns, False), max_size=4)
    if kind not in ("record", "enum", "fixed"):
        return avro_strategy(kind, names, ns, False)
    full = node["name"] if "." in node["name"] else f"{node.get('namespace', ns)}.{node['name']}"
    if kind == "enum":
        names[full] = st.sampled_from(node["symbols"])
    elif kind == "fixed":
        names[full] = st.binary(min_size=node["size"], max_size=node["size"])
    else:
        child_ns = full.rpartition(".")[0]
        fields = {f["name"]: (f, avro_strategy(f["type"], names, child_ns, False)) for f in node["fields"]}
        if "event_id" in fields:  # decode accepts UUIDs only
            fields["event_id"] = (fields["event_id"][0], st.uuids().map(str))
        names[full] = st.fixed_dictionaries(
            {n: s for n, (f, s) in fields.items() if not (top and "default" in f)},
            optional={n: s for n, (f, s) in fields.items() if top and "default" in f},
        )
    return names[full]


EVENT_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def with_defaults(raw, record):
    """What a reader returns for ``record``: left-out fields take their defaults."""
    return {f["name"]: record.get(f["name"], f.get("default")) for f in raw["fields"]}


def record_for(name, version=None):
    return avro_strategy(codec.schema(name, version))


def events():
    return st.sampled_from(EVENT_NAMES).flatmap(lambda n: st.tuples(st.just(n), record_for(n)))


# --- schema files ----------------------------------------------------------

def walk_named(node):
    """Every record and enum definition inside a schema."""
    if isinstance(node, list):
        for b in node:
            yield from walk_named(b)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum"):
            yield node
            for f in node.get("fields", ()):
                yield from walk_named(f["type"])
        for key in ("items", "values"):
            if key in node:
                yield from walk_named(node[key])
        if isinstance(node.get("type"), (dict, list)):
            yield from walk_named(node["type"])


def is_timestamp(t):
    return isinstance(t, dict) and t.get("logicalType") == "timestamp-millis"


def test_event_names():
    assert set(EVENT_NAMES) == EXPECTED_EVENTS


@pytest.mark.parametrize("name", sorted(EXPECTED_EVENTS))
def test_schema_conventions(name):
    raw = json.loads((ROOT / "avro" / f"{name}.avsc").read_text())
    fastavro.parse_schema(raw, named_schemas={})  # standalone: needs no other file
    assert raw["name"] == name and raw["namespace"] == "agora.events"
    fields = raw["fields"]
    assert fields[0] == {**fields[0], "name": "event_id", "type": "string"}
    assert any(is_timestamp(f["type"]) or (isinstance(f["type"], list) and any(map(is_timestamp, f["type"])))
               for f in fields)
    for node in walk_named(raw):
        assert node.get("doc", "").strip(), f"{node['name']} has no doc"
        if node["type"] == "enum":
            assert node.get("default") in node["symbols"], f"enum {node['name']} needs a default symbol"
        for f in node.get("fields", ()):
            assert f.get("doc", "").strip(), f"{node['name']}.{f['name']} has no doc"
            assert SNAKE.match(f["name"]), f["name"]
            t = f["type"]
            if isinstance(t, list):
                assert t[0] == "null" and f.get("default", "missing") is None, f["name"]
            elif isinstance(t, dict) and t["type"] in ("array", "map"):
                assert "default" in f, f"{f['name']} needs a default"


def test_shared_named_types_are_identical():
    # Enums such as VoteType are defined inline in each file that uses them;
    # they must stay identical so that consumers can treat them as one type.
    seen = {}
    for name in EVENT_NAMES:
        for node in walk_named(codec.schema(name)):
            if node["type"] == "enum":
                assert seen.setdefault(node["name"], node) == node, node["name"]


def test_every_event_is_released_and_releases_are_events():
    released = {p.parent.name for p in (ROOT / "released").glob("*/v*.avsc")}
    assert released == set(EVENT_NAMES)


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as written in the Avro specification."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprints_stable_and_distinct():
    for (name, version), hexfp in RELEASED_FINGERPRINTS.items():
        assert codec.fingerprint(name, version).hex() == hexfp, f"released {name} v{version} was edited"
    current = [codec.fingerprint(n) for n in EVENT_NAMES]
    assert len(set(current)) == len(current)
    for name in EVENT_NAMES:
        pcf = to_parsing_canonical_form(fastavro.parse_schema(codec.schema(name), named_schemas={}))
        assert codec.fingerprint(name) == crc64_avro(pcf.encode()).to_bytes(8, "little")
        assert codec.known_fingerprints()[codec.fingerprint(name)] == (name, None)
    assert set(RELEASED_FINGERPRINTS) == set(released_versions())


# --- round trip ------------------------------------------------------------

@FAST
@given(events())
def test_round_trip(event):
    name, record = event
    data = encode(name, record)
    assert data[:2] == b"\xc3\x01" and data[2:10] == codec.fingerprint(name)
    assert decode(data) == (name, with_defaults(codec.schema(name), record))
    assert decode(bytearray(data), expected=name)[0] == name


def test_timestamps_accept_epoch_millis_and_decode_to_utc():
    record = {"event_id": EVENT_ID, "vote_id": "v", "channel_id": "c", "voter_id": "u",
              "choice": "yes", "rationale": "", "cast_at": 1_700_000_000_123}
    _, out = decode(encode("Ballot", record))
    assert out["cast_at"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)


# --- malformed payloads ----------------------------------------------------

def sample(name):
    """A fixed valid payload, built from the schema's own defaults."""
    raw = codec.schema(name)
    values = {"string": "x", "int": 1, "long": 2, "double": 0.5, "boolean": True, "bytes": b"b"}
    record = {}
    for f in raw["fields"]:
        t = f["type"]
        if "default" in f:
            continue
        if is_timestamp(t):
            record[f["name"]] = dt.datetime(2026, 1, 1, tzinfo=UTC)
        elif isinstance(t, dict) and t["type"] == "enum":
            record[f["name"]] = t["symbols"][0]
        else:
            record[f["name"]] = values[t]
    return encode(name, record)


def decode_error(data, expected=None):
    """The CodecError subclass decode raises; any other exception fails the test."""
    try:
        decode(data, expected)
    except CodecError as exc:
        assert str(exc)
        return type(exc)
    return None


@pytest.mark.parametrize("data", [b"", b"\xc3", b"\xc3\x01", b"\xc3\x01" + b"\x00" * 7])
def test_too_short(data):
    assert decode_error(data) is MalformedPayload


def test_wrong_marker_and_tombstone():
    data = sample("ChatMessage")
    assert decode_error(b"\x00" + data[1:]) is MalformedPayload  # Confluent framing starts with 0
    assert decode_error(b'{"event_id": "x"}') is MalformedPayload
    assert decode_error(None) is MalformedPayload


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_every_truncation_is_malformed(name):
    data = sample(name)
    for cut in range(len(data)):
        assert decode_error(data[:cut]) is MalformedPayload, cut


def test_trailing_bytes():
    with pytest.raises(MalformedPayload, match="1 trailing bytes"):
        decode(sample("ChatMessage") + b"\x00")


def test_unknown_fingerprint():
    data = sample("Ballot")
    forged = data[:2] + b"\x01\x02\x03\x04\x05\x06\x07\x08" + data[10:]
    with pytest.raises(UnknownSchema, match="0102030405060708") as info:
        decode(forged)
    assert info.value.fingerprint == bytes(range(1, 9))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes(data):
    assert decode_error(data) in (MalformedPayload, UnknownSchema)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(codec.known_fingerprints())), st.binary(max_size=80))
def test_random_body_behind_a_real_header(fp, body):
    # Garbage may happen to decode; otherwise it must be a MalformedPayload.
    assert decode_error(b"\xc3\x01" + fp + body) in (None, MalformedPayload)


# --- wrong type and invalid records ----------------------------------------

def test_wrong_event_type():
    with pytest.raises(WrongEventType, match="expected a Ballot event but the payload is a ChatMessage"):
        decode(sample("ChatMessage"), expected="Ballot")
    with pytest.raises(ValueError, match="unknown event"):
        decode(sample("ChatMessage"), expected="Nope")


def valid_ballot():
    return {"event_id": EVENT_ID, "vote_id": "v", "channel_id": "c", "voter_id": "u",
            "choice": "yes", "rationale": "", "cast_at": dt.datetime(2026, 1, 1, tzinfo=UTC)}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"choice": None}, "choice"),
        ({"choice": 3}, "choice"),
        ({"cast_at": "yesterday"}, "cast_at"),
        ({"cast_at": dt.datetime(2026, 1, 1)}, "cast_at"),  # naive
        ({"choise": "yes"}, "choise"),  # misspelt
    ],
)
def test_invalid_record_names_the_field(change, field):
    with pytest.raises(InvalidRecord, match=f"field '{field}'") as info:
        encode("Ballot", {**valid_ballot(), **change})
    assert info.value.field == field and info.value.event == "Ballot"


def test_invalid_record_missing_nested_and_enum():
    record = valid_ballot()
    del record["voter_id"]
    with pytest.raises(InvalidRecord, match="field 'voter_id' is missing"):
        encode("Ballot", record)
    with pytest.raises(InvalidRecord, match="field 'state' .* one of ACTIVE"):
        encode("AgentProfile", {"event_id": "e", "agent_id": "a", "name": "n", "template": "t",
                                "persona": "p", "system_prompt": "s", "expertise": "x",
                                "state": "SLEEPING", "performance_score": 0.5,
                                "created_at": 0, "updated_at": 0})
    score = {"agent_id": "a", "score": 1.0, "expertise": 1.0, "workload": 1.0, "social": 1.0,
             "timing": 1.0, "quality": "high", "selected": True, "reason": ""}
    with pytest.raises(InvalidRecord, match="field 'AgentScore.quality'"):
        encode("RelevanceDecision", {"event_id": "e", "message_id": "m", "channel_id": "c",
                                     "thread_id": "t", "thread_depth": 0, "decided_at": 0,
                                     "scores": [score], "config_version": "1"})
    with pytest.raises(InvalidRecord, match="must be a mapping"):
        encode("Ballot", ["not", "a", "dict"])


# --- compatibility with released schemas ------------------------------------

@pytest.mark.parametrize("name, version", released_versions())
def test_current_is_backward_compatible_with_release(name, version):
    assert check_backward(codec.schema(name), codec.schema(name, version)) == []


@FAST
@given(st.sampled_from(released_versions()).flatmap(
    lambda nv: st.tuples(st.just(nv), avro_strategy(codec.schema(*nv), top=False))))
def test_released_payload_decodes_into_current(case):
    (name, version), record = case
    writer = fastavro.parse_schema(codec.schema(name, version), named_schemas={})
    body = io.BytesIO()
    fastavro.schemaless_writer(body, writer, record)
    got_name, got = decode(b"\xc3\x01" + codec.fingerprint(name, version) + body.getvalue(), expected=name)
    assert got_name == name
    assert {k: v for k, v in got.items() if k in record} == {k: v for k, v in record.items() if k in got}
    encode(name, got)  # what a consumer reads is valid for the current schema


def evolved_chat_message():
    raw = copy.deepcopy(codec.schema("ChatMessage"))
    fields = {f["name"]: f for f in raw["fields"]}
    kind = fields["author_kind"]["type"]
    kind["symbols"] = ["HUMAN", "SYSTEM", "BOT"]  # AGENT dropped: read as the default, SYSTEM
    fields["thread_depth"]["type"] = "long"  # int -> long promotion
    raw["fields"].append({"name": "edited_at", "doc": "d", "default": None,
                          "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]})
    return raw


def make_set(root: Path, current: dict, released: dict | None = None) -> SchemaSet:
    (root / "avro").mkdir(parents=True)
    (root / "avro" / "ChatMessage.avsc").write_text(json.dumps(current))
    if released is not None:
        (root / "released" / "ChatMessage").mkdir(parents=True)
        (root / "released" / "ChatMessage" / "v1.avsc").write_text(json.dumps(released))
    return SchemaSet(root)


def test_schema_evolution_through_released_copy(tmp_path):
    v1 = codec.schema("ChatMessage", 1)
    old = make_set(tmp_path / "old", v1)
    new = make_set(tmp_path / "new", evolved_chat_message(), released=v1)
    assert check_backward(evolved_chat_message(), v1) == []
    record = {"event_id": EVENT_ID, "channel_id": "c", "thread_id": "m", "author_id": "a",
              "author_kind": "AGENT", "text": "héllo", "thread_depth": 3, "created_at": 0}
    data = old.encode("ChatMessage", record)
    name, got = new.decode(data, expected="ChatMessage")
    assert name == "ChatMessage"
    assert got["edited_at"] is None and got["author_kind"] == "SYSTEM" and got["thread_depth"] == 3
    # Without the released copy the old payload cannot be read: releases are kept forever.
    without = make_set(tmp_path / "bare", evolved_chat_message())
    with pytest.raises(UnknownSchema):
        without.decode(data)


# --- what the compatibility check catches ----------------------------------

BASE = {
    "type": "record", "name": "E", "namespace": "t",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "n", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def changed(**types):
    schema = copy.deepcopy(BASE)
    for f in schema["fields"]:
        if f["name"] in types:
            f["type"] = types[f["name"]]
    return schema


def add_field(schema, field):
    schema = copy.deepcopy(schema)
    schema["fields"].append(field)
    return schema


@pytest.mark.parametrize(
    "reader, writer, needle",
    [
        (add_field(BASE, {"name": "x", "type": "string"}), BASE,
         "reader_field_missing_default_value at /fields/6: x"),
        (changed(kind={"type": "enum", "name": "K", "symbols": ["A"]}), BASE,
         "missing_enum_symbols at /, /fields/3/type/symbols: {'B'}"),
        (changed(n="string"), BASE, "writer type: int"),
        (changed(big="int"), BASE, "reader type: int not compatible with writer type: long"),
        (changed(tags={"type": "array", "items": "int"}), BASE, "/fields/4/type/items"),
        (changed(kind={"type": "enum", "name": "Other", "symbols": ["A", "B"]}), BASE,
         "name_mismatch"),
        (changed(id="string"), changed(id=["null", "string"]), "writer type: null"),
        (changed(n=["null", "string"]), BASE, "reader union lacking writer type int"),
        (changed(at={"type": "int", "logicalType": "date"}), BASE, "writer type: long"),
        ({"type": "fixed", "name": "F", "size": 8}, {"type": "fixed", "name": "F", "size": 4},
         "fixed_size_mismatch"),
        # Stricter than the specification, which lets a reader's alias match a renamed
        # type: the Avro library's checker ignores aliases, so renames are refused.
        (changed(kind={"type": "enum", "name": "K2", "aliases": ["K"], "symbols": ["A", "B"]}),
         BASE, "name_mismatch"),
    ],
)
def test_check_catches_incompatibilities(reader, writer, needle):
    problems = check_backward(reader, writer)
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize(
    "reader, writer",
    [
        (BASE, BASE),
        (add_field(BASE, {"name": "x", "type": ["null", "string"], "default": None}), BASE),
        (add_field(BASE, {"name": "m", "type": {"type": "map", "values": "long"}, "default": {}}), BASE),
        (changed(n="long"), BASE),
        (changed(n="double", big="float"), BASE),
        (changed(id="bytes"), BASE),
        (changed(kind={"type": "enum", "name": "K", "symbols": ["A", "B", "C"]}), BASE),
        (changed(kind={"type": "enum", "name": "K", "symbols": ["A"], "default": "A"}), BASE),
        (changed(id=["null", "string"]), BASE),
        (changed(n=["null", "long"]), changed(n=["null", "int"])),
        (changed(tags={"type": "array", "items": ["null", "string"]}), BASE),
        ({**BASE, "fields": BASE["fields"][:2]}, BASE),  # writer-only fields are skipped
        (json.dumps(BASE), json.dumps(BASE)),
    ],
)
def test_check_accepts_compatible_changes(reader, writer):
    assert check_backward(reader, writer) == []


def test_check_handles_named_references_and_recursion():
    node = {"type": "record", "name": "Node", "namespace": "t", "fields": [
        {"name": "value", "type": "int"},
        {"name": "next", "type": ["null", "Node"], "default": None},
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}},
        {"name": "other_kind", "type": "t.K"},
    ]}
    assert check_backward(node, node) == []
    narrowed = copy.deepcopy(node)
    narrowed["fields"][2]["type"]["symbols"] = ["A"]
    assert any("missing_enum_symbols" in p for p in check_backward(narrowed, node))
