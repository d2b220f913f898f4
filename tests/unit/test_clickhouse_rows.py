"""The ClickHouse sink's rows (ops/store/clickhouse_rows.py) against the migration
(ops/store/migrations/clickhouse/0001_events.sql): rows without a database, then the
migration and the rows on a real ClickHouse engine, chdb, in-process (no server)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ops.store.clickhouse_rows import COLUMNS, KEY_SQL, event_ids, rows, stored_keys_query
from schemas import codec
from schemas.topics import STORED_EVENTS
from support.samples import SAMPLES, T0, at, sample, uid

MIGRATIONS = sorted((Path(__file__).resolve().parents[2] / "ops" / "store" / "migrations"
                     / "clickhouse").glob("*.sql"))
MIGRATION = MIGRATIONS[0]  # the tables; later files alter them
AGGREGATES = {"messages_per_minute", "relevance_per_minute", "tool_runs_per_minute"}


def all_rows() -> dict[str, list[tuple]]:
    """Table -> the rows of every sample, in sample order."""
    out: dict[str, list[tuple]] = {}
    for name, record in SAMPLES:
        for table, row in rows(name, record):
            out.setdefault(table, []).append(row)
    return out


def statements(path: Path = MIGRATION) -> list[str]:
    """A migration's statements, split as the runner splits them."""
    chunks = path.read_text().split(";\n")
    assert not chunks[-1].strip(), "the file must end with ';' and a newline"
    return [chunk.strip() for chunk in chunks[:-1]]


def comment_free(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def created_tables() -> dict[str, list[str]]:
    """Table name -> its column names, parsed from the DDL."""
    found = {}
    for path in MIGRATIONS:  # tables and columns added later, where they are added
        for stmt in statements(path):
            m = re.match(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*)\n\)\nENGINE",
                         comment_free(stmt).strip(), re.S)
            if m:
                found[m.group(1)] = [line.split()[0] for line in m.group(2).splitlines()
                                     if line.strip()]
            m = re.match(r"ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+) .* AFTER (\w+)$",
                         comment_free(stmt).strip())
            if m:
                table, column, after = m.groups()
                found[table].insert(found[table].index(after) + 1, column)
    return found


# --- without a database -------------------------------------------------------------

def test_samples_cover_every_event():
    assert {name for name, _ in SAMPLES} == STORED_EVENTS


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_rows_fit_their_columns(index):
    name, record = SAMPLES[index]
    produced = rows(name, record)
    assert produced
    for table, row in produced:
        assert table in COLUMNS
        assert isinstance(row, tuple) and len(row) == len(COLUMNS[table])
        key = event_ids(table, row)
        assert isinstance(key, str) and key
        for column, value in zip(COLUMNS[table], row):
            assert not isinstance(value, (bytes, bytearray, tuple)), (table, column)
            if isinstance(value, datetime):
                assert value.utcoffset() == timedelta(0), (table, column)
            if isinstance(value, str):
                value.encode("utf-8")


def test_every_table_has_rows_and_keys_are_unique():
    produced = all_rows()
    assert set(produced) == set(COLUMNS)
    for table, table_rows in produced.items():
        keys = [event_ids(table, row) for row in table_rows]
        assert len(set(keys)) == len(keys), table


def test_every_event_field_reaches_a_row():
    """Nothing an event carries is dropped: each field is a column of its main table
    (the relevance scores are flattened into relevance_scores)."""
    renamed = {("ToolRequest", "arguments_json"): "arguments",
               ("DeadLetter", "partition"): "source_partition",
               ("DeadLetter", "offset"): "source_offset",
               ("RelevanceDecision", "scores"): "considered"}
    for name, record in SAMPLES:
        table, _ = rows(name, record)[0]
        for field in record:
            assert renamed.get((name, field), field) in COLUMNS[table], (name, field)
    score_fields = {"agent_id", "score", "expertise", "workload", "social", "timing",
                    "quality", "selected", "reason"}
    assert score_fields <= set(COLUMNS["relevance_scores"])


def test_values():
    by_id = {}
    for table, table_rows in all_rows().items():
        for row in table_rows:
            by_id[(table, event_ids(table, row))] = dict(zip(COLUMNS[table], row))
    msg = by_id["chat_messages", uid("m1")]
    assert msg["created_at"] == at(10) and msg["text_length"] == len(msg["text"])
    assert msg["metadata"] == {"client": "web", "trace": "abc"} and msg["reply_to"] is None
    assert by_id["chat_messages", uid("m2")]["text"].endswith("nul\x00bytes")

    dev = by_id["relevance_scores", f"{uid('decision-1')}/developer-backend"]
    assert dev["selected"] is True and dev["selected_rank"] == 1 and dev["score"] == 0.81
    assert dev["channel_id"] == "general" and dev["decided_at"] == at(11)
    assert by_id["relevance_scores", f"{uid('decision-1')}/analyst-data"]["selected_rank"] == 2
    writer = by_id["relevance_scores", f"{uid('decision-1')}/creative-writer"]
    assert writer["selected_rank"] == 0 and math.isnan(writer["expertise"])
    assert by_id["relevance_decisions", uid("decision-1")]["considered"] == 3
    assert by_id["relevance_decisions", uid("decision-2")]["considered"] == 0

    ok = by_id["tool_requests", uid("req-ok")]
    assert json.loads(ok["arguments"]) == {"command": "ls -la", "n": None}
    assert ok["arguments_valid"] is True
    bad = by_id["tool_requests", uid("req-bad")]
    assert json.loads(bad["arguments"]) == "2+2 {not json" and bad["arguments_valid"] is False

    dead = by_id["dead_letters", uid("dead-1")]
    assert dead["key"] == "Z2VuZXJhbA==" and dead["headers"] == {"trace": "AQI="}
    assert dead["source_offset"] == 12345678901
    empty = by_id["dead_letters", uid("dead-2")]
    assert empty["key"] is None and empty["value"] is None and empty["headers"] == {}
    assert by_id["vote_deadlines", uid("deadline-1")]["lag_ms"] == 250
    assert by_id["vote_proposals", uid("proposal-1")]["weights"] == {"human:maya": 2.0}
    assert by_id["ballot_rejections", uid("reject-2")]["channel_id"] is None


def test_a_score_listed_twice_is_one_row():
    _, record = sample("decision-1")
    twice = {**record, "scores": record["scores"] + record["scores"][:1]}
    scores = [row for table, row in rows("RelevanceDecision", twice)
              if table == "relevance_scores"]
    assert len(scores) == len(record["scores"])


def test_unknown_event_and_table():
    with pytest.raises(ValueError, match="NoSuchEvent"):
        rows("NoSuchEvent", {})
    with pytest.raises(ValueError, match="no_such_table"):
        event_ids("no_such_table", ())


@given(st.text())
def test_tool_arguments_are_always_json(arguments):
    record = {"event_id": "e", "channel_id": "c", "agent_id": "a", "tool": "t",
              "arguments_json": arguments, "reason": "", "requested_at": T0}
    [(_, row)] = rows("ToolRequest", record)
    values = dict(zip(COLUMNS["tool_requests"], row))

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")
    json.loads(values["arguments"], parse_constant=refuse)


def test_ddl_columns_match_the_sink():
    """Every table the sink writes is created with exactly its columns, in order, and
    ingested_at last; every other table is an aggregate."""
    tables = created_tables()
    for table, columns in COLUMNS.items():
        assert tables[table] == [*columns, "ingested_at"], table
    assert set(tables) - set(COLUMNS) == AGGREGATES


def test_statements_are_safe_to_split():
    """Each chunk between ';\\n' is one statement (not a bare comment), and none is
    a CREATE without IF NOT EXISTS (a half-applied file is finished by a rerun)."""
    for stmt in statements():
        body = comment_free(stmt).strip()
        assert body and ";" not in body, stmt[:80]
        assert re.match(r"CREATE (TABLE|MATERIALIZED VIEW) IF NOT EXISTS \w+ ", body), body[:80]


# --- on chdb, the ClickHouse engine in-process ---------------------------------------

@pytest.fixture(scope="module")
def chdb_client(tmp_path_factory):
    """A client on a fresh chdb directory with the migration applied and every sample
    row inserted twice (a replay). One process may open a directory at a time."""
    clickhouse_connect = pytest.importorskip("clickhouse_connect")
    pytest.importorskip("chdb")
    path = tmp_path_factory.mktemp("chdb")
    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    try:
        client.command("CREATE DATABASE IF NOT EXISTS agora")
        client.command("USE agora")
        for _ in range(2):  # a second run changes nothing
            for stmt in (s for path in MIGRATIONS for s in statements(path)):
                client.command(stmt)
        for _ in range(2):
            for table, table_rows in all_rows().items():
                client.insert(f"agora.{table}", table_rows, column_names=list(COLUMNS[table]))
        yield client
    finally:
        client.close()


def scalar(client, sql: str):
    return client.query(sql).result_rows[0][0]


def test_chdb_schema(chdb_client):
    found = {}
    for table, column in chdb_client.query(
            "SELECT table, name FROM system.columns WHERE database = 'agora' "
            "ORDER BY table, position").result_rows:
        found.setdefault(table, []).append(column)
    for table, columns in COLUMNS.items():
        assert found[table] == [*columns, "ingested_at"], table
    views = {name for (name,) in chdb_client.query(
        "SELECT name FROM system.tables WHERE database = 'agora' "
        "AND engine = 'MaterializedView'").result_rows}
    assert views == {f"{t}_mv" for t in AGGREGATES}
    assert set(found) == set(COLUMNS) | AGGREGATES | views


def test_chdb_replays_collapse(chdb_client):
    for table, table_rows in all_rows().items():
        keys = {event_ids(table, row) for row in table_rows}
        assert scalar(chdb_client, f"SELECT count() FROM agora.{table}") == 2 * len(table_rows)
        assert scalar(chdb_client, f"SELECT count() FROM agora.{table} FINAL") == len(keys)
        stored = {key for (key,) in chdb_client.query(
            f"SELECT {KEY_SQL[table]} FROM agora.{table} FINAL").result_rows}
        assert stored == keys, table


def test_chdb_stored_keys_query_finds_stored_events_whatever_their_times(chdb_client):
    """The sink's replay check finds every stored key, also of an event made again an
    hour later (same id, new timestamps), and no key that is not stored."""
    for table, table_rows in all_rows().items():
        keys = sorted({event_ids(table, row) for row in table_rows})
        for extra in ("never-stored", "it's 100% quoted\\"):  # inlined, then bound
            sql, params = stored_keys_query(table, keys + [extra])
            assert (params is None) == (extra == "never-stored")
            assert sorted(k for (k,) in chdb_client.query(sql, parameters=params).result_rows
                          ) == sorted(keys * 2), table  # the fixture inserted each row twice


def test_chdb_values(chdb_client):
    got = chdb_client.query(
        "SELECT toUnixTimestamp64Milli(created_at), text, text_length, lengthUTF8(text), "
        "metadata, mentions, reply_to FROM agora.chat_messages FINAL "
        f"WHERE event_id = '{uid('m1')}'").result_rows
    [(millis, text, length, ch_length, metadata, mentions, reply_to)] = got
    assert millis == codec.epoch_ms(at(10)) and length == ch_length == len(text)
    assert metadata == {"client": "web", "trace": "abc"} and mentions == ["developer-backend"]
    assert reply_to is None
    assert scalar(chdb_client, "SELECT text FROM agora.chat_messages FINAL "
                               f"WHERE event_id = '{uid('m2')}'").endswith("nul\x00bytes")
    assert scalar(chdb_client, "SELECT JSONExtractString(arguments, 'command') "
                               "FROM agora.tool_requests FINAL "
                               f"WHERE event_id = '{uid('req-ok')}'") == "ls -la"
    assert scalar(chdb_client, "SELECT hex(base64Decode(value)) FROM agora.dead_letters FINAL "
                               f"WHERE event_id = '{uid('dead-1')}'") == b"\x00\xffnot avro".hex().upper()
    assert scalar(chdb_client, "SELECT tally['yes'] FROM agora.vote_results FINAL "
                               f"WHERE event_id = '{uid('result-1')}'") == 2.0


def test_chdb_aggregates(chdb_client):
    """The views count every insert, the replay included (hence the sink's id check)."""
    produced = all_rows()
    messages = Counter((r[1], r[5]) for r in produced["chat_messages"])
    got = dict(((c, k), n) for c, k, n in chdb_client.query(
        "SELECT channel_id, author_kind, sum(messages) FROM agora.messages_per_minute "
        "GROUP BY channel_id, author_kind").result_rows)
    assert got == {key: 2 * n for key, n in messages.items()}

    index = {c: i for i, c in enumerate(COLUMNS["relevance_scores"])}
    scores = produced["relevance_scores"]
    [(considered, selected, sum_score, sum_expertise)] = chdb_client.query(
        "SELECT sum(considered), sum(selected), sum(sum_score), sum(sum_expertise) "
        "FROM agora.relevance_per_minute").result_rows
    assert considered == 2 * len(scores)
    assert selected == 2 * sum(r[index["selected"]] for r in scores)
    assert sum_score == pytest.approx(2 * sum(r[index["score"]] for r in scores))
    finite = [r[index["expertise"]] for r in scores if math.isfinite(r[index["expertise"]])]
    assert sum_expertise == pytest.approx(2 * sum(finite))  # the NaN counts as 0

    index = {c: i for i, c in enumerate(COLUMNS["tool_results"])}
    results = produced["tool_results"]
    got = {(t, s): (n, d) for t, s, n, d in chdb_client.query(
        "SELECT tool, status, sum(runs), sum(total_duration_ms) "
        "FROM agora.tool_runs_per_minute GROUP BY tool, status").result_rows}
    assert got == {(r[index["tool"]], r[index["status"]]): (2, 2 * r[index["duration_ms"]])
                   for r in results}


def test_chdb_merge_removes_replays(chdb_client):
    """Runs last: OPTIMIZE ... FINAL merges the parts, and the replayed copies are gone."""
    for table, table_rows in all_rows().items():
        chdb_client.command(f"OPTIMIZE TABLE agora.{table} FINAL")
        keys = {event_ids(table, row) for row in table_rows}
        assert scalar(chdb_client, f"SELECT count() FROM agora.{table}") == len(keys), table
