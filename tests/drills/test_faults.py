"""Fault drills on the real local stack: a worker SIGKILLed mid-stream, Triton and
Postgres stopped for 10 s, the gateway stopped while clients stream. After each one
the books must balance: every message of the drill's channel has exactly one
relevance decision, every selected agent exactly one task and one reply, every event
exactly one row in Postgres and in ClickHouse, and streaming clients resume from
their last cursor without missing or repeating an event.

Each drill has a channel of its own, with one agent that every question mentions
(so that it is selected), and workers in a consumer group of their own that starts
at the topics' current ends (a killed member's ghost stays in its own group, and
nobody answers earlier tests' messages again). Duplicates of an event id on a topic
are allowed (at-least-once); its consumers must drop them. The sinks run in the
default sink groups, so the sink tests that run after this module carry on from
them; the rows are checked for the drill's channel only, since other tests' events
are not this module's business.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import psycopg
import pytest

from conftest import metric
from gateway import auth
from gateway import cursor as cursors
from gateway.chat import channel_event
from gateway.client import Client
from gateway.registry import Registry
from gateway.server import signer
from gateway.tail import TOPICS as SHOWN_TOPICS
from gateway.tls import channel_credentials
from ops import devstack as stack
from ops.core.kafka import ensure_topics
from ops.core.net import free_port
from ops.devstack import smoke
from ops.devstack.process import Proc, members, stop, survivors, wait_until
from ops.store import migrate
from ops.store.clickhouse import open_client
from schemas.topics import (
    ALL,
    CHAT_MESSAGES,
    INFERENCE_TASKS,
    RELEVANCE_DECISIONS,
    REPLY_CHUNKS,
    TOOL_APPROVED,
    TOOL_REQUESTS,
    TOOL_RESULTS,
    VOTE_RESULTS,
    VOTES,
)
from support.accounting import lag, start_sink
from support.kafka import TopicReader, publish_events, start_at_ends

pytestmark = pytest.mark.stack
TAPPED = (CHAT_MESSAGES, RELEVANCE_DECISIONS, INFERENCE_TASKS, REPLY_CHUNKS, TOOL_REQUESTS,
          TOOL_APPROVED, TOOL_RESULTS, VOTES, VOTE_RESULTS)
OUTAGE_S = 10
QUESTIONS = (
    "The orders API returns 502 since the deploy. Which backend logs should I check?",
    "Our PostgreSQL query listing invoices takes 4 seconds. Which index is missing?",
    "The Kafka consumer lag of the billing service keeps growing. Where do I start?",
    "Memory of the search API grows until it is killed. How do I find the leak?",
)


# ------------------------------------------------------------------ reading the topics


class Tap(TopicReader):
    """Every record of one channel on the topics that carry channel events, with its
    position, read from the topics' beginning and then as they grow."""

    def __init__(self, settings, channel: str):
        super().__init__(settings, *(t.name for t in TAPPED),
                         keep=lambda name, record: record.get("channel_id") == channel)
        self.channel = channel


# ------------------------------------------------------------------------- accounting


def ids_by(records: list[dict], key) -> dict:
    """Distinct event ids per ``key(record)``."""
    found: dict = defaultdict(set)
    for record in records:
        found[key(record)].add(record["event_id"])
    return found


def account(tap: Tap, inputs: list[dict]) -> dict[str, int]:
    """Assert the books of the drill's channel; returns a few counts."""
    messages = {m["event_id"]: m for m in tap.named("ChatMessage", CHAT_MESSAGES.name)}
    lost = [m["event_id"] for m in inputs if m["event_id"] not in messages]
    assert not lost, f"inputs not on the chat topic: {lost}"
    decisions = tap.named("RelevanceDecision")
    per_message = ids_by(decisions, lambda d: d["message_id"])
    wrong = {m: len(per_message.get(m, ())) for m in messages if len(per_message.get(m, ())) != 1}
    assert not wrong, f"messages without exactly one decision (id -> distinct decisions): {wrong}"
    # Copies of one decision (a replay) must agree on who answers.
    selections = defaultdict(set)
    for d in decisions:
        selections[d["event_id"]].add(tuple(d["selected"]))
    assert all(len(s) == 1 for s in selections.values()), selections
    selected = {(d["message_id"], agent) for d in decisions for agent in d["selected"]}
    unselected = [(m["event_id"], a) for m in inputs for a in m["mentions"]
                  if (m["event_id"], a) not in selected]
    assert not unselected, f"mentioned agents not selected: {unselected}"
    tasks = ids_by(tap.named("InferenceTask"), lambda t: (t["message_id"], t["agent_id"]))
    assert set(tasks) == selected, (set(tasks) ^ selected)
    assert all(len(ids) == 1 for ids in tasks.values()), tasks
    replies = ids_by([m for m in messages.values() if m["author_kind"] == "AGENT" and m["task_id"]],
                     lambda m: (m["reply_to"], m["author_id"]))
    missing = selected - set(replies)
    assert not missing, f"selected agents without a reply (message, agent): {missing}"
    assert set(replies) == selected, set(replies) - selected
    assert all(len(ids) == 1 for ids in replies.values()), replies
    copies = len(tap.named("ChatMessage", CHAT_MESSAGES.name)) - len(messages)
    return {"messages": len(messages), "replies": len(replies), "duplicate_copies": copies}


def settle(tap: Tap, inputs: list[dict], timeout_s: float = 300) -> dict[str, int]:
    """Wait until the books balance and the channel has been quiet for a while."""
    deadline = time.monotonic() + timeout_s
    while True:
        tap.poll(1.0)
        try:
            account(tap, inputs)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            continue
        tap.drain(3.0)
        return account(tap, inputs)


def replies_to(tap: Tap, inputs: list[dict]) -> int:
    asked = {m["event_id"] for m in inputs}
    return len({m["event_id"] for m in tap.named("ChatMessage", CHAT_MESSAGES.name)
                if m["reply_to"] in asked and m["author_kind"] == "AGENT"})


def generating(tap: Tap, inputs: list[dict]) -> bool:
    """A reply to ``inputs`` is out and another is being generated (chunks, no reply)."""
    asked = {m["event_id"] for m in inputs}
    replies = {m["event_id"] for m in tap.named("ChatMessage", CHAT_MESSAGES.name)
               if m["reply_to"] in asked}
    streaming = {c["message_id"] for c in tap.named("ReplyChunk") if c["reply_to"] in asked}
    return bool(replies) and bool(streaming - replies)


# ------------------------------------------------------------------------------ sinks


SINK_GROUP = "{app_id}-sink-{store}"
POSTGRES_TABLES = {  # table -> (event, topics the event comes from)
    "messages": ("ChatMessage", (CHAT_MESSAGES.name,)),
    "relevance_decisions": ("RelevanceDecision", (RELEVANCE_DECISIONS.name,)),
    "inference_tasks": ("InferenceTask", (INFERENCE_TASKS.name,)),
    "tool_requests": ("ToolRequest", (TOOL_REQUESTS.name, TOOL_APPROVED.name, VOTES.name)),
    "tool_runs": ("ToolResult", (TOOL_RESULTS.name,)),
}
CLICKHOUSE_TABLES = {"chat_messages": "messages", "relevance_decisions": "relevance_decisions",
                     "inference_tasks": "inference_tasks", "tool_requests": "tool_requests",
                     "tool_results": "tool_runs"}


def expected_rows(tap: Tap) -> dict[str, list]:
    """The rows the channel's events must make: one per distinct event id."""
    rows = {table: sorted({e.record["event_id"] for e in tap.entries
                           if e.name == name and e.topic in topics})
            for table, (name, topics) in POSTGRES_TABLES.items()}
    scores = {}
    for d in tap.named("RelevanceDecision"):
        scores[d["event_id"]] = sorted((d["event_id"], s["agent_id"]) for s in d["scores"])
    rows["relevance_scores"] = sorted(pair for pairs in scores.values() for pair in pairs)
    return rows


class Sinks:
    """A Postgres and a ClickHouse sink in the default sink groups."""

    def __init__(self, settings, name: str):
        self.settings = settings
        self.port = free_port()
        self.postgres = start_sink(settings, f"fault-{name}", AGORA_METRICS_PORT=str(self.port))
        try:
            self.clickhouse = start_sink(settings, f"fault-{name}-clickhouse", "clickhouse")
        except BaseException:
            stop(self.postgres, grace_s=10)
            raise

    def postgres_rows(self, channel: str) -> dict[str, list]:
        with psycopg.connect(self.settings.postgres_dsn, connect_timeout=5) as conn:
            return {table: sorted(r[0] for r in conn.execute(
                f"SELECT event_id FROM {table} WHERE channel_id = %s", (channel,)))
                for table in POSTGRES_TABLES}

    def clickhouse_rows(self, channel: str) -> dict[str, list]:
        client = open_client(self.settings)  # the sink is stopped: the chdb directory is ours
        try:
            rows = {table: sorted(r[0] for r in client.query(
                f"SELECT event_id FROM {table} WHERE channel_id = {{c:String}}",
                parameters={"c": channel}).result_rows) for table in CLICKHOUSE_TABLES}
            rows["relevance_scores"] = sorted(tuple(r) for r in client.query(
                "SELECT event_id, agent_id FROM relevance_scores WHERE channel_id = {c:String}",
                parameters={"c": channel}).result_rows)
            return rows
        finally:
            client.close()

    def check(self, tap: Tap) -> None:
        """Every event of the channel is exactly one row in each store."""
        tap.drain()
        expected = expected_rows(tap)
        postgres = {t: expected[t] for t in POSTGRES_TABLES}
        found: dict = {}

        def stored() -> bool:
            found.update(self.postgres_rows(tap.channel))
            return found == postgres

        try:
            wait_until(stored, timeout_s=90, what="the Postgres sink to store the drill",
                       interval_s=1)
        except TimeoutError:
            assert found == postgres
        group = SINK_GROUP.format(app_id=self.settings.app_id, store="clickhouse")
        wait_until(lambda: lag(self.settings, group) == 0, timeout_s=120, interval_s=1,
                   what="the ClickHouse sink to catch up")
        stop(self.clickhouse, grace_s=15)
        rows = self.clickhouse_rows(tap.channel)
        assert rows == {table: expected[source] for table, source in
                        [*CLICKHOUSE_TABLES.items(), ("relevance_scores", "relevance_scores")]}

    def close(self) -> None:
        stop(self.clickhouse, grace_s=15)
        stop(self.postgres, grace_s=10)


@contextmanager
def sinks(settings, name: str):
    running = Sinks(settings, name)
    try:
        yield running
    finally:
        running.close()


# ---------------------------------------------------------------------------- drills


@pytest.fixture(scope="module")
def ready(settings):
    ensure_topics(settings, ALL)
    migrate.postgres(settings)
    return settings


@dataclass
class Drill:
    name: str
    channel: str
    agent: str
    env: dict[str, str]  # the workers' consumer group


def new_drill(settings, name: str) -> Drill:
    """A channel with one agent, and a consumer group for the drill's workers that
    starts at every topic's current end."""
    channel = f"fault-{name}-{uuid.uuid4().hex[:6]}"
    agent = f"{channel}-backend"
    registry = Registry(settings)
    profile, _ = registry.create("developer-backend", channel, agent_id=agent)
    # No tools: one reply per question, no tool votes that ask for more generations.
    registry.grant(agent, [p for p in profile["permissions"] if p.startswith("tool:")],
                   revoke=True)
    group = f"agora-fault-{name}-{uuid.uuid4().hex[:4]}"
    start_at_ends(settings, group, [t.name for t in ALL])
    return Drill(name, channel, agent, {"AGORA_APP_ID": group})


def questions(drill: Drill, count: int, start: int = 0) -> list[dict]:
    asked = []
    for i in range(start, start + count):
        message = smoke.chat_message(drill.channel, QUESTIONS[i % len(QUESTIONS)],
                                     author_id="human:drill")
        message["mentions"] = [drill.agent]
        asked.append(message)
    return asked


def post(settings, messages: list[dict]) -> list[dict]:
    publish_events(settings, CHAT_MESSAGES.name,
                  [("ChatMessage", m["channel_id"], m) for m in messages])
    return messages


def service_proc(settings, name: str) -> Proc:
    return Proc(**stack.read_state(settings.stack_dir)["services"][name]["proc"])


def bring_back(settings) -> None:
    """``stack up``: restarts what is down, on its old ports."""
    stack.up(settings.stack_dir, progress=lambda line: None)


@contextmanager
def drilled(settings, name: str):
    """A drill's channel, its tap, and both sinks running."""
    drill = new_drill(settings, name)
    tap = Tap(settings, drill.channel)
    try:
        with sinks(settings, name) as running:
            yield drill, tap, running
    finally:
        tap.close()


def balanced(tap: Tap, asked: list[dict], worker: Proc) -> None:
    """Once the books balance the worker stops, and they still do: every question has
    its one reply."""
    counts = settle(tap, asked)
    stop(worker, grace_s=15)
    account(tap, asked)
    assert replies_to(tap, asked) == len(asked) <= counts["replies"]


def test_a_worker_killed_mid_stream_is_restarted_and_loses_nothing(ready, workers):
    with drilled(ready, "kill") as (drill, tap, running):
        worker = workers("kill-a", **drill.env)
        asked = post(ready, questions(drill, 3))
        # Killed mid-stream: a reply published, the next one being generated, the
        # others waiting.
        wait_until(lambda: tap.poll(0.2) or generating(tap, asked), timeout_s=180,
                   what="a reply out and the next one being generated", interval_s=0)
        tracked = members(worker)
        os.killpg(worker.pgid, signal.SIGKILL)
        wait_until(lambda: not survivors(tracked), timeout_s=10, what="the killed worker gone")
        tap.poll(1)
        assert replies_to(tap, asked) < len(asked)
        balanced(tap, asked, workers("kill-b", **drill.env))
        running.check(tap)


def test_triton_stopped_for_ten_seconds_then_back(ready, workers):
    with drilled(ready, "triton") as (drill, tap, running):
        worker = workers("triton", **drill.env)
        before = post(ready, questions(drill, 2))
        # Stopped while a reply is being generated.
        wait_until(lambda: tap.poll(0.2) or tap.named("ReplyChunk"), timeout_s=180,
                   what="a reply being generated", interval_s=0)
        stop(service_proc(ready, "triton"), grace_s=10)
        during = post(ready, questions(drill, 1, start=2))
        time.sleep(OUTAGE_S)
        bring_back(ready)
        balanced(tap, before + during, worker)
        # The worker felt the outage, and waited it out.
        log = (ready.stack_dir / "logs" / "worker-triton.log").read_text()
        assert "inference_retry" in log and "Crashed" not in log
        running.check(tap)


def test_postgres_stopped_for_ten_seconds_under_the_sinks(ready, workers):
    with drilled(ready, "postgres") as (drill, tap, running):
        worker = workers("postgres", **drill.env)
        before = post(ready, questions(drill, 2))
        wait_until(lambda: tap.poll(0.2) or replies_to(tap, before) >= 1, timeout_s=180,
                   what="a first reply", interval_s=0)
        stop(service_proc(ready, "postgres"), sig=signal.SIGINT, grace_s=20)
        during = post(ready, questions(drill, 1, start=2))
        wait_until(lambda: metric(running.port, "agora_sink_paused", sink="postgres") == 1,
                   timeout_s=60, what="the Postgres sink to pause")
        time.sleep(OUTAGE_S)
        bring_back(ready)
        balanced(tap, before + during, worker)
        running.check(tap)
        assert metric(running.port, "agora_sink_paused", sink="postgres") == 0


# ---------------------------------------------------------------------------- gateway


class Follower(threading.Thread):
    """A client streaming a channel; whenever its stream ends, it reconnects with the
    last cursor it received."""

    def __init__(self, address: str, token: str, channel: str, credentials):
        super().__init__(daemon=True)
        self.address, self.token, self.channel = address, token, channel
        self.credentials = credentials
        self.events: list = []
        self.sessions = 0  # streams opened (1 + reconnections)
        self.cursor: str | None = None
        self.ended: list[str] = []  # how each stream ended
        self.stopping = threading.Event()
        self._call = None
        self._lock = threading.Lock()

    def run(self) -> None:
        with Client(self.address, self.token, self.credentials) as client:
            while not self.stopping.is_set():
                try:
                    call = client.stream(self.channel, cursor=self.cursor)
                except grpc.RpcError:
                    time.sleep(0.2)  # the gateway is down: try again
                    continue
                with self._lock:
                    self._call = call
                    self.sessions += 1
                if self.stopping.is_set():
                    call.cancel()
                try:
                    for event in call:
                        self.events.append(event)
                        self.cursor = event.cursor
                    self.ended.append("OK")
                except grpc.RpcError as exc:
                    self.ended.append(exc.code().name)

    def close(self) -> None:
        self.stopping.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        self.join(30)
        assert not self.is_alive()

    def positions(self, first: tuple[str, int, int],
                  shown: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) of every event received: the one entry of its
        cursor that moved onto a shown record since the previous event (the first
        event's is given). Other entries move past records the stream skips: the
        incidents the tail reads for StreamIncidents."""
        found, previous = [], None
        for event in list(self.events):
            offsets = cursors.decode(event.cursor, self.channel)
            if previous is None:
                found.append(first)
            else:
                moved = [(*k, o - 1) for k, o in offsets.items() if o != previous.get(k)]
                onto = [m for m in moved if m in shown]
                assert len(onto) == 1, moved
                found.append(onto[0])
            previous = offsets
        return found


def shown(tap: Tap) -> list[tuple[str, int, int]]:
    """Positions of the channel's records that its stream shows."""
    return [(e.topic, e.partition, e.offset) for e in tap.entries if e.topic in SHOWN_TOPICS
            and channel_event(e, {}) is not None]


def test_the_gateway_stopped_while_clients_stream(ready, workers):
    address, tls = ready.gateway_address, channel_credentials(ready)
    with drilled(ready, "gateway") as (drill, tap, running):
        token = auth.issue(signer(ready), "human:drill", [drill.channel],
                           ready.gateway_token_max_s)

        def ask(text: str) -> str:
            with Client(address, token, tls) as client:
                return client.post(drill.channel, text, mentions=[drill.agent]).message_id

        followers = [Follower(address, token, drill.channel, tls) for _ in range(3)]
        try:
            worker = workers("gateway-drill", **drill.env)
            for follower in followers:
                follower.start()
            wait_until(lambda: all(f.sessions for f in followers), timeout_s=30,
                       what="the clients subscribed")
            before = ask(QUESTIONS[0])
            wait_until(lambda: all(f.events for f in followers), timeout_s=60,
                       what="the clients to receive the post")
            stop(service_proc(ready, "gateway"), grace_s=10)
            down = post(ready, questions(drill, 1, start=1))  # straight to Kafka
            time.sleep(OUTAGE_S)
            bring_back(ready)
            after = ask(QUESTIONS[2])
            tap.drain()
            inputs = {m["event_id"]: m for m in tap.named("ChatMessage")}
            asked = [inputs[before], *down, inputs[after]]
            balanced(tap, asked, worker)

            # Every client got every event of the channel exactly once, in spite of
            # the gateway going away in the middle.
            tap.drain()
            expected = shown(tap)
            [first] = [(e.topic, e.partition, e.offset) for e in tap.entries
                       if e.name == "ChatMessage" and e.record["event_id"] == before]
            wait_until(lambda: all(len(f.events) >= len(expected) for f in followers),
                       timeout_s=60, what="the clients to catch up")
            time.sleep(1)  # a repeat, if any, would arrive now
            for follower in followers:
                got = follower.positions(first, expected)
                assert len(set(got)) == len(got), "an event came twice"
                assert sorted(got) == sorted(expected)
                assert follower.sessions >= 2 and follower.ended, follower.ended  # reconnected
            running.check(tap)
        finally:
            for follower in followers:
                follower.close()
