"""The gateway's agent, tool, vote and analytics services, called directly as the
interceptor would call them (the caller in its context variable): their conversions
of events, their refusals, and their effects on the real local stack (registry,
topics, Postgres) and on a chdb directory of their own."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta

import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from psycopg_pool import AsyncConnectionPool

from gateway import analytics as analytics_service
from gateway import auth
from gateway.agents import AgentService, agent
from gateway.analytics import AnalyticsService, param_value, typed
from gateway.guard import _CALLER
from gateway.publish import Recent
from gateway.registry import Registry
from gateway.tools import ToolService, tool, tool_result
from gateway.validation import InvalidField
from gateway.votes import VoteService, vote_update
from ops.core.config import Settings
from ops.core.errors import AlreadyExists, Conflict, Denied, NotFound, Unavailable
from ops.core.kafka import AsyncProducer, ensure_topics
from ops.store import analytics, migrate
from ops.store.clickhouse import open_client
from ops.store.clickhouse_rows import COLUMNS
from ops.store.clickhouse_rows import rows as clickhouse_rows
from ops.store.postgres import execute
from ops.store.postgres_rows import rows as postgres_rows
from schemas.agora.v1 import agents_pb2, analytics_pb2, tools_pb2, votes_pb2
from schemas.convert import enum, symbol
from schemas.topics import ALL, TOOL_REQUESTS, VOTES
from streams.domain.registry import with_permissions
from streams.domain.tools import catalog
from support.samples import SAMPLES, sample, uid

KEY = "k" * 64
KEYS = auth.KeyRing(hs256_secret=auth.signing_key(KEY))


def who(subject: str, *channels: str, role: str = "admin") -> auth.Caller:
    token = auth.issue(auth.Signer.hs256(KEY), subject, [f"{c}:{role}" for c in channels], 600)
    return auth.verify(KEYS, token, max_lifetime_s=900)


def call(method, request, caller: auth.Caller):
    """``method(request, None)`` as the guard runs it, for ``caller``."""
    async def main():
        _CALLER.set(caller)
        return await method(request, None)
    return asyncio.run(main())


async def as_caller(method, request, caller: auth.Caller):
    """``await method(request, None)`` as the guard runs it, for ``caller``."""
    _CALLER.set(caller)
    return await method(request, None)


async def refused_async(kind: type[Exception], method, request, caller: auth.Caller
                        ) -> Exception:
    with pytest.raises(kind) as raised:
        await as_caller(method, request, caller)
    return raised.value


def refused(kind: type[Exception], method, request, caller: auth.Caller) -> Exception:
    with pytest.raises(kind) as raised:
        call(method, request, caller)
    return raised.value


def suffix() -> str:
    return uuid.uuid4().hex[:8]


# --- conversions -------------------------------------------------------------------------

def test_enums_map_both_ways():
    for kind in (agents_pb2.AgentState, tools_pb2.ToolStatus, votes_pb2.VoteType,
                 votes_pb2.VoteStrategy, votes_pb2.VoteStatus, votes_pb2.VoteOutcome,
                 votes_pb2.BallotRejectReason):
        for value in kind.values()[1:]:
            assert enum(kind, symbol(kind, value)) == value
        assert symbol(kind, 0) is None and symbol(kind, 99) is None


def test_agent_from_its_profile():
    _, profile = sample("profile-new")
    got = agent(profile)
    assert (got.agent_id, got.name, got.template) == ("developer-backend", "Backend Dev",
                                                      "developer-backend")
    assert list(got.tools) == ["calculator", "shell"] and list(got.channels) == ["general"]
    assert list(got.permissions) == ["tool:calculator", "vote:cast"]
    assert got.state == agents_pb2.AGENT_STATE_ACTIVE and got.state_reason == ""
    assert got.performance_score == 0.7 and got.system_prompt == "be brief"
    assert got.created_at.ToDatetime().timestamp() == profile["created_at"].timestamp()
    assert got.updated_at.ToDatetime().timestamp() == profile["updated_at"].timestamp()
    writer = agent(sample("profile-writer")[1])
    assert writer.state == agents_pb2.AGENT_STATE_MAINTENANCE
    assert writer.state_reason == "model upgrade" and not writer.tools


def test_tool_result_from_its_event():
    _, record = sample("run-ok")
    ok = tool_result(record)
    assert (ok.result_id, ok.request_id, ok.vote_id) == (record["event_id"], uid("req-ok"),
                                                         uid("vote-1"))
    assert ok.status == tools_pb2.TOOL_STATUS_OK and ok.output == "total 0\n" and not ok.error
    assert list(ok.artifacts) == ["/tmp/a.txt"] and ok.duration.ToMilliseconds() == 850
    assert ok.started_at.ToDatetime().timestamp() == record["started_at"].timestamp()
    denied = tool_result(sample("run-denied")[1])
    assert denied.status == tools_pb2.TOOL_STATUS_DENIED and "lacks" in denied.error
    assert not denied.HasField("started_at") and denied.vote_id == ""
    assert denied.finished_at.seconds > 0 and denied.duration.ToMilliseconds() == 0


def test_vote_updates_for_every_event_on_the_vote_topics():
    kinds = {}
    for name, record in SAMPLES:
        update = vote_update(name, record)
        if name in ("VoteProposal", "Ballot", "BallotRejected", "VoteResult"):
            kinds.setdefault(name, []).append(update.WhichOneof("update"))
        else:
            assert update is None, name
    assert kinds == {"VoteProposal": ["opened"] * 2, "Ballot": ["ballot_cast"] * 3,
                     "BallotRejected": ["ballot_rejected"] * 2, "VoteResult": ["closed"] * 2}

    opened = vote_update(*sample("proposal-1")).opened
    assert opened.vote_id == uid("vote-1") and opened.status == votes_pb2.VOTE_STATUS_OPEN
    assert opened.vote_type == votes_pb2.VOTE_TYPE_TOOL_USAGE
    assert opened.strategy == votes_pb2.VOTE_STRATEGY_WEIGHTED
    assert dict(opened.weights) == {"human:maya": 2.0} and opened.quorum == 0.5
    assert list(opened.options) == ["yes", "no"] and opened.tool_request_id == uid("req-ok")
    assert not opened.ballots and not opened.HasField("result")
    assert vote_update(*sample("proposal-2")).opened.tool_request_id == ""

    cast = vote_update(*sample("ballot-3")).ballot_cast
    assert (cast.ballot_id, cast.voter_id, cast.choice, cast.rationale) == (
        uid("ballot-3"), "human:maya", "yes", "fine")

    rejected = vote_update(*sample("reject-1")).ballot_rejected
    assert rejected.ballot_id == uid("ballot-1") and rejected.channel_id == "general"
    assert rejected.reason == votes_pb2.BALLOT_REJECT_REASON_INVALID_CHOICE
    late = vote_update(*sample("reject-2")).ballot_rejected
    assert late.reason == votes_pb2.BALLOT_REJECT_REASON_LATE and late.channel_id == ""

    closed = vote_update(*sample("result-1")).closed
    assert closed.outcome == votes_pb2.VOTE_OUTCOME_PASSED and closed.winning_option == "yes"
    assert dict(closed.tally) == {"yes": 2.0, "no": 0.0, "abstain": 0.0}
    assert (closed.ballots_counted, closed.eligible_count) == (1, 2)
    none = vote_update(*sample("result-2")).closed
    assert none.outcome == votes_pb2.VOTE_OUTCOME_NO_QUORUM and none.winning_option == ""
    assert not none.tally and none.tool_request_id == ""


def test_tools_of_the_catalog():
    for name, definition in catalog.load().items():
        got = tool(definition)
        assert got.name == name and MessageToDict(got.parameters) == definition.parameters
        assert got.limits.wall_s == definition.limits.wall_s
        assert symbol(votes_pb2.VoteStrategy, got.vote_strategy) == definition.vote_strategy
    assert tool(catalog.load()["shell"]).needs_vote


def test_permissions_granted_then_revoked():
    profile = {"permissions": ["vote:cast", "tool:calculator"], "tools": ["calculator"]}
    assert with_permissions(profile, grant=["tool:shell", "vote:cast"],
                            revoke=["tool:calculator"]) == {
        "permissions": ["vote:cast", "tool:shell"], "tools": ["shell"]}
    assert with_permissions(profile) == profile


def test_recent_answers_retries_and_refuses_a_reused_key():
    recent = Recent(size=2)
    request = votes_pb2.CastBallotRequest(vote_id="v", choice="yes", idempotency_key="k")
    answer = votes_pb2.Ballot(ballot_id="b")
    assert recent.get("b", request) is None
    recent.put("b", request, answer)
    assert recent.get("b", votes_pb2.CastBallotRequest.FromString(
        request.SerializeToString())) is answer
    with pytest.raises(Conflict):
        recent.get("b", votes_pb2.CastBallotRequest(vote_id="v", choice="no",
                                                    idempotency_key="k"))
    recent.put("c", request, answer)
    recent.put("d", request, answer)
    assert recent.get("b", request) is None  # the oldest was forgotten


# --- refusals before any I/O -------------------------------------------------------------

def test_vote_requests_are_checked_field_by_field():
    service = VoteService(Settings(), producer=None, pool=None)
    alice = who("human:alice", "ops")

    def field(**fields) -> str:
        request = votes_pb2.StartVoteRequest(**{"channel_id": "ops", "title": "Ship?",
                                                "idempotency_key": "k", **fields})
        return refused(InvalidField, service.StartVote, request, alice).field

    assert field(title=" ") == "title"
    assert field(vote_type=votes_pb2.VOTE_TYPE_TOOL_USAGE) == "vote_type"
    assert field(vote_type=42) == "vote_type"
    assert field(strategy=42) == "strategy"
    assert field(options=["only"]) == "options"
    assert field(options=["a", "abstain"]) == "options[1]"
    assert field(options=["a", "a"]) == "options[1]"
    assert field(options=["a", " "]) == "options[1]"
    assert field(eligible_voters=["bob", "no spaces"]) == "eligible_voters[1]"
    assert field(weights={"bob": -1.0}) == "weights[bob]"
    assert field(weights={"bob": math.inf}) == "weights[bob]"
    assert field(quorum=1.5) == "quorum"
    assert field(quorum=math.nan) == "quorum"
    assert field(deadline=Duration(seconds=-5)) == "deadline"
    assert field(deadline=Duration(seconds=86400 * 31)) == "deadline"
    assert field(idempotency_key="") == "idempotency_key"
    refused(Denied, service.StartVote, votes_pb2.StartVoteRequest(
        channel_id="elsewhere", title="Ship?", idempotency_key="k"), alice)
    ballot = refused(InvalidField, service.CastBallot, votes_pb2.CastBallotRequest(
        vote_id="v1", channel_id="ops", idempotency_key="k"), alice)
    assert ballot.field == "choice"
    refused(Denied, service.CastBallot, votes_pb2.CastBallotRequest(
        vote_id="v1", channel_id="elsewhere", choice="yes", idempotency_key="k"), alice)


def test_tool_requests_are_checked_against_the_catalog():
    service = ToolService(producer=None)
    alice = who("human:alice", "ops")

    def field(arguments: dict | None = None, **fields) -> str:
        request = tools_pb2.RequestToolRequest(**{
            "channel_id": "ops", "agent_id": "developer-backend", "tool": "calculator",
            "idempotency_key": "k", **fields})
        request.arguments.update({"expression": "1+1"} if arguments is None else arguments)
        return refused(InvalidField, service.RequestTool, request, alice)

    assert field(tool="teleport").field == "tool"
    bad = field({"expression": 42})
    assert bad.field == "arguments" and "expression" in bad.reason
    assert field({}).field == "arguments"
    assert field({"expression": "1", "x": math.nan}).field == "arguments"
    assert field(agent_id="").field == "agent_id"
    assert field(idempotency_key="").field == "idempotency_key"
    refused(Denied, service.RequestTool, tools_pb2.RequestToolRequest(
        channel_id="elsewhere", agent_id="a", tool="calculator", idempotency_key="k"), alice)


def test_analytics_parameters_are_typed():
    query = analytics.load()["relevance_selection"]
    hours, channel = query.params
    assert param_value(hours, analytics_pb2.TypedValue(int_value=5)) == 5
    assert param_value(channel, analytics_pb2.TypedValue(string_value="ops")) == "ops"
    for value, reason in ((analytics_pb2.TypedValue(string_value="5"), "needs int_value"),
                          (analytics_pb2.TypedValue(int_value=-1), "out of range"),
                          (analytics_pb2.TypedValue(int_value=2**32), "out of range"),
                          (analytics_pb2.TypedValue(), "needs int_value")):
        with pytest.raises(InvalidField) as raised:
            param_value(hours, value)
        assert raised.value.field == "params[hours]" and reason in raised.value.reason
    assert param_value(analytics.Param("x", "Float64", 0.0),
                       analytics_pb2.TypedValue(int_value=2)) == 2.0
    stamp = typed(sample("run-ok")[1]["finished_at"])
    assert param_value(analytics.Param("t", "DateTime64(3)", None), stamp) == \
        sample("run-ok")[1]["finished_at"]
    assert typed(None) == analytics_pb2.TypedValue()
    assert typed(True).bool_value and typed(2**64).string_value == str(2**64)
    assert typed([1, "a"]).string_value == '[1, "a"]'


def test_analytics_need_a_token_for_every_channel():
    service = AnalyticsService(Settings(clickhouse_url="http://127.0.0.1:9/agora"))
    narrow = who("human:alice", "ops")
    refused(Denied, service.ListQueries, analytics_pb2.ListQueriesRequest(), narrow)
    refused(Denied, service.RunQuery, analytics_pb2.RunQueryRequest(name="tool_runs"), narrow)
    admin = who("human:admin", "*")
    listed = call(service.ListQueries, analytics_pb2.ListQueriesRequest(), admin).queries
    assert {q.name for q in listed} == set(analytics.load())
    runs = next(q for q in listed if q.name == "tool_runs")
    assert runs.title and runs.params[0].name == "hours" and runs.params[0].type == "UInt32"
    assert runs.params[0].default_value.int_value == 24
    refused(NotFound, service.RunQuery, analytics_pb2.RunQueryRequest(name="nope"), admin)
    unknown = refused(InvalidField, service.RunQuery, analytics_pb2.RunQueryRequest(
        name="tool_runs", params={"agent": analytics_pb2.TypedValue(string_value="x")}), admin)
    assert unknown.field == "params[agent]"
    down = refused(Unavailable, service.RunQuery, analytics_pb2.RunQueryRequest(
        name="tool_runs"), admin)
    assert "cannot open ClickHouse" in str(down)


# --- analytics on a chdb directory of its own --------------------------------------------

HOLD = textwrap.dedent("""
    import sys
    from ops.core.config import Settings
    from ops.store.clickhouse import open_client
    client = open_client(Settings(clickhouse_url=sys.argv[1]))
    print("held", flush=True)
    sys.stdin.read()
    client.close()
""")


@pytest.fixture
def chdb_settings(tmp_path) -> Settings:
    settings = Settings(clickhouse_url=f"chdb://{tmp_path}")
    client = open_client(settings)
    try:
        migrate.clickhouse(client)
        for name, record in SAMPLES:
            for table, row in clickhouse_rows(name, record):
                client.insert(table, [row], column_names=COLUMNS[table])
    finally:
        client.close()
    return settings


def test_run_query_answers_typed_columns_and_rows(chdb_settings, monkeypatch):
    service, admin = AnalyticsService(chdb_settings), who("human:admin", "*")
    request = analytics_pb2.RunQueryRequest(
        name="tool_runs", params={"hours": analytics_pb2.TypedValue(int_value=100_000)})
    answer = call(service.RunQuery, request, admin)
    columns = [(c.name, c.type) for c in answer.columns]
    assert columns[:3] == [("tool", "LowCardinality(String)"),
                           ("status", "LowCardinality(String)"), ("requests", "UInt64")]
    table = {(r.values[0].string_value, r.values[1].string_value): r.values[2].int_value
             for r in answer.rows}
    assert table == {("calculator", "DENIED"): 1, ("shell", "OK"): 1}
    assert not answer.truncated
    mean = columns.index(("mean_ms", "Float64"))
    assert {r.values[mean].WhichOneof("kind") for r in answer.rows} == {"float_value"}

    monkeypatch.setattr(analytics_service, "MAX_ROWS", 1)
    cut = call(service.RunQuery, request, admin)
    assert len(cut.rows) == 1 and cut.truncated

    # Defaults apply: the samples are two hours old, inside the default 24 hours.
    minutes = call(service.RunQuery, analytics_pb2.RunQueryRequest(
        name="messages_per_minute", params={"hours": analytics_pb2.TypedValue(int_value=3)}),
        admin)
    assert minutes.columns[0].type.startswith("DateTime")
    assert all(r.values[0].WhichOneof("kind") == "time_value" for r in minutes.rows)
    assert minutes.rows


def test_a_chdb_directory_held_by_another_process_is_unavailable(chdb_settings):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, chdb_settings.clickhouse],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        error = refused(Unavailable, AnalyticsService(chdb_settings).RunQuery,
                        analytics_pb2.RunQueryRequest(name="tool_runs"), who("h:admin", "*"))
        assert "held by another process" in str(error) and "sink" in str(error)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    answer = call(AnalyticsService(chdb_settings).RunQuery,
                  analytics_pb2.RunQueryRequest(name="tool_runs"), who("h:admin", "*"))
    assert answer.columns  # free again once the holder is gone


# --- against the local stack -------------------------------------------------------------

@pytest.mark.stack
def test_agents_are_created_listed_paused_resumed_and_changed(settings):
    """Through the gateway's live view of the registry: each call sees every change
    published before it, its own and the CLI's (``Registry``)."""
    ensure_topics(settings, ALL)
    asyncio.run(_agents_through_the_service(settings))


async def _agents_through_the_service(settings):
    service, registry = AgentService(settings), Registry(settings)
    await service.start()
    try:
        room, other, tag = f"gs-{suffix()}", f"gs-{suffix()}", suffix()
        dev, analyst = f"dev-{tag}", f"analyst-{tag}"
        alice, both = who("human:alice", room), who("human:ops", room, other)
        outsider = who("human:eve", other)

        created = await as_caller(service.CreateAgent, agents_pb2.CreateAgentRequest(
            template="developer-backend", channel_id=room, agent_id=dev, name="Dev"), alice)
        assert (created.agent_id, created.name, list(created.channels)) == (dev, "Dev", [room])
        assert created.state == agents_pb2.AGENT_STATE_ACTIVE
        assert registry.load()[dev]["channels"] == [room]
        await as_caller(service.CreateAgent, agents_pb2.CreateAgentRequest(
            template="analyst-data", channel_id=room, agent_id=analyst), alice)

        got = await as_caller(service.GetAgent, agents_pb2.GetAgentRequest(agent_id=dev), alice)
        assert (got.agent_id, got.name, list(got.channels)) == (dev, "Dev", [room])
        first = await as_caller(service.ListAgents, agents_pb2.ListAgentsRequest(
            channel_id=room, page_size=1), alice)
        assert [a.agent_id for a in first.agents] == [analyst] and first.next_page_token
        second = await as_caller(service.ListAgents, agents_pb2.ListAgentsRequest(
            channel_id=room, page_size=1, page_token=first.next_page_token), alice)
        assert [a.agent_id for a in second.agents] == [dev] and not second.next_page_token
        mine = (await as_caller(service.ListAgents, agents_pb2.ListAgentsRequest(),
                                alice)).agents
        assert {a.agent_id for a in mine} == {dev, analyst}
        assert all(room in a.channels for a in mine)
        assert not (await as_caller(service.ListAgents, agents_pb2.ListAgentsRequest(),
                                    outsider)).agents

        paused = await as_caller(service.PauseAgent, agents_pb2.PauseAgentRequest(
            agent_id=dev, reason="lunch"), alice)
        assert (paused.state, paused.state_reason) == (agents_pb2.AGENT_STATE_PAUSED, "lunch")
        assert registry.load()[dev]["state"] == "PAUSED"
        resumed = await as_caller(service.ResumeAgent, agents_pb2.ResumeAgentRequest(
            agent_id=dev), alice)
        assert (resumed.state, resumed.state_reason) == (agents_pb2.AGENT_STATE_ACTIVE, "")
        changed = await as_caller(service.UpdateAgent, agents_pb2.UpdateAgentRequest(
            agent_id=dev, grant_permissions=["tool:shell"], revoke_permissions=["vote:cast"]),
            alice)
        assert "shell" in changed.tools and "tool:shell" in changed.permissions
        assert "vote:cast" not in changed.permissions
        assert registry.load()[dev]["permissions"] == list(changed.permissions)

        # Joining a second channel needs both; then changes need both too.
        await refused_async(Denied, service.CreateAgent, agents_pb2.CreateAgentRequest(
            template="developer-backend", channel_id=other, agent_id=dev), outsider)
        joined = await as_caller(service.CreateAgent, agents_pb2.CreateAgentRequest(
            template="developer-backend", channel_id=other, agent_id=dev), both)
        assert sorted(joined.channels) == sorted([room, other])
        assert (await as_caller(service.GetAgent, agents_pb2.GetAgentRequest(agent_id=dev),
                                alice)).channels == joined.channels
        await refused_async(Denied, service.PauseAgent,
                            agents_pb2.PauseAgentRequest(agent_id=dev), alice)
        await refused_async(Denied, service.GetAgent,
                            agents_pb2.GetAgentRequest(agent_id=analyst), outsider)
        await refused_async(Denied, service.CreateAgent, agents_pb2.CreateAgentRequest(
            template="developer-backend", channel_id=f"gs-{suffix()}"), alice)
        assert registry.load()[dev]["state"] == "ACTIVE"  # nothing refused was published

        exists = await refused_async(AlreadyExists, service.CreateAgent,
                                     agents_pb2.CreateAgentRequest(
                                         template="creative-writer", channel_id=room,
                                         agent_id=dev), alice)
        assert "developer-backend" in str(exists)
        for method, request in (
                (service.GetAgent, agents_pb2.GetAgentRequest(agent_id=f"ghost-{tag}")),
                (service.PauseAgent, agents_pb2.PauseAgentRequest(agent_id=f"ghost-{tag}")),
                (service.UpdateAgent, agents_pb2.UpdateAgentRequest(
                    agent_id=f"ghost-{tag}", grant_permissions=["vote:cast"]))):
            await refused_async(NotFound, method, request, both)
        bad = await refused_async(InvalidField, service.CreateAgent,
                                  agents_pb2.CreateAgentRequest(template="wizard",
                                                                channel_id=room), alice)
        assert bad.field == "template" and "developer-backend" in bad.reason
        assert (await refused_async(InvalidField, service.UpdateAgent,
                                    agents_pb2.UpdateAgentRequest(agent_id=dev),
                                    alice)).field == "grant_permissions"
        assert (await refused_async(InvalidField, service.ListAgents,
                                    agents_pb2.ListAgentsRequest(page_token="not a token"),
                                    alice)).field == "page_token"

        # A change published by someone else (the CLI) is seen by the next call.
        await asyncio.to_thread(registry.set_state, analyst, "PAUSED", "from the CLI")
        seen = await as_caller(service.GetAgent, agents_pb2.GetAgentRequest(agent_id=analyst),
                               alice)
        assert (seen.state, seen.state_reason) == (agents_pb2.AGENT_STATE_PAUSED, "from the CLI")
    finally:
        await service.stop()


@pytest.mark.stack
def test_tool_requests_votes_and_ballots_are_published(settings, reader):
    ensure_topics(settings, ALL)
    room, tag = f"gs-{suffix()}", suffix()
    alice = who("human:alice", room)
    requests, votes = reader(TOOL_REQUESTS.name), reader(VOTES.name)

    async def main():
        _CALLER.set(alice)
        producer = AsyncProducer(settings)
        try:
            tools = ToolService(producer)
            request = tools_pb2.RequestToolRequest(
                channel_id=room, agent_id=f"dev-{tag}", tool="text_formatter",
                reason="tidy up", idempotency_key=f"tool-{tag}")
            request.arguments.update({"text": "hello world", "operation": "wrap",
                                      "width": 40})
            first = await tools.RequestTool(request, None)
            again = await tools.RequestTool(request, None)
            other = tools_pb2.RequestToolRequest()
            other.CopyFrom(request)
            other.arguments["width"] = 50
            with pytest.raises(Conflict):
                await tools.RequestTool(other, None)
            # Calls racing with one key: one publishes; an identical one gets its answer,
            # a different one Conflict, though neither found an answer when it came in.
            request.idempotency_key = other.idempotency_key = f"race-{tag}"
            racing = await asyncio.gather(*(tools.RequestTool(r, None)
                                             for r in (request, request, other)),
                                          return_exceptions=True)

            service = VoteService(settings, producer, pool=None)
            start = votes_pb2.StartVoteRequest(
                channel_id=room, title="Ship on Friday?", options=["ship", "wait"],
                strategy=votes_pb2.VOTE_STRATEGY_QUALIFIED_MAJORITY, eligible_voters=[
                    "human:alice", "human:bob"], quorum=1.0, deadline=Duration(seconds=60),
                idempotency_key=f"vote-{tag}")
            opened = await service.StartVote(start, None)
            cast = await service.CastBallot(votes_pb2.CastBallotRequest(
                vote_id=opened.vote_id, channel_id=room, choice="ship", rationale="ready",
                idempotency_key=f"ballot-{tag}"), None)
            return first, again, racing, opened, cast
        finally:
            producer.close()

    first, again, racing, opened, cast = asyncio.run(main())
    assert again == first and first.reason == "tidy up"
    assert racing[0] == racing[1] and isinstance(racing[2], Conflict)
    requests.wait(lambda n, r: r["event_id"] == racing[0].request_id, timeout_s=30)
    requests.poll(1)
    assert sum(r["event_id"] == racing[0].request_id for _, r in requests.records) == 1
    [published] = requests.wait(lambda n, r: r["event_id"] == first.request_id, timeout_s=30)
    assert (published["channel_id"], published["agent_id"], published["tool"]) == (
        room, f"dev-{tag}", "text_formatter")
    assert json.loads(published["arguments_json"]) == {"text": "hello world",
                                                       "operation": "wrap", "width": 40}
    assert '"width": 40' in published["arguments_json"]  # an integer, as the schema wants

    assert opened.proposer_id == "human:alice" and opened.status == votes_pb2.VOTE_STATUS_OPEN
    assert opened.vote_type == votes_pb2.VOTE_TYPE_PROJECT_DECISION
    lasts = opened.deadline_at.ToDatetime() - opened.created_at.ToDatetime()
    assert lasts == timedelta(seconds=60)
    [proposal] = votes.wait(lambda n, r: n == "VoteProposal" and r["vote_id"] == opened.vote_id,
                            timeout_s=30)
    assert proposal["strategy"] == "QUALIFIED_MAJORITY" and proposal["quorum"] == 1.0
    assert proposal["options"] == ["ship", "wait"] and proposal["proposer_id"] == "human:alice"
    [ballot] = votes.wait(lambda n, r: n == "Ballot" and r["event_id"] == cast.ballot_id,
                          timeout_s=30)
    assert (ballot["voter_id"], ballot["choice"], ballot["channel_id"]) == (
        "human:alice", "ship", room)
    assert (cast.vote_id, cast.voter_id) == (opened.vote_id, "human:alice")


@pytest.fixture
def vote_settings(own_postgres):
    """Settings whose Postgres is a migrated schema of its own, holding the sample votes
    (the sink tests count the rows of the shared schema against the topics)."""
    with psycopg.connect(own_postgres.postgres_dsn) as conn:
        for name, record in SAMPLES:
            with conn.transaction():
                execute(conn, postgres_rows(name, record))
    return own_postgres


@pytest.mark.stack
def test_get_vote_reads_the_stored_vote(vote_settings):
    general, elsewhere = who("human:maya", "general"), who("human:eve", "random")

    async def main():
        async with AsyncConnectionPool(vote_settings.postgres_dsn, min_size=0,
                                       max_size=2) as pool:
            service = VoteService(vote_settings, producer=None, pool=pool)

            async def get(vote_id: str, caller: auth.Caller):
                _CALLER.set(caller)
                return await service.GetVote(votes_pb2.GetVoteRequest(vote_id=vote_id), None)

            first = await get(uid("vote-1"), general)
            second = await get(uid("vote-2"), general)
            refusals = []
            for vote_id, caller in ((uid("vote-1"), elsewhere), (uid("nope"), general)):
                try:
                    await get(vote_id, caller)
                except (Denied, NotFound) as exc:
                    refusals.append(type(exc))
            return first, second, refusals

    first, second, refusals = asyncio.run(main())
    assert refusals == [Denied, NotFound]
    assert first.status == votes_pb2.VOTE_STATUS_CLOSED and first.title == "Run shell?"
    assert first.vote_type == votes_pb2.VOTE_TYPE_TOOL_USAGE
    assert dict(first.weights) == {"human:maya": 2.0}
    assert [b.ballot_id for b in first.ballots] == [uid("ballot-3")]  # ballot-1 was rejected
    assert [r.ballot_id for r in first.rejections] == [uid("ballot-1")]
    assert first.result.outcome == votes_pb2.VOTE_OUTCOME_PASSED
    assert first.result.result_id == uid("result-1") and dict(first.result.tally)["yes"] == 2.0
    assert first.deadline_at == vote_update(*sample("proposal-1")).opened.deadline_at
    # Vote 2's result and rejection were stored before its proposal and ballot.
    assert second.status == votes_pb2.VOTE_STATUS_CLOSED and not second.ballots
    assert second.result.outcome == votes_pb2.VOTE_OUTCOME_NO_QUORUM
    assert [r.reason for r in second.rejections] == [votes_pb2.BALLOT_REJECT_REASON_LATE]
