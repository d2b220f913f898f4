"""The Postgres sink's rows (streams/sinks/postgres_rows.py) against the migration
(ops/migrations/postgres/0001_state.sql): statements, placeholders and parameters
without a database, then one test on the real Postgres of the local stack."""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

from schemas import codec
from streams.registry.profiles import templates
from streams.sinks.postgres import execute
from streams.sinks.postgres_rows import BULK, STATEMENTS, reference_rows, rows
from streams.tools.catalog import load as load_tools

MIGRATION = Path(__file__).resolve().parents[1] / "ops" / "migrations" / "postgres" / "0001_state.sql"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
NS = uuid.UUID("5b0c1f8e-6a53-4f0e-9d8a-6f1c2b7a9e01")
REFERENCE_TABLES = {"agent_templates", "tool_definitions"}


def uid(label: str) -> str:
    return str(uuid.uuid5(NS, label))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def roundtrip(name: str, record: dict) -> tuple[str, dict]:
    """The record exactly as the sink sees it: encoded, then decoded."""
    return codec.decode(codec.encode(name, record), expected=name)


def samples() -> list[tuple[str, dict]]:
    """Every event at least once, in an order that exercises both arrival orders of a
    vote and its result and of a ballot and its rejection, and an older agent profile
    (and status) after a newer one."""
    m1, m2, m3 = uid("m1"), uid("m2"), uid("m3")
    v1, v2 = uid("vote-1"), uid("vote-2")
    b1, b2, b3 = uid("ballot-1"), uid("ballot-2"), uid("ballot-3")
    req_ok, req_denied = uid("req-ok"), uid("req-denied")
    profile = {
        "event_id": uid("profile-new"), "agent_id": "developer-backend", "name": "Backend Dev",
        "template": "developer-backend", "persona": "pragmatic", "system_prompt": "be brief",
        "expertise": "databases", "tools": ["calculator", "shell"], "channels": ["general"],
        "permissions": ["tool:calculator", "vote:cast"], "state": "ACTIVE",
        "state_reason": None, "performance_score": 0.7, "created_at": at(0),
        "updated_at": at(100),
    }
    older = {**profile, "event_id": uid("profile-old"), "name": "Old Name", "state": "PAUSED",
             "state_reason": "maintenance window", "updated_at": at(50)}
    status = {"event_id": uid("status-new"), "agent_id": "developer-backend",
              "worker_id": "responder-1", "state": "WORKING", "open_tasks": 2,
              "finished_tasks": 7, "last_error": None, "updated_at": at(100)}
    proposal = {
        "event_id": uid("proposal-1"), "vote_id": v1, "channel_id": "general",
        "proposer_id": "tools", "vote_type": "TOOL_USAGE", "strategy": "WEIGHTED",
        "title": "Run shell?", "description": "ls -la", "options": ["yes", "no"],
        "eligible_voters": ["human:maya", "developer-backend"],
        "weights": {"human:maya": 2.0}, "quorum": 0.5, "deadline_at": at(400),
        "created_at": at(300), "tool_request_id": req_ok,
    }
    result = {
        "event_id": uid("result-1"), "vote_id": v1, "channel_id": "general",
        "vote_type": "TOOL_USAGE", "strategy": "WEIGHTED", "outcome": "PASSED",
        "winning_option": "yes", "tally": {"yes": 2.0, "no": 0.0, "abstain": 0.0},
        "ballots_counted": 1, "eligible_count": 2, "reason": "yes has 100%",
        "closed_at": at(400), "tool_request_id": req_ok,
    }
    ballot = {"event_id": b1, "vote_id": v1, "channel_id": "general",
              "voter_id": "developer-backend", "choice": "maybe", "rationale": "",
              "cast_at": at(310)}
    rejection = {"event_id": uid("reject-1"), "vote_id": v1, "voter_id": "developer-backend",
                 "ballot_event_id": b1, "reason": "INVALID_CHOICE",
                 "detail": "'maybe' is not an option", "rejected_at": at(311),
                 "channel_id": "general"}
    events = [
        ("ChatMessage", {
            "event_id": m1, "channel_id": "general", "thread_id": m1, "author_id": "human:maya",
            "author_kind": "HUMAN", "text": "API returns 502 since the deploy",
            "mentions": ["developer-backend"], "thread_depth": 0, "created_at": at(10),
            "metadata": {"client": "web", "trace": "abc"}}),
        ("ChatMessage", {
            "event_id": m2, "channel_id": "general", "thread_id": m1, "reply_to": m1,
            "author_id": "developer-backend", "author_kind": "AGENT",
            "text": "Check the upstream timeout \u2014 and nul\x00bytes", "thread_depth": 1,
            "created_at": at(20), "task_id": uid("task-1"), "metadata": {}}),
        ("ChatMessage", {
            "event_id": m3, "channel_id": "random", "thread_id": m3, "author_id": "system",
            "author_kind": "SYSTEM", "text": "welcome", "thread_depth": 0,
            "created_at": at(5)}),
        ("AgentProfile", profile),
        ("AgentProfile", older),  # older version after the newer one: ignored
        ("AgentStatus", status),
        ("AgentStatus", {**status, "event_id": uid("status-old"), "state": "IDLE",
                         "open_tasks": 0, "updated_at": at(90)}),
        ("AgentStatus", {**status, "event_id": uid("status-w2"), "worker_id": "responder-2",
                         "state": "ERROR", "last_error": "generator timeout"}),
        ("RelevanceDecision", {
            "event_id": uid("decision-1"), "message_id": m1, "channel_id": "general",
            "thread_id": m1, "thread_depth": 0, "decided_at": at(11),
            "scores": [{"agent_id": "developer-backend", "score": 0.81, "expertise": 0.9,
                        "workload": 1.0, "social": 1.0, "timing": 1.0, "quality": 0.7,
                        "selected": True, "reason": "mentioned"},
                       {"agent_id": "creative-writer", "score": 0.2, "expertise": float("nan"),
                        "workload": 1.0, "social": 0.0, "timing": 1.0, "quality": 0.7,
                        "selected": False, "reason": "below threshold"}],
            "selected": ["developer-backend"], "config_version": "v3"}),
        ("InferenceTask", {
            "event_id": uid("task-1"), "decision_id": uid("decision-1"), "message_id": m1,
            "channel_id": "general", "thread_id": m1, "thread_depth": 0,
            "agent_id": "developer-backend", "context_message_ids": [m1],
            "created_at": at(12), "deadline_at": at(72)}),
        ("InferenceTask", {
            "event_id": uid("task-2"), "decision_id": uid("decision-1"), "message_id": m1,
            "channel_id": "general", "thread_id": m1, "thread_depth": 0,
            "agent_id": "analyst-data", "created_at": at(12)}),
        ("ToolRequest", {
            "event_id": req_ok, "channel_id": "general", "agent_id": "developer-backend",
            "tool": "shell", "arguments_json": '{"command": "ls -la"}', "reason": "look",
            "source_message_id": m1, "requested_at": at(25)}),
        ("ToolRequest", {
            "event_id": req_denied, "channel_id": "general", "agent_id": "creative-writer",
            "tool": "calculator", "arguments_json": "2+2 {not json", "reason": "sum",
            "requested_at": at(26)}),
        ("ToolResult", {
            "event_id": uid("run-ok"), "request_id": req_ok, "channel_id": "general",
            "agent_id": "developer-backend", "tool": "shell", "status": "OK",
            "output": "total 0\n", "artifacts": ["/tmp/a.txt"], "vote_id": v1,
            "started_at": at(401), "finished_at": at(402), "duration_ms": 850}),
        ("ToolResult", {
            "event_id": uid("run-denied"), "request_id": req_denied, "channel_id": "general",
            "agent_id": "creative-writer", "tool": "calculator", "status": "DENIED",
            "output": "", "error": "agent lacks tool:calculator in general",
            "finished_at": at(27), "duration_ms": 0}),
        # Vote 1: proposal, ballot, rejection, deadline, result (in order).
        ("VoteProposal", proposal),
        ("Ballot", ballot),
        ("BallotRejected", rejection),
        ("Ballot", {**ballot, "event_id": b3, "voter_id": "human:maya", "choice": "yes",
                    "rationale": "fine", "cast_at": at(320)}),
        ("VoteDeadline", {"event_id": uid("deadline-1"), "vote_id": v1,
                          "deadline_at": at(400), "noticed_at": at(400.5)}),
        ("VoteResult", result),
        # Vote 2: result and rejection before the proposal and the ballot.
        ("VoteResult", {**result, "event_id": uid("result-2"), "vote_id": v2,
                        "vote_type": "PROJECT_DECISION", "strategy": "SIMPLE_MAJORITY",
                        "outcome": "NO_QUORUM", "winning_option": None, "tally": {},
                        "ballots_counted": 0, "reason": "no quorum", "closed_at": at(700),
                        "tool_request_id": None}),
        ("BallotRejected", {**rejection, "event_id": uid("reject-2"), "vote_id": v2,
                            "ballot_event_id": b2, "reason": "LATE", "detail": "too late",
                            "rejected_at": at(701), "channel_id": None}),
        ("VoteProposal", {**proposal, "event_id": uid("proposal-2"), "vote_id": v2,
                          "vote_type": "PROJECT_DECISION", "strategy": "SIMPLE_MAJORITY",
                          "title": "Ship Friday?", "weights": {}, "deadline_at": at(700),
                          "created_at": at(600), "tool_request_id": None}),
        ("Ballot", {**ballot, "event_id": b2, "vote_id": v2, "choice": "yes",
                    "cast_at": at(705)}),
        ("DeadLetter", {
            "event_id": uid("dead-1"), "source_topic": "agora.chat.messages", "partition": 2,
            "offset": 12345678901, "key": b"general", "value": b"\x00\xffnot avro",
            "headers": {"trace": b"\x01\x02"}, "source_timestamp": at(1),
            "reason": "payload starts with 00 ff", "error_type": "MalformedPayload",
            "stage": "postgres", "attempts": 3, "failed_at": at(2)}),
    ]
    return [roundtrip(name, record) for name, record in events]


def migration_sql() -> str:
    return MIGRATION.read_text()


def tables() -> dict[str, str]:
    """Table name -> the body of its CREATE TABLE."""
    found = {}
    for match in re.finditer(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+) \((.*?)\n\);",
                             migration_sql(), re.S):
        found[match.group(1)] = match.group(2)
    return found


def columns(body: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\s+(\w+)\s+(?:text|jsonb|boolean|integer|bigint|"
                                            r"double precision|timestamptz)\b", body, re.M)}


def unique_keys(body: str) -> list[set[str]]:
    """Column sets of the table's primary key and unique constraints."""
    keys = [{m.group(1)} for m in re.finditer(r"^\s+(\w+)\s+[^\n]*\b(?:PRIMARY KEY|UNIQUE)\b",
                                              body, re.M)]
    keys += [{c.strip() for c in m.group(1).split(",")}
             for m in re.finditer(r"(?:PRIMARY KEY|UNIQUE) \(([^)]*)\)", body)]
    return keys


def written_tables(sql: str) -> set[str]:
    return set(re.findall(r"\b(?:INSERT INTO|UPDATE)\s+(?!SET\b)(\w+)", sql))


def column_types(table: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(
        r"^\s+(\w+)\s+(text\[\]|jsonb)", tables()[table], re.M)}


def every_sql() -> dict[str, str]:
    """Statement name -> SQL, per-row and bulk alike."""
    return {**STATEMENTS, **{name: sql for name, (_, _, sql) in BULK.items()}}


def check_params(statement: str, params: dict) -> None:
    if statement in BULK:  # COPYed into the staging twin of the table, by column name
        table, staged, _ = BULK[statement]
        assert set(staged) == set(params), statement
        types = column_types(table)
        jsonb = [c for c in staged if types.get(c) == "jsonb"]
        text_arrays = [c for c in staged if types.get(c) == "text[]"]
    else:
        sql = STATEMENTS[statement]
        assert set(PLACEHOLDER.findall(sql)) == set(params), statement
        jsonb = re.findall(r"%\((\w+)\)s::jsonb", sql)
        text_arrays = re.findall(r"%\((\w+)\)s::text\[\]", sql)
    for key in jsonb:
        def refuse(constant):
            raise AssertionError(f"{statement}.{key}: {constant} is not JSON Postgres reads")
        json.loads(params[key], parse_constant=refuse)
        assert "\\u0000" not in params[key]
    for key in text_arrays:
        assert isinstance(params[key], list) and all(isinstance(v, str) for v in params[key])
    for key, value in params.items():
        if isinstance(value, datetime):
            assert value.tzinfo is not None, (statement, key)
        if isinstance(value, str):
            assert "\x00" not in value
            value.encode("utf-8")
        assert not isinstance(value, (bytes, dict, tuple)), (statement, key)


# --- without a database -------------------------------------------------------------

def test_samples_cover_every_event():
    assert {name for name, _ in samples()} == set(codec.EVENT_NAMES)


@pytest.mark.parametrize("index", range(len(samples())))
def test_rows_use_known_statements_with_covered_placeholders(index):
    name, record = samples()[index]
    produced = rows(name, record)
    assert produced
    for statement, params in produced:
        assert statement in STATEMENTS or statement in BULK
        check_params(statement, params)


def test_every_event_field_reaches_a_row():
    """Nothing an event carries is dropped: each field is a parameter, or sits in a JSON
    detail, or is known to be renamed."""
    renamed = {("ToolRequest", "arguments_json"): "arguments",
               ("DeadLetter", "source_topic"): "topic", ("DeadLetter", "failed_at"): "occurred_at"}
    for name, record in samples():
        params = {}
        for _, p in rows(name, record):
            params.update(p)
        detail = json.loads(params["detail"]) if name in ("DeadLetter", "VoteDeadline") else {}
        for field in record:
            target = renamed.get((name, field), field)
            assert target in params or target in detail, (name, field)


def test_statement_names_per_event():
    got = {}
    for name, record in samples():
        got.setdefault(name, set()).update(s for s, _ in rows(name, record))
    assert got == {
        "ChatMessage": {"message"}, "AgentProfile": {"agent"}, "AgentStatus": {"agent_status"},
        "RelevanceDecision": {"relevance_decision"}, "InferenceTask": {"inference_task"},
        "ToolRequest": {"tool_request"}, "ToolResult": {"tool_run", "infraction"},
        "VoteProposal": {"advisory_lock", "vote"}, "Ballot": {"advisory_lock", "ballot"},
        "VoteDeadline": {"system_event"},
        "VoteResult": {"advisory_lock", "vote_result", "vote_close"},
        "BallotRejected": {"advisory_lock", "ballot_rejection", "ballot_reject", "infraction"},
        "DeadLetter": {"system_event"},
    }
    assert set(STATEMENTS) | set(BULK) == (set().union(*got.values())
                                           | {"agent_template", "tool_definition"})
    assert not set(STATEMENTS) & set(BULK)


def test_unknown_event_name_is_a_value_error():
    with pytest.raises(ValueError, match="NoSuchEvent"):
        rows("NoSuchEvent", {})


def test_conversions():
    by_id = {record["event_id"]: (name, record) for name, record in samples()}

    def params_of(label: str, statement: str) -> dict:
        name, record = by_id[uid(label)]
        return next(p for s, p in rows(name, record) if s == statement)

    assert json.loads(params_of("req-ok", "tool_request")["arguments"]) == {"command": "ls -la"}
    assert json.loads(params_of("req-denied", "tool_request")["arguments"]) == "2+2 {not json"
    scores = json.loads(params_of("decision-1", "relevance_decision")["scores"])
    assert scores[1]["expertise"] is None and scores[0]["selected"] is True
    assert params_of("m2", "message")["text"] == "Check the upstream timeout \u2014 and nul\ufffdbytes"
    assert json.loads(params_of("m1", "message")["metadata"]) == {"client": "web", "trace": "abc"}
    detail = json.loads(params_of("dead-1", "system_event")["detail"])
    assert detail["value"] == "AP9ub3QgYXZybw==" and detail["key"] == "Z2VuZXJhbA=="
    assert detail["headers"] == {"trace": "AQI="} and detail["offset"] == 12345678901
    assert detail["topic"] == "agora.chat.messages" and detail["stage"] == "postgres"
    assert detail["source_timestamp"] == at(1).isoformat()
    assert params_of("dead-1", "system_event")["source"] == "postgres"
    # A denied tool is an infraction of its agent, keyed by the ToolResult's id.
    denied = params_of("run-denied", "infraction")
    assert (denied["event_id"], denied["agent_id"], denied["kind"]) == (
        uid("run-denied"), "creative-writer", "tool_denied")
    assert [s for s, _ in rows(*by_id[uid("run-ok")])] == ["tool_run"]
    rejected = params_of("reject-1", "infraction")
    assert (rejected["event_id"], rejected["kind"]) == (uid("reject-1"), "ballot_rejected")
    # A lock comes first and names the same key on both sides.
    assert rows(*by_id[uid("ballot-1")])[0] == rows(*by_id[uid("reject-1")])[0]
    assert rows(*by_id[uid("proposal-1")])[0] == rows(*by_id[uid("result-1")])[0]


@hsettings(max_examples=60, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=())),
       metadata=st.dictionaries(st.text(st.characters(blacklist_categories=()), max_size=5),
                                st.text(st.characters(blacklist_categories=())), max_size=3),
       arguments=st.text(st.characters(blacklist_categories=())))
def test_any_text_becomes_storable_parameters(text, metadata, arguments):
    message = {"event_id": "m", "channel_id": "c", "thread_id": "m", "author_id": "a",
               "author_kind": "HUMAN", "text": text, "thread_depth": 0, "created_at": T0,
               "metadata": metadata}
    request = {"event_id": "r", "channel_id": "c", "agent_id": "a", "tool": "t",
               "arguments_json": arguments, "reason": text, "requested_at": T0}
    for name, record in (("ChatMessage", message), ("ToolRequest", request)):
        for statement, params in rows(name, record):
            check_params(statement, params)


def test_reference_rows_cover_templates_and_tools():
    found_templates, tools = templates(), load_tools()
    produced = reference_rows(found_templates, tools)
    assert sorted(p["template"] for s, p in produced if s == "agent_template") == sorted(found_templates)
    assert sorted(p["name"] for s, p in produced if s == "tool_definition") == sorted(tools)
    for statement, params in produced:
        check_params(statement, params)
    shell = next(p for s, p in produced if s == "tool_definition" and p["name"] == "shell")
    assert json.loads(shell["limits"])["memory_mb"] == tools["shell"].limits.memory_mb
    assert (shell["needs_vote"], shell["vote_strategy"], shell["vote_quorum"]) == (
        True, "CONSENSUS", 1.0)


def test_statements_match_the_migration():
    defined = tables()
    for statement, sql in every_sql().items():
        referenced = set(re.findall(r"\b(?:INSERT INTO|UPDATE|FROM|JOIN)\s+(?!SET\b)(\w+)", sql))
        referenced -= {"new"}  # the message statement's CTE
        if statement in BULK:  # reads its staging twin, the target's columns
            referenced -= {f"stage_{BULK[statement][0]}"}
        assert referenced <= set(defined), (statement, referenced - set(defined))
        for match in re.finditer(r"INSERT INTO (\w+)(?: AS \w+)?\s*\(([^)]*)\)", sql):
            table, cols = match.group(1), {c.strip() for c in match.group(2).split(",")}
            assert cols <= columns(defined[table]), (statement, cols - columns(defined[table]))
        # Each ON CONFLICT (cols) names a primary key or unique constraint of the table
        # inserted into just before it.
        for match in re.finditer(r"ON CONFLICT \(([^)]*)\)", sql):
            table = re.findall(r"INSERT INTO (\w+)", sql[:match.start()])[-1]
            target = {c.strip() for c in match.group(1).split(",")}
            assert target in unique_keys(defined[table]), (statement, table, target)
        for match in re.finditer(r"\bSET\s+(.*?)(?:\bWHERE\b|\bFROM\b|$)", sql, re.S):
            table = re.findall(r"(?:INSERT INTO|UPDATE)\s+(?!SET\b)(\w+)", sql[:match.start()])[-1]
            assigned = set(re.findall(r"(\w+)\s*=\s*(?!=)", match.group(1)))
            assert assigned <= columns(defined[table]), (statement, assigned)


def test_event_tables_have_ingested_at_and_enum_checks():
    defined = tables()
    event_tables = set().union(*(written_tables(sql) for sql in every_sql().values()))
    event_tables -= REFERENCE_TABLES
    assert event_tables == set(defined) - REFERENCE_TABLES
    for table in event_tables:
        assert re.search(r"ingested_at\s+timestamptz NOT NULL DEFAULT now\(\)", defined[table]), table
    # Each Avro enum has a CHECK listing exactly its symbols, and every CHECK list of
    # upper-case symbols is an Avro enum (or the vote status).
    enums = {}
    for name in codec.EVENT_NAMES:
        def walk(node):
            if isinstance(node, dict):
                if node.get("type") == "enum":
                    enums[node["name"]] = frozenset(node["symbols"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(codec.schema(name))
    checks = {frozenset(re.findall(r"'(\w+)'", m.group(1)))
              for m in re.finditer(r"IN \(('[^)]*)\)", migration_sql())}
    for enum, symbols in enums.items():
        assert symbols in checks, enum
    upper = {c for c in checks if all(s.isupper() for s in c)}
    assert upper <= set(enums.values()) | {frozenset({"OPEN", "CLOSED"})}


# --- on the real Postgres ------------------------------------------------------------

EVENT_TABLES = ("agents", "agent_status", "channels", "messages", "votes", "ballots",
                "ballot_rejections", "vote_results", "tool_requests", "tool_runs",
                "relevance_decisions", "inference_tasks", "infractions", "system_events")


@pytest.fixture
def pg_schema(settings):
    """A fresh schema holding the migration; yields a connect() into it; dropped after."""
    import psycopg

    schema = f"sinkrows_{uuid.uuid4().hex[:10]}"

    def connect():
        return psycopg.connect(settings.postgres_dsn, autocommit=True, connect_timeout=10,
                               options=f"-c search_path={schema}")

    with psycopg.connect(settings.postgres_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            with connect() as conn, conn.transaction():
                conn.execute(migration_sql())
            yield connect
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def apply(conn, events) -> None:
    """Each event in its own transaction, its statements in order."""
    for name, record in events:
        with conn.transaction():
            execute(conn, rows(name, record))


def snapshot(conn) -> dict[str, list[str]]:
    return {t: [r[0] for r in conn.execute(
        f"SELECT (to_jsonb(x) - 'ingested_at')::text AS row FROM {t} AS x ORDER BY 1")]
        for t in EVENT_TABLES}


@pytest.mark.stack
def test_statements_on_postgres_are_idempotent_and_order_independent(pg_schema):
    events = samples()
    with pg_schema() as conn:
        # Reference data, twice.
        for _ in range(2):
            with conn.transaction():
                for statement, params in reference_rows(templates(), load_tools()):
                    conn.execute(STATEMENTS[statement], params)
        assert conn.execute("SELECT count(*) FROM agent_templates").fetchone()[0] == len(templates())
        assert conn.execute("SELECT count(*) FROM tool_definitions").fetchone()[0] == len(load_tools())

        # Every event twice in a row, then the whole stream replayed backwards.
        apply(conn, [e for e in events for _ in range(2)])
        first = snapshot(conn)
        apply(conn, list(reversed(events)))
        assert snapshot(conn) == first

        count = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in EVENT_TABLES}
        n = {name: sum(1 for e, _ in events if e == name) for name in codec.EVENT_NAMES}
        assert count == {
            "agents": 1, "agent_status": 2, "channels": 2, "messages": n["ChatMessage"],
            "votes": n["VoteProposal"], "ballots": n["Ballot"],
            "ballot_rejections": n["BallotRejected"], "vote_results": n["VoteResult"],
            "tool_requests": n["ToolRequest"], "tool_runs": n["ToolResult"],
            "relevance_decisions": n["RelevanceDecision"],
            "inference_tasks": n["InferenceTask"],
            "infractions": 1 + n["BallotRejected"],
            "system_events": n["DeadLetter"] + n["VoteDeadline"],
        }
        assert dict(conn.execute("SELECT channel_id, message_count FROM channels")) == {
            "general": 2, "random": 1}
        assert conn.execute("SELECT first_message_at, last_message_at FROM channels "
                            "WHERE channel_id = 'general'").fetchone() == (at(10), at(20))
        # The older profile and status, arriving later, did not overwrite the newer ones.
        assert conn.execute("SELECT event_id, name, state, updated_at FROM agents").fetchone() == (
            uid("profile-new"), "Backend Dev", "ACTIVE", at(100))
        assert conn.execute("SELECT state, open_tasks FROM agent_status "
                            "WHERE worker_id = 'responder-1'").fetchone() == ("WORKING", 2)
        # A rejection flags its ballot whichever came first; other ballots count.
        assert dict((r[0], r[1:]) for r in conn.execute(
            "SELECT event_id, counted, rejection_reason FROM ballots")) == {
            uid("ballot-1"): (False, "INVALID_CHOICE"), uid("ballot-2"): (False, "LATE"),
            uid("ballot-3"): (True, None)}
        # A result closes its vote whichever came first.
        assert dict((r[0], r[1:]) for r in conn.execute(
            "SELECT vote_id, status, outcome, winning_option, tally->>'yes', closed_at "
            "FROM votes")) == {
            uid("vote-1"): ("CLOSED", "PASSED", "yes", "2.0", at(400)),
            uid("vote-2"): ("CLOSED", "NO_QUORUM", None, None, at(700))}
        assert conn.execute("SELECT arguments FROM tool_requests WHERE event_id = %s",
                            (uid("req-denied"),)).fetchone() == ("2+2 {not json",)
        assert conn.execute("SELECT detail->>'reason', source FROM system_events "
                            "WHERE kind = 'dead_letter'").fetchone() == (
            "payload starts with 00 ff", "postgres")
        assert sorted(conn.execute("SELECT kind, agent_id FROM infractions")) == [
            ("ballot_rejected", "developer-backend"), ("ballot_rejected", "developer-backend"),
            ("tool_denied", "creative-writer")]

        # The sink's way: a whole batch in one transaction, statements grouped by name
        # (staged or executemany) -- the same state as one event at a time, even with
        # every event twice in the batch.
        conn.execute(f"TRUNCATE {', '.join(EVENT_TABLES)}")
        with conn.transaction():
            execute(conn, [pair for name, record in events + events
                           for pair in rows(name, record)])
        assert snapshot(conn) == first

        # A proposal and its result written at the same time by two sinks: the advisory
        # lock makes the second transaction see the first, so the vote still closes.
        by_id = {record["event_id"]: (name, record) for name, record in events}
        v3 = str(uuid.uuid4())
        proposal = ("VoteProposal", {**by_id[uid("proposal-1")][1],
                                     "event_id": str(uuid.uuid4()), "vote_id": v3})
        result = ("VoteResult", {**by_id[uid("result-1")][1],
                                 "event_id": str(uuid.uuid4()), "vote_id": v3})
        with pg_schema() as other:
            with conn.transaction():
                execute(conn, rows(*proposal))
                writer = threading.Thread(target=apply, args=(other, [result]))
                writer.start()
                writer.join(0.5)
                assert writer.is_alive()  # waiting for the proposal's transaction
            writer.join(10)
            assert not writer.is_alive()
        assert conn.execute("SELECT status, outcome FROM votes WHERE vote_id = %s",
                            (v3,)).fetchone() == ("CLOSED", "PASSED")
