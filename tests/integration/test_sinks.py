"""The Postgres sink on the real broker and Postgres: exact counts, a SIGKILL in the
middle of a batch, and a database outage under load."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import psycopg
import pytest

from conftest import metric
from ops import devstack as stack
from ops.core import kafka
from ops.core.kafka import ensure_topics
from ops.core.net import free_port
from ops.devstack import smoke
from ops.devstack.process import Proc, members, stop, survivors, wait_until
from ops.store import analytics, migrate
from ops.store.clickhouse import open_client
from schemas import codec
from schemas.topics import ALL, CHAT_MESSAGES
from support.accounting import lag, read_all, start_sink
from support.dashboards import assert_panels_run
from support.samples import SAMPLES

pytestmark = pytest.mark.stack
# Table -> how to count the distinct events it must hold, from the topics' records.
TABLES = {
    "messages": lambda by: len(by["ChatMessage"]),
    "relevance_decisions": lambda by: len(by["RelevanceDecision"]),
    "inference_tasks": lambda by: len(by["InferenceTask"]),
    "tool_requests": lambda by: len(by["ToolRequest"]),
    "tool_runs": lambda by: len(by["ToolResult"]),
    "votes": lambda by: len({r["vote_id"] for r in by["VoteProposal"].values()}),
    "ballots": lambda by: len(by["Ballot"]),
    "ballot_rejections": lambda by: len(by["BallotRejected"]),
    "vote_results": lambda by: len({r["vote_id"] for r in by["VoteResult"].values()}),
    "system_events": lambda by: len(by["DeadLetter"]) + len(by["VoteDeadline"]),
}


@pytest.fixture(scope="module")
def migrated(settings):
    ensure_topics(settings, ALL)
    applied = migrate.postgres(settings)  # earlier tests of the session may have run it
    assert applied == sorted(applied) and set(applied) <= {v for v, _, _ in migrate._files("postgres")}
    assert migrate.postgres(settings) == []  # idempotent
    return settings


def events_by_name(settings) -> dict[str, dict[str, dict]]:
    """Every decodable event on every topic, by name and event id."""
    reader = read_all(settings)
    by: dict[str, dict[str, dict]] = {}
    for name, record in reader.records:
        by.setdefault(name, {})[record["event_id"]] = record
    return {name: by.get(name, {}) for name in
            ("ChatMessage", "RelevanceDecision", "InferenceTask", "ToolRequest", "ToolResult",
             "VoteProposal", "Ballot", "BallotRejected", "VoteResult", "DeadLetter",
             "VoteDeadline")}


def table_counts(settings) -> dict[str, int]:
    with psycopg.connect(settings.postgres_dsn) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def wait_exact(settings, timeout_s: float = 120) -> dict[str, int]:
    """Counts equal to the distinct events on the topics (both re-read until they agree)."""
    deadline = time.monotonic() + timeout_s
    while True:
        expected = {t: count(events_by_name(settings)) for t, count in TABLES.items()}
        actual = table_counts(settings)
        if actual == expected or time.monotonic() > deadline:
            assert actual == expected
            return actual
        time.sleep(1)


def publish_messages(settings, count: int, channel: str, duplicates: int = 0) -> list[dict]:
    producer = kafka.producer(settings)
    sent = [smoke.chat_message(channel, f"sink load {i}") for i in range(count)]
    for message in sent + sent[:duplicates]:  # redelivered copies
        producer.produce(CHAT_MESSAGES.name, key=channel.encode(),
                         value=codec.encode("ChatMessage", message))
    assert producer.flush(30) == 0
    return sent


def test_every_event_lands_exactly_once(migrated):
    settings = migrated
    channel = f"sink-{uuid.uuid4().hex[:6]}"
    publish_messages(settings, 300, channel, duplicates=50)
    producer = kafka.producer(settings)
    producer.produce(CHAT_MESSAGES.name, key=channel.encode(), value=b"not avro at all")
    assert producer.flush(10) == 0
    sink = start_sink(settings, "exact")
    try:
        counts = wait_exact(settings)
        assert counts["messages"] >= 300
        with psycopg.connect(settings.postgres_dsn) as conn:
            [(n, total)] = conn.execute("SELECT count(*), sum(message_count) FROM channels "
                                        "WHERE channel_id = %s", (channel,)).fetchall()
            assert (n, total) == (1, 300)  # duplicates did not count twice
            # The sink dead-lettered the garbage with its reason, and stored that too.
            # (Other tests of the session dead-letter records of their own too.)
            reasons = [r for (r,) in conn.execute(
                "SELECT detail->>'reason' FROM system_events WHERE kind = 'dead_letter' "
                "AND detail->>'stage' = 'postgres'")]
            assert any("payload" in reason for reason in reasons), reasons
            templates = conn.execute("SELECT count(*) FROM agent_templates").fetchone()[0]
            tools = conn.execute("SELECT count(*) FROM tool_definitions").fetchone()[0]
            assert templates >= 6 and tools >= 6
    finally:
        stop(sink, grace_s=10)


def test_a_sigkill_mid_batch_loses_and_duplicates_nothing(migrated):
    settings = migrated
    channel = f"sink-kill-{uuid.uuid4().hex[:6]}"
    publish_messages(settings, 20000, channel)
    sink = start_sink(settings, "killed")
    tracked = members(sink)
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        def stored() -> int:
            return conn.execute("SELECT count(*) FROM messages WHERE channel_id = %s",
                                (channel,)).fetchone()[0]
        wait_until(lambda: stored() > 0, timeout_s=60, what="a first batch")
        os.killpg(sink.pgid, signal.SIGKILL)
        wait_until(lambda: not survivors(tracked), timeout_s=10, what="the killed sink gone")
        partial = stored()
    assert 0 < partial < 20000, partial  # killed in the middle of the stream
    again = start_sink(settings, "restarted")
    try:
        wait_exact(settings)
    finally:
        stop(again, grace_s=10)


def test_a_postgres_outage_under_load_pauses_then_resumes(migrated):
    settings = migrated
    channel = f"sink-outage-{uuid.uuid4().hex[:6]}"
    port = free_port()
    sink = start_sink(settings, "outage", AGORA_METRICS_PORT=str(port))
    log = settings.stack_dir / "logs" / "sink-outage.log"
    producing = threading.Thread(target=lambda: [publish_messages(settings, 100, channel)
                                                 for _ in range(15)])
    try:
        producing.start()
        record = stack.read_state(settings.stack_dir)["services"]["postgres"]
        stop(Proc(**record["proc"]), grace_s=10)  # the database goes away under load
        wait_until(lambda: metric(port, "agora_sink_paused", sink="postgres") == 1,
                   timeout_s=30, what="the sink to pause")
        time.sleep(3)
        stack.up(settings.stack_dir, progress=lambda line: None)  # same port, same data
        producing.join()
        wait_exact(settings)
        text = log.read_text()
        assert "sink.store_unavailable" in text and "sink.store_back" in text
        assert metric(port, "agora_sink_paused", sink="postgres") == 0
        assert metric(port, "agora_sink_retries_total", sink="postgres") > 0
        # librdkafka's statistics (every 10 s) give each assigned partition's lag.
        wait_until(lambda: metric(port, "agora_consumer_lag", group=f"{settings.app_id}-sink-postgres",
                                  topic=CHAT_MESSAGES.name) is not None,
                   timeout_s=30, what="the consumer lag gauge")
    finally:
        stop(sink, grace_s=10)


def clickhouse_counts(settings) -> dict[str, int]:
    client = open_client(settings)  # the sink is stopped: the chdb directory is ours
    try:
        return {table: int(client.command(f"SELECT count() FROM {table}")) for table in
                ("chat_messages", "relevance_decisions", "relevance_scores", "tool_results",
                 "ballots", "vote_results", "dead_letters")}
    finally:
        client.close()


def publish_samples(settings) -> None:
    """One of every event (the row-mapping tests' samples), so that every analytics
    query has something to find even when this module runs alone."""
    producer = kafka.producer(settings)
    for name, record in SAMPLES:
        topic = next(t for t in ALL if name in t.events)
        key = record.get("channel_id") or record.get("vote_id") or record["event_id"]
        producer.produce(topic.name, key=key.encode(), value=codec.encode(name, record))
    assert producer.flush(10) == 0


def assert_clickhouse_exact(settings) -> None:
    """ClickHouse holds one row per distinct event on the topics (scores: per agent)."""
    by = events_by_name(settings)
    decisions = by["RelevanceDecision"].values()
    assert clickhouse_counts(settings) == {
        "chat_messages": len(by["ChatMessage"]),
        "relevance_decisions": len(by["RelevanceDecision"]),
        "relevance_scores": sum(len(d["scores"]) for d in decisions),
        "tool_results": len(by["ToolResult"]),
        "ballots": len(by["Ballot"]),
        "vote_results": len(by["VoteResult"]),
        "dead_letters": len(by["DeadLetter"]),
    }


def test_clickhouse_holds_every_event_once_even_after_a_replay(migrated):
    settings = migrated
    publish_samples(settings)
    publish_messages(settings, 500, f"sink-ch-{uuid.uuid4().hex[:6]}", duplicates=100)
    for app_id, name in (("agora", "clickhouse"), ("agora-replay", "clickhouse-replay")):
        # The second sink is a new consumer group: it replays every topic from the start.
        sink = start_sink(settings, name, "clickhouse", AGORA_APP_ID=app_id)
        try:
            wait_until(lambda: lag(settings, f"{app_id}-sink-clickhouse") == 0,
                       timeout_s=180, what="the clickhouse sink to catch up", interval_s=1)
        finally:
            stop(sink, grace_s=15)
        assert_clickhouse_exact(settings)
    client = open_client(settings)
    try:
        for name in analytics.load():
            columns, rows = analytics.run(client, name, {"hours": "100000"})
            assert columns and rows, f"{name} returned no rows"
        assert_panels_run(client)
    finally:
        client.close()


def test_a_clickhouse_sink_killed_mid_batch_loses_and_duplicates_nothing(migrated):
    """chdb lives in the sink's process, so a SIGKILL stops the engine mid-insert too."""
    settings = migrated
    total = 30000
    publish_messages(settings, total, f"sink-ch-kill-{uuid.uuid4().hex[:6]}")
    port = free_port()
    sink = start_sink(settings, "clickhouse-killed", "clickhouse", AGORA_METRICS_PORT=str(port))
    tracked = members(sink)
    written = 0.0

    def some_written() -> bool:
        nonlocal written
        written = metric(port, "agora_sink_events_total", sink="clickhouse",
                         outcome="written") or 0.0
        return written >= 1000

    wait_until(some_written, timeout_s=120, what="a first thousand events", interval_s=0.05)
    os.killpg(sink.pgid, signal.SIGKILL)
    wait_until(lambda: not survivors(tracked), timeout_s=10, what="the killed sink gone")
    assert written < total, written  # killed in the middle of the stream
    group = f"{settings.app_id}-sink-clickhouse"
    again = start_sink(settings, "clickhouse-restarted", "clickhouse")
    try:
        wait_until(lambda: lag(settings, group) == 0, timeout_s=180,
                   what="the restarted clickhouse sink to catch up", interval_s=1)
    finally:
        stop(again, grace_s=15)
    assert_clickhouse_exact(settings)
