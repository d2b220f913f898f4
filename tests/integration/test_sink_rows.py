"""The Postgres sink's rows (ops/store/postgres_rows.py) against the migration
(ops/store/migrations/postgres/0001_state.sql): statements, placeholders and parameters
without a database, then one test on the real Postgres of the local stack."""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ops.store.postgres import execute
from ops.store.postgres_rows import BULK, STATEMENTS, reference_rows, rows
from schemas import codec
from schemas.topics import STORED_EVENTS
from streams.domain.registry import templates
from streams.domain.tools.catalog import load as load_tools
from support.samples import SAMPLES, T0, at, sample, uid

MIGRATIONS = sorted((Path(__file__).resolve().parents[2] / "ops" / "store" / "migrations" / "postgres")
                    .glob("*.sql"))
PLACEHOLDER = re.compile(r"%\((\w+)\)s")
REFERENCE_TABLES = {"agent_templates", "tool_definitions"}
GATEWAY_TABLES = {"auth_refresh_tokens", "auth_revoked_tokens"}  # not the sink's
# Written by the workers themselves, not by the sinks: memory, knowledge, the tool ledger,
# the tickets and on-call rota of the incident actions.
WORKER_TABLES = {"text_vectors", "channel_memory", "knowledge_documents", "knowledge_base",
                 "tool_ledger", "tickets", "oncall_rota"}


def migration_sql() -> str:
    """Every migration, in order (what `agora db migrate` applies)."""
    return "\n".join(path.read_text() for path in MIGRATIONS)


def tables() -> dict[str, str]:
    """Table name -> the body of its CREATE TABLE, with the columns added later."""
    found = {}
    for match in re.finditer(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+) \((.*?)\n\);",
                             migration_sql(), re.S):
        found[match.group(1)] = match.group(2)
    for match in re.finditer(r"ALTER TABLE (\w+) ADD COLUMN (\w+ \w+)", migration_sql()):
        found[match.group(1)] += f"\n    {match.group(2)}"
    for match in re.finditer(r"DROP TABLE (?:IF EXISTS )?(\w+)", migration_sql()):
        del found[match.group(1)]
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
        if params[key] is None:  # a NULL of a nullable column (a message without sources)
            continue

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

@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_rows_use_known_statements_with_covered_placeholders(index):
    name, record = SAMPLES[index]
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
    for name, record in SAMPLES:
        params = {}
        for _, p in rows(name, record):
            params.update(p)
        detail = json.loads(params["detail"]) if name in ("DeadLetter", "VoteDeadline") else {}
        for field in record:
            target = renamed.get((name, field), field)
            assert target in params or target in detail, (name, field)


def test_statement_names_per_event():
    got = {}
    for name, record in SAMPLES:
        got.setdefault(name, set()).update(s for s, _ in rows(name, record))
    assert got == {
        "ChatMessage": {"message"}, "AgentProfile": {"agent"}, "AgentStatus": {"agent_status"},
        "RelevanceDecision": {"relevance_decision"}, "InferenceTask": {"inference_task"},
        "ToolRequest": {"tool_request"}, "ToolResult": {"tool_run", "infraction"},
        "VoteProposal": {"advisory_lock", "vote"}, "Ballot": {"advisory_lock", "ballot"},
        "VoteDeadline": {"system_event"},
        "VoteResult": {"advisory_lock", "vote_result", "vote_close"},
        "BallotRejected": {"advisory_lock", "ballot_rejection", "ballot_reject", "infraction"},
        "IncidentDetected": {"incident_message", "incident"},
        "IncidentChanged": {"incident_change", "incident_state"},
        "AgentFeedback": {"agent_feedback"},
        "DeadLetter": {"system_event"},
    }
    assert set(STATEMENTS) | set(BULK) == (set().union(*got.values())
                                           | {"agent_template", "tool_definition"})
    assert not set(STATEMENTS) & set(BULK)


def test_unknown_event_name_is_a_value_error():
    with pytest.raises(ValueError, match="NoSuchEvent"):
        rows("NoSuchEvent", {})


def test_conversions():
    def params_of(label: str, statement: str) -> dict:
        return next(p for s, p in rows(*sample(label)) if s == statement)

    assert json.loads(params_of("req-ok", "tool_request")["arguments"]) == {
        "command": "ls -la", "n": None}
    assert json.loads(params_of("req-bad", "tool_request")["arguments"]) == "2+2 {not json"
    scores = {s["agent_id"]: s for s in
              json.loads(params_of("decision-1", "relevance_decision")["scores"])}
    assert scores["creative-writer"]["expertise"] is None
    assert scores["developer-backend"]["selected"] is True
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
    assert [s for s, _ in rows(*sample("run-ok"))] == ["tool_run"]
    rejected = params_of("reject-1", "infraction")
    assert (rejected["event_id"], rejected["kind"]) == (uid("reject-1"), "ballot_rejected")
    # A lock comes first and names the same key on both sides.
    assert rows(*sample("ballot-1"))[0] == rows(*sample("reject-1"))[0]
    assert rows(*sample("proposal-1"))[0] == rows(*sample("result-1"))[0]


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
    assert event_tables == set(defined) - REFERENCE_TABLES - GATEWAY_TABLES - WORKER_TABLES
    for table in event_tables:
        assert re.search(r"ingested_at\s+timestamptz NOT NULL DEFAULT now\(\)", defined[table]), table
    # Each Avro enum has a CHECK listing exactly its symbols, and every CHECK list of
    # upper-case symbols is an Avro enum (or the vote status).
    enums = {}
    for name in STORED_EVENTS:
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
    # Besides: the vote status, and a ticket's severity (IncidentDetected's, less UNKNOWN).
    severities = frozenset(codec.schema("IncidentDetected")["fields"][7]["type"]["symbols"])
    assert upper <= set(enums.values()) | {frozenset({"OPEN", "CLOSED"}),
                                           severities - {"UNKNOWN"}}


# --- on the real Postgres ------------------------------------------------------------

EVENT_TABLES = ("agents", "agent_status", "channels", "messages", "votes", "ballots",
                "ballot_rejections", "vote_results", "tool_requests", "tool_runs",
                "relevance_decisions", "inference_tasks", "infractions", "system_events",
                "incidents", "incident_messages", "incident_changes", "agent_feedback")


@pytest.fixture
def pg_schema(settings):
    """A fresh schema holding the migration; yields a connect() into it; dropped after."""
    import psycopg

    schema = f"sinkrows_{uuid.uuid4().hex[:10]}"

    def connect():
        return psycopg.connect(settings.postgres_dsn, autocommit=True, connect_timeout=10,
                               options=f"-c search_path={schema},public")  # public: pgvector

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
    events = SAMPLES
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
        agents = {r["agent_id"] for e, r in events if e == "AgentProfile"}
        workers = {(r["agent_id"], r["worker_id"]) for e, r in events if e == "AgentStatus"}
        assert count == {
            "agents": len(agents), "agent_status": len(workers), "channels": 2,
            "messages": n["ChatMessage"],
            "votes": n["VoteProposal"], "ballots": n["Ballot"],
            "ballot_rejections": n["BallotRejected"], "vote_results": n["VoteResult"],
            "tool_requests": n["ToolRequest"], "tool_runs": n["ToolResult"],
            "relevance_decisions": n["RelevanceDecision"],
            "inference_tasks": n["InferenceTask"],
            "infractions": 1 + n["BallotRejected"],
            "system_events": n["DeadLetter"] + n["VoteDeadline"],
            "incidents": 1, "incident_messages": n["IncidentDetected"],
            "incident_changes": n["IncidentChanged"], "agent_feedback": n["AgentFeedback"],
        }
        # The join counted and did not lower the severity; the first acknowledgement and the
        # resolution stand, whatever the order they were replayed in.
        assert conn.execute(
            "SELECT title, severity, service, status, messages, acknowledged_by, "
            "acknowledged_at, resolved_by, resolved_at, resolution FROM incidents"
        ).fetchone() == ("the API returns 502 since the deploy", "SEV1", "api", "resolved", 2,
                         "human:maya", at(900), "human:lea", at(1500), "pool size raised")
        assert dict(conn.execute("SELECT channel_id, message_count FROM channels")) == {
            "general": 2, "random": 1}
        assert conn.execute("SELECT first_message_at, last_message_at FROM channels "
                            "WHERE channel_id = 'general'").fetchone() == (at(10), at(20.5))
        # The older profile and status, arriving later, did not overwrite the newer ones.
        assert conn.execute("SELECT event_id, name, state, updated_at FROM agents "
                            "WHERE agent_id = 'developer-backend'").fetchone() == (
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
                            (uid("req-bad"),)).fetchone() == ("2+2 {not json",)
        assert conn.execute("SELECT detail->>'reason', source FROM system_events "
                            "WHERE kind = 'dead_letter' AND event_id = %s",
                            (uid("dead-1"),)).fetchone() == (
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
        v3 = str(uuid.uuid4())
        proposal = ("VoteProposal", {**sample("proposal-1")[1],
                                     "event_id": str(uuid.uuid4()), "vote_id": v3})
        result = ("VoteResult", {**sample("result-1")[1],
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
