"""The predefined analytics queries: their declarations, typed parameters, and every
query run for real on chdb over the row-mapping tests' sample events."""

from __future__ import annotations

import pytest

from ops.core.config import Settings
from ops.store import analytics, migrate
from ops.store.clickhouse import open_client
from ops.store.clickhouse_rows import COLUMNS, rows
from support.samples import SAMPLES

EXPECTED = {"agent_response_latency", "relevance_selection", "relevance_factor_distribution",
            "tool_runs", "vote_outcomes", "tokens_per_agent", "messages_per_minute",
            "incident_response", "agent_satisfaction"}


def test_the_queries_are_declared():
    queries = analytics.load()
    assert set(queries) == EXPECTED
    for query in queries.values():
        assert query.title and query.params and query.params[0].name == "hours"


def test_parameters_are_typed_and_checked():
    query = analytics.load()["relevance_selection"]
    assert query.bind({}) == {"hours": 24, "channel": ""}
    assert query.bind({"hours": "2", "channel": "ops"}) == {"hours": 2, "channel": "ops"}
    with pytest.raises(ValueError, match=r"hours \(UInt32\)"):
        query.bind({"hours": "soon"})
    with pytest.raises(ValueError, match="must not be negative"):
        query.bind({"hours": "-1"})
    with pytest.raises(ValueError, match="no parameter agent"):
        query.bind({"agent": "x"})


def test_an_undeclared_parameter_is_refused():
    with pytest.raises(ValueError, match="not declared"):
        analytics.parse("bad", "-- Bad.\nSELECT {x:UInt8}")
    with pytest.raises(ValueError, match="first line"):
        analytics.parse("bad", "SELECT 1")


def agora_client(path):
    return open_client(Settings(clickhouse_url=f"chdb://{path}"))


def test_every_query_returns_rows_on_chdb(tmp_path):
    client = agora_client(tmp_path)
    try:
        assert migrate.clickhouse(client) == ["0001", "0002", "0003", "0004", "0005", "0006"]
        assert migrate.clickhouse(client) == []  # tracked: applied once
        for name, record in SAMPLES:
            for table, row in rows(name, record):
                client.insert(table, [row], column_names=COLUMNS[table])
        # The sink's dedupe lookup by key reads through the bloom-filter index.
        plan = "\n".join(r[0] for r in client.query(
            "EXPLAIN indexes = 1 SELECT event_id FROM chat_messages "
            "WHERE event_id IN ('a', 'b')").result_rows)
        assert "event_id_bloom" in plan, plan
        for name in EXPECTED:
            columns, found = analytics.run(client, name, {"hours": "100000"})
            assert columns and found, name
        with pytest.raises(KeyError, match="unknown query"):
            analytics.run(client, "nope", {})
        columns, found = analytics.run(client, "tool_runs", {"hours": "100000"})
        assert {"tool", "status", "requests"} <= set(columns)
    finally:
        client.close()


def test_a_migration_changed_after_it_was_applied_is_refused(tmp_path):
    client = agora_client(tmp_path)
    try:
        assert migrate.clickhouse(client) == ["0001", "0002", "0003", "0004", "0005", "0006"]
        client.insert("agora.schema_migrations", [["0001", "0001_events", "edited"]],
                      column_names=["version", "name", "checksum"])
        with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
            migrate.clickhouse(client)
    finally:
        client.close()
