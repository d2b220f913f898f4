"""The ``agora`` command line."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import psycopg
import typer
from google.protobuf.json_format import MessageToJson
from prometheus_client import start_http_server

from gateway import auth
from gateway.client import Client
from gateway.describe import Transcript, incident_line
from gateway.registry import Registry
from gateway.server import key_ring, serve, signer
from gateway.sessions import Grant, TokenStore
from gateway.tls import channel_credentials, server_credentials
from ops import devstack as local_stack
from ops.core.config import Settings, documented
from ops.core.errors import AgoraError
from ops.core.kafka import ensure_topics, publish
from ops.core.logs import configure
from ops.devstack import demo as scenario
from ops.devstack.services import gateway_files, save_signing_keys
from ops.store import analytics as queries
from ops.store import migrate
from ops.store.clickhouse import ClickHouseStore, open_client
from ops.store.oncall import OncallStore
from ops.store.postgres import PostgresStore
from schemas import codec
from schemas.agora.v1 import (
    agents_pb2,
    auth_pb2,
    chat_pb2,
    incidents_pb2,
    knowledge_pb2,
    votes_pb2,
)
from schemas.convert import enum, symbol
from schemas.topics import ALL, TOOL_REQUESTS, VOTES
from streams import sinks as consumer
from streams.domain.knowledge.chunks import location
from streams.domain.registry import templates
from streams.domain.responder.actions import VOTE_TYPES
from streams.domain.tools.catalog import load
from streams.domain.tools.records import new_request
from streams.domain.votes.records import new_ballot, new_proposal
from streams.domain.votes.tally import STRATEGIES
from streams.worker import run

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Agora: a streaming backend for channels shared by AI agents and people.")


def _group(name: str, summary: str) -> typer.Typer:
    group = typer.Typer(no_args_is_help=True, help=summary)
    app.add_typer(group, name=name)
    return group


stack_app = _group("stack", "The embedded local stack (no Docker).")
topics_app = _group("topics", "Kafka topics of the flow.")
agents_app = _group("agents", "The agent registry (agora.agents).")
tools_app = _group("tools", "The tool catalog and tool requests.")
vote_app = _group("vote", "Votes: open one, cast a ballot.")
db_app = _group("db", "Database schemas.")
sink_app = _group("sink", "Sinks from Kafka into the stores.")
token_app = _group("token", "Bearer tokens of the gRPC gateway.")
gateway_app = _group("gateway", "The gRPC gateway (agora.v1).")
kb_app = _group("kb", "The knowledge base agents answer from (through the gateway).")
oncall_app = _group("oncall", "The on-call rota the notify action pages (Postgres).")
incident_app = _group("incident", "Incidents the workers detect: list, timeline, "
                                  "acknowledge, resolve (through the gateway).")


def _settings() -> Settings:
    settings = Settings()
    configure(settings)
    return settings


def _progress(line: str) -> None:
    # Progress goes to stderr so that stdout stays parseable.
    typer.echo(line, err=True)


@stack_app.command("up")
def stack_up() -> None:
    """Start every service (idempotent; repairs a stale state from a crashed run)."""
    settings = _settings()
    try:
        local_stack.up(settings.stack_dir, progress=_progress)
    except ValueError as exc:  # a setting that cannot work, named in the message
        typer.echo(f"agora stack up: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"stack is up; state in {settings.stack_dir.resolve()}", err=True)


@stack_app.command("status")
def stack_status() -> None:
    """Each service, its state and address. Exit 1 unless all are up."""
    rows = local_stack.status(_settings().stack_dir)
    for row in rows:
        pid = f"pid {row.pid}" if row.pid else "in-process"
        typer.echo(f"{row.name:<11} {row.state:<6} {row.address:<45} {pid:<11} {row.describe}")
    if any(row.state != "up" for row in rows):
        raise typer.Exit(1)


@stack_app.command("env")
def stack_env() -> None:
    """Print the AGORA_* exports of the running stack: eval "$(agora stack env)"."""
    values = local_stack.env(_settings().stack_dir)
    if not values:
        typer.echo("the stack is not up (agora stack up)", err=True)
        raise typer.Exit(1)
    for key, value in values.items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop every process the stack started, by process group, and clean up."""
    local_stack.down(_settings().stack_dir, progress=_progress)


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic with its partition count and cleanup policy (idempotent)."""

    for t in ensure_topics(_settings(), ALL):
        typer.echo(f"{t.name:<28} partitions={t.partitions} {t.action}")


@app.command("worker")
def worker() -> None:
    """Run a worker: relevance and responder agents (workers form one consumer group)."""

    run(_settings())


def _registry():
    return Registry(_settings())


def _local(call):
    """Run a registry change on Kafka directly; a refusal (an unknown template, agent,
    state, an id taken) prints its message, exit 1."""
    try:
        return call()
    except AgoraError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _through_gateway():
    """A gateway client when AGORA_GATEWAY_TOKEN is set: the agents and vote commands
    then go through the API, under the token's identity and scopes. Without a token
    they write to Kafka directly, as operators on the cluster do."""
    return _client() if _settings().gateway_token.get_secret_value() else None


def _profile(agent) -> dict:
    """An agents.v1 Agent in the registry's profile shape, for the same output."""

    return {"agent_id": agent.agent_id, "name": agent.name, "template": agent.template,
            "state": symbol(agents_pb2.AgentState, agent.state),
            "channels": list(agent.channels), "tools": list(agent.tools),
            "permissions": list(agent.permissions)}


@agents_app.command("create")
def agents_create(
    template: str = typer.Option(..., "--template", "-t", help="Template name."),
    channel: str = typer.Option(..., "--channel", "-c", help="Channel the agent joins."),
    agent_id: str = typer.Option(None, "--id", help="Agent id (default: the template name)."),
    name: str = typer.Option(None, "--name", help="Display name."),
) -> None:
    """Create an agent from a template (or add a channel to an existing one)."""
    if client := _through_gateway():
        with client:
            profile, action = _profile(_rpc(lambda: client.agents.CreateAgent(
                agents_pb2.CreateAgentRequest(template=template, channel_id=channel,
                                              agent_id=agent_id or "", name=name or "")))), "saved"
    else:
        profile, action = _local(lambda: _registry().create(template, channel, agent_id, name))
    typer.echo(f"{profile['agent_id']} {action}: {profile['name']} in "
               f"{', '.join(profile['channels'])}")


@agents_app.command("list")
def agents_list() -> None:
    """Every agent with its state, channels and tools."""
    if client := _through_gateway():
        profiles = {}
        with client:
            for page in _pages(lambda token: client.agents.ListAgents(
                    agents_pb2.ListAgentsRequest(page_token=token))):
                profiles.update((a.agent_id, _profile(a)) for a in page.agents)
    else:
        profiles = _registry().load()
    if not profiles:
        typer.echo(f"no agents yet; templates: {', '.join(templates())}", err=True)
    for p in sorted(profiles.values(), key=lambda p: p["agent_id"]):
        typer.echo(f"{p['agent_id']:<22} {p['state']:<11} {p['template']:<19} "
                   f"channels={','.join(p['channels'])} tools={','.join(p['tools'])}")


def _set_state(agent_id: str, state: str, reason: str | None) -> None:
    if client := _through_gateway():
        with client:
            profile = _profile(_rpc(
                lambda: client.agents.PauseAgent(agents_pb2.PauseAgentRequest(
                    agent_id=agent_id, reason=reason or "")) if state == "PAUSED" else
                client.agents.ResumeAgent(agents_pb2.ResumeAgentRequest(agent_id=agent_id))))
    else:
        profile = _local(lambda: _registry().set_state(agent_id, state, reason))
    typer.echo(f"{profile['agent_id']} is {profile['state']}")


@agents_app.command("pause")
def agents_pause(agent_id: str, reason: str = typer.Option(None, help="Why.")) -> None:
    """Stop selecting the agent for new messages."""
    _set_state(agent_id, "PAUSED", reason)


@agents_app.command("resume")
def agents_resume(agent_id: str) -> None:
    """Make a paused agent active again."""
    _set_state(agent_id, "ACTIVE", None)


@agents_app.command("grant")
def agents_grant(agent_id: str, permissions: list[str] = typer.Argument(
        ..., help="Permissions, e.g. tool:shell vote:cast.")) -> None:
    """Grant permissions beyond the agent's template (tool:NAME also adds the tool)."""
    _change_permissions(agent_id, permissions, revoke=False)


@agents_app.command("revoke")
def agents_revoke(agent_id: str, permissions: list[str] = typer.Argument(...)) -> None:
    """Take permissions (and tools, for tool:NAME) away from an agent."""
    _change_permissions(agent_id, permissions, revoke=True)


def _change_permissions(agent_id: str, permissions: list[str], revoke: bool) -> None:
    if client := _through_gateway():
        change = {"revoke_permissions" if revoke else "grant_permissions": permissions}
        with client:
            profile = _profile(_rpc(lambda: client.agents.UpdateAgent(
                agents_pb2.UpdateAgentRequest(agent_id=agent_id, **change))))
    else:
        profile = _local(lambda: _registry().grant(agent_id, permissions, revoke=revoke))
    typer.echo(f"{agent_id}: permissions={','.join(profile['permissions'])} "
               f"tools={','.join(profile['tools'])}")


@tools_app.command("list")
def tools_list() -> None:
    """Every tool: category, whether it needs a vote, limits and description."""

    for tool in load().values():
        vote = f"vote {tool.vote_strategy.lower()}" if tool.needs_vote else "no vote"
        typer.echo(f"{tool.name:<16} {tool.category:<13} {vote:<24} cpu {tool.limits.cpu_s}s "
                   f"wall {tool.limits.wall_s:g}s mem {tool.limits.memory_mb}MB  "
                   f"{tool.description}")


@tools_app.command("request")
def tools_request(
    tool: str = typer.Argument(..., help="Tool name (agora tools list)."),
    agent_id: str = typer.Option(..., "--agent", "-a", help="Agent the tool runs for."),
    channel: str = typer.Option(..., "--channel", "-c", help="Channel of the request."),
    arguments: str = typer.Option("{}", "--args", help="Arguments as a JSON object."),
    reason: str = typer.Option("requested from the CLI", "--reason", help="Why."),
) -> None:
    """Ask to run a tool for an agent; prints the request id (results: agora.tool.results)."""

    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--args is not JSON: {exc}") from None
    request = new_request(agent_id, channel, tool, parsed, reason)
    publish(_settings(), TOOL_REQUESTS.name, [(channel, codec.encode("ToolRequest", request))])
    typer.echo(request["event_id"])


@vote_app.command("start")
def vote_start(
    title: str = typer.Argument(..., help="The question put to the voters."),
    channel: str = typer.Option(..., "--channel", "-c"),
    proposer: str = typer.Option("human:cli", "--proposer",
                                 help="Without a gateway token; through it, the token's subject."),
    vote_type: str = typer.Option("PROJECT_DECISION", "--type",
                                  help="PROJECT_DECISION, CONFLICT_RESOLUTION or "
                                       "RESOURCE_ALLOCATION."),
    strategy: str = typer.Option("SIMPLE_MAJORITY", "--strategy",
                                 help="SIMPLE_MAJORITY, QUALIFIED_MAJORITY, CONSENSUS, WEIGHTED."),
    option: list[str] = typer.Option(None, "--option", help="A choice (default yes and no)."),
    voter: list[str] = typer.Option(None, "--voter",
                                    help="An eligible voter (default: the channel's agents)."),
    weight: list[str] = typer.Option(None, "--weight", help="VOTER=WEIGHT for WEIGHTED."),
    quorum: float = typer.Option(0.5, "--quorum", min=0, max=1),
    deadline_s: float = typer.Option(None, "--deadline-s", help="Default AGORA_VOTE_DEADLINE_S."),
) -> None:
    """Open a vote; prints its id (results: agora.vote.results and the channel)."""

    if vote_type == "TOOL_USAGE":
        raise typer.BadParameter("tool-usage votes are opened by tool requests")
    if vote_type not in VOTE_TYPES:
        raise typer.BadParameter(f"--type must be one of {', '.join(VOTE_TYPES)}")
    if strategy not in STRATEGIES:
        raise typer.BadParameter(f"strategy must be one of {', '.join(STRATEGIES)}")
    try:
        weights = {k: float(v) for k, v in (w.split("=", 1) for w in weight or [])}
    except ValueError:
        raise typer.BadParameter("--weight takes VOTER=NUMBER") from None
    settings = _settings()
    if client := _through_gateway():
        request = votes_pb2.StartVoteRequest(
            channel_id=channel, title=title, options=option or [],
            vote_type=enum(votes_pb2.VoteType, vote_type),
            strategy=enum(votes_pb2.VoteStrategy, strategy), eligible_voters=voter or [],
            weights=weights, quorum=quorum, idempotency_key=str(uuid.uuid4()))
        if deadline_s is not None:  # otherwise the gateway's default deadline
            request.deadline.FromTimedelta(timedelta(seconds=deadline_s))
        with client:
            started = _rpc(lambda: client.votes.StartVote(request))
        typer.echo(started.vote_id)
        return
    proposal = new_proposal(channel, proposer, title, vote_type=vote_type, strategy=strategy,
                            options=option, eligible_voters=voter, weights=weights,
                            quorum=quorum, deadline_s=deadline_s or settings.vote_deadline_s)
    publish(settings, VOTES.name, [(proposal["vote_id"], codec.encode("VoteProposal", proposal))])
    typer.echo(proposal["vote_id"])


@vote_app.command("cast")
def vote_cast(
    vote_id: str,
    choice: str = typer.Argument(..., help="An option of the vote, or abstain."),
    voter: str = typer.Option(None, "--voter",
                              help="Without a gateway token; through it, the token's subject."),
    channel: str = typer.Option(..., "--channel", "-c"),
    rationale: str = typer.Option("", "--rationale"),
) -> None:
    """Cast a ballot; a rejected one gets a BallotRejected on agora.vote.results."""

    if client := _through_gateway():
        with client:
            cast = _rpc(lambda: client.votes.CastBallot(votes_pb2.CastBallotRequest(
                vote_id=vote_id, channel_id=channel, choice=choice, rationale=rationale,
                idempotency_key=str(uuid.uuid4()))))
        typer.echo(cast.ballot_id)
        return
    if not voter:
        raise typer.BadParameter("--voter is required without a gateway token")

    ballot = new_ballot(vote_id, channel, voter, choice, rationale)
    publish(_settings(), VOTES.name, [(vote_id, codec.encode("Ballot", ballot))])
    typer.echo(ballot["event_id"])


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (tracked, idempotent) and refresh reference data."""

    settings = _settings()

    def report(store: str, applied: list[str]) -> None:
        typer.echo(f"{store}: {len(applied)} migration(s) applied"
                   + (f" ({', '.join(applied)})" if applied else ", up to date"))

    try:
        report("postgres", migrate.postgres(settings, progress=_progress))
        client = open_client(settings)
        try:
            report("clickhouse", migrate.clickhouse(client, progress=_progress))
        finally:
            client.close()
    except migrate.MigrationError as exc:
        typer.echo(f"migration failed: {exc}", err=True)
        raise typer.Exit(1) from None


UNTIL_IDLE = typer.Option(None, "--until-idle-s", min=0.1,
                          help="Stop once this long passes without a new record: a one-off "
                               "catch-up (with embedded chdb, before analytics can open it).")


@sink_app.command("postgres")
def sink_postgres(
    batch_size: int = typer.Option(500, min=1, help="Most events per transaction."),
    batch_wait_s: float = typer.Option(0.2, min=0.01, help="Longest wait to fill a batch."),
    until_idle_s: float = UNTIL_IDLE,
) -> None:
    """Consume every topic into Postgres: batched, idempotent, commits after the DB."""

    _sink("postgres", PostgresStore, batch_size, batch_wait_s, until_idle_s)


@sink_app.command("clickhouse")
def sink_clickhouse(
    batch_size: int = typer.Option(2000, min=1, help="Most events per insert round."),
    batch_wait_s: float = typer.Option(1.0, min=0.01, help="Longest wait to fill a batch."),
    until_idle_s: float = UNTIL_IDLE,
) -> None:
    """Consume every topic into ClickHouse (chdb or HTTP): batched by size and time,
    replays dropped, offsets committed after the insert. Applies the ClickHouse
    migrations itself, since with chdb it owns the database directory."""

    _sink("clickhouse", ClickHouseStore, batch_size, batch_wait_s, until_idle_s)


def _sink(name: str, store_type, batch_size: int, batch_wait_s: float,
          until_idle_s: float | None) -> None:
    settings = _settings()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    consumer.run(settings, name, store_type(settings), batch_size=batch_size,
                 batch_wait_s=batch_wait_s, until_idle_s=until_idle_s)


@app.command("analytics")
def analytics(
    name: str = typer.Argument(None, help="Query name; none lists the queries."),
    param: list[str] = typer.Option(None, "--param", "-p", help="NAME=VALUE (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per row."),
) -> None:
    """Run a predefined ClickHouse query (ops/store/analytics/*.sql) as a table or JSON."""

    if name is None:
        for query in queries.load().values():
            params = " ".join(f"{p.name}={p.default!r}" for p in query.params)
            typer.echo(f"{query.name:<30} {query.title}  [{params}]")
        return
    try:
        given = dict(item.split("=", 1) for item in param or [])
    except ValueError:
        raise typer.BadParameter("--param takes NAME=VALUE") from None
    settings = _settings()
    try:
        client = open_client(settings)
    except Exception as exc:  # noqa: BLE001 - chdb held by the running sink, server down...
        typer.echo(f"cannot open ClickHouse at {settings.clickhouse}: {exc}"
                   + (" (embedded chdb: stop the ClickHouse sink, which owns the directory)"
                      if settings.clickhouse.startswith("chdb") else ""), err=True)
        raise typer.Exit(1) from None
    try:
        columns, rows = queries.run(client, name, given)
    except (KeyError, ValueError) as exc:
        raise typer.BadParameter(str(exc.args[0])) from None
    finally:
        client.close()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(dict(zip(columns, row)), default=str))
        return
    cells = [columns] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    if not rows:
        typer.echo("(no rows)", err=True)


def _when(value: str | None, default: datetime | None) -> datetime | None:
    if value is None:
        return default
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO time (2026-12-05T18:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@oncall_app.command("add")
def oncall_add(
    channel: str = typer.Argument(..., help="Channel whose incidents the person answers."),
    person: str = typer.Argument(..., help="Who is on call, e.g. human:maya."),
    alerts: str = typer.Option(None, "--alerts", help="Channel the alerts go to "
                               "(default: CHANNEL-oncall)."),
    start: str = typer.Option(None, "--from", help="Shift start, ISO time (default: now)."),
    end: str = typer.Option(None, "--until", help="Shift end, ISO time (default: open)."),
) -> None:
    """Put a person on call for a channel, from now or --from, until --until."""
    starts = _when(start, datetime.now(timezone.utc))
    ends = _when(end, None)
    if ends is not None and ends <= starts:
        raise typer.BadParameter("--until must come after --from")
    rota = OncallStore(_settings().postgres_dsn)
    try:
        rota.add(channel, person, alerts or f"{channel}-oncall", starts, ends)
    finally:
        rota.close()
    typer.echo(f"{person} on call for #{channel} from {starts:%Y-%m-%d %H:%M} UTC"
               + (f" until {ends:%Y-%m-%d %H:%M} UTC" if ends else "")
               + f"; alerts in #{alerts or channel + '-oncall'}")


@oncall_app.command("list")
def oncall_list(channel: str = typer.Argument(None, help="Only this channel.")) -> None:
    """The rota's shifts, by channel."""
    rota = OncallStore(_settings().postgres_dsn)
    try:
        shifts = rota.shifts(channel)
    finally:
        rota.close()
    for room, person, starts, ends, alerts in shifts:
        typer.echo(f"#{room:<20} {person:<20} {starts:%Y-%m-%d %H:%M} -> "
                   f"{f'{ends:%Y-%m-%d %H:%M}' if ends else 'open':<16} alerts in #{alerts}")
    if not shifts:
        typer.echo("(nobody on call)", err=True)


@gateway_app.command("serve")
def gateway_serve() -> None:
    """Serve the agora.v1 API on AGORA_GATEWAY_HOST:AGORA_GATEWAY_PORT until SIGTERM."""
    settings = _settings()
    try:  # no keys to verify tokens with, or no certificate: refused before starting
        key_ring(settings)
        server_credentials(settings)
    except (OSError, ValueError) as exc:
        typer.echo(f"the gateway cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    asyncio.run(serve(settings))


def _client():
    settings = _settings()

    token = settings.gateway_token.get_secret_value()
    if not token:
        typer.echo("no token: set AGORA_GATEWAY_TOKEN (agora token issue)", err=True)
        raise typer.Exit(1)
    return Client(settings.gateway_address, token, channel_credentials(settings))


def _pages(call):
    """Every page of a paged gateway call: ``call(page_token)``, until the last page."""
    token = ""
    while True:
        page = _rpc(lambda: call(token))
        yield page
        if not (token := page.next_page_token):
            return


def _rpc(call):
    """Run a gateway call; a refusal prints its status and message, exit 2."""
    try:
        return call()
    except grpc.RpcError as exc:
        typer.echo(f"{exc.code().name}: {exc.details()}", err=True)
        raise typer.Exit(2) from None


@app.command("post")
def post(
    channel: str = typer.Argument(..., help="Channel to post in."),
    text: str = typer.Argument(..., help="The message."),
    reply_to: str = typer.Option("", "--reply-to", help="Id of the message answered."),
    mention: list[str] = typer.Option(None, "--mention", "-m", help="An agent to address."),
    key: str = typer.Option(None, "--key", help="Idempotency key (default: a new UUID)."),
) -> None:
    """Post a message through the gateway as the token's subject; prints its id."""
    with _client() as client:
        message = _rpc(lambda: client.post(channel, text, reply_to, mention, key))
    typer.echo(message.message_id)


@app.command("rate")
def rate(
    message_id: str = typer.Argument(..., help="The agent's reply (its message id)."),
    verdict: str = typer.Argument(..., help="up (+1: it helped) or down (-1: it did not)."),
    comment: str = typer.Option("", "--comment", "-c", help="Why, in a few words."),
) -> None:
    """Rate an agent's reply: it moves the agent's performance score (once per reply)."""
    values = {"up": 1, "+1": 1, "down": -1}
    if verdict not in values:
        typer.echo("the verdict is up or down", err=True)
        raise typer.Exit(1)
    with _client() as client:
        found = _rpc(lambda: client.chat.RateReply(chat_pb2.RateReplyRequest(
            message_id=message_id, rating=values[verdict], comment=comment)))
    typer.echo(f"{found.rating_id}  {found.agent_id} rated {found.rating:+d} by {found.rater_id}")


@app.command("tail")
def tail(
    channel: str = typer.Argument(..., help="Channel to follow."),
    cursor: str = typer.Option(None, "--cursor", help="Resume after this event's cursor."),
    since: datetime = typer.Option(None, "--since", help="Start at this time (ISO 8601, UTC)."),
    as_json: bool = typer.Option(False, "--json",
                                 help="One JSON object per event, with its cursor."),
    explain: bool = typer.Option(False, "--explain",
                                 help="Relevance decisions with each agent's factors."),
) -> None:
    """Follow a channel live through the gateway: messages, agents' replies as they are
    written, decisions, tool results, votes."""

    since = since.replace(tzinfo=timezone.utc) if since and since.tzinfo is None else since
    transcript = Transcript((lambda _decision: True) if explain else None)
    with _client() as client:
        def follow():
            events = client.stream(channel, cursor, since)
            typer.echo(f"following {channel} (Ctrl-C stops)", err=True)  # subscribed now
            for event in events:
                if as_json:
                    typer.echo(MessageToJson(event, indent=None))
                elif text := transcript.feed(event):
                    sys.stdout.write(text)
                    sys.stdout.flush()  # a reply's chunks show as they come
        try:
            _rpc(follow)
        except KeyboardInterrupt:
            pass


def _document_line(doc) -> str:
    state = symbol(knowledge_pb2.DocumentState, doc.state)
    progress = f" {doc.chunks_embedded}/{doc.chunks} embedded" if state == "INGESTING" else \
        (f" {doc.chunks} passages" if state == "ACTIVE" else "")
    error = f": {doc.error}" if doc.error else ""
    return (f"{doc.document_id}  {state:<9} {doc.channel_id or '(workspace)':<14} "
            f"{doc.source}  \"{doc.title}\"{progress}{error}")


@kb_app.command("add")
def kb_add(
    paths: list[Path] = typer.Argument(..., help="Markdown, text, HTML or PDF files."),
    channel: str = typer.Option("", "--channel", "-c", help="The channel whose agents use it."),
    workspace: bool = typer.Option(False, "--workspace",
                                   help="For every channel (needs admin of '*')."),
    title: str = typer.Option("", "--title", help="Title to cite (one file only)."),
    wait: bool = typer.Option(True, "--wait/--no-wait",
                              help="Show the ingestion's progress until it is searchable."),
) -> None:
    """Add documents (a file added again under its name is a new version; the same
    content again changes nothing)."""
    if bool(channel) == workspace:
        typer.echo("name one scope: --channel C or --workspace", err=True)
        raise typer.Exit(1)
    if title and len(paths) > 1:
        typer.echo("--title names one document; add the files one by one", err=True)
        raise typer.Exit(1)
    limit = _settings().knowledge_max_bytes
    with _client() as client:
        for path in paths:
            if not path.is_file():
                typer.echo(f"{path}: not a file", err=True)
                raise typer.Exit(1)
            if path.stat().st_size > limit:
                typer.echo(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, over the "
                           f"{limit / 2**20:.1f} MiB limit (AGORA_KNOWLEDGE_MAX_BYTES)", err=True)
                raise typer.Exit(2)
            doc = _rpc(lambda: client.add_document(path.read_bytes(), path.name, channel,
                                                   title))
            shown = set()

            def progress(doc, name=path.name) -> None:
                if (doc.chunks_embedded, doc.chunks) not in shown:
                    shown.add((doc.chunks_embedded, doc.chunks))
                    _progress(f"{name}: {doc.chunks_embedded}/{doc.chunks or '?'} "
                              "passages embedded")

            if wait:
                doc = _rpc(lambda d=doc, p=progress: client.ingested(d, interval_s=0.5,
                                                                     progress=p))
            typer.echo(_document_line(doc))
            if doc.state == knowledge_pb2.DOCUMENT_STATE_FAILED:
                raise typer.Exit(2)


@kb_app.command("list")
def kb_list(
    channel: str = typer.Option("", "--channel", "-c",
                                help="Also this channel's documents (else the workspace's)."),
    removed: bool = typer.Option(False, "--removed", help="Include removed documents."),
) -> None:
    """The documents of the workspace, and of a channel."""
    with _client() as client:
        for page in _pages(lambda token: client.knowledge.ListDocuments(
                knowledge_pb2.ListDocumentsRequest(channel_id=channel, include_removed=removed,
                                                   page_token=token))):
            for doc in page.documents:
                typer.echo(_document_line(doc))


@kb_app.command("remove")
def kb_remove(document_id: str = typer.Argument(..., help="As kb list shows it.")) -> None:
    """Remove a document: its passages leave search at once."""
    with _client() as client:
        doc = _rpc(lambda: client.knowledge.RemoveDocument(
            knowledge_pb2.RemoveDocumentRequest(document_id=document_id)))
    typer.echo(_document_line(doc))


@kb_app.command("search")
def kb_search(
    query: str = typer.Argument(..., help="A question or key words."),
    channel: str = typer.Option("", "--channel", "-c", help="Search as in this channel."),
    limit: int = typer.Option(5, "--limit", "-n", help="Passages to show."),
) -> None:
    """The passages an agent answering in the channel would be given."""
    with _client() as client:
        found = _rpc(lambda: client.knowledge.Search(knowledge_pb2.SearchRequest(
            channel_id=channel, query=query, limit=limit)))
    for i, p in enumerate(found.passages, 1):
        typer.echo(f"[{i}] {location(p.title, p.heading)} (score {p.score:.4f}, vector "
                   f"#{p.vector_rank or '-'}, text #{p.text_rank or '-'}, {p.chunk_id[:8]})")
        typer.echo(f"    {' '.join(p.content.split())[:400]}")


@incident_app.command("list")
def incident_list(
    channel: str = typer.Option("", "--channel", "-c", help="One channel (default: all "
                                                            "you see)."),
    resolved: bool = typer.Option(False, "--all", help="Resolved incidents too."),
) -> None:
    """Incidents, newest first."""
    with _client() as client:
        for page in _pages(lambda token: client.incidents.ListIncidents(
                incidents_pb2.ListIncidentsRequest(channel_id=channel, include_resolved=resolved,
                                                   page_token=token))):
            for found in page.incidents:
                typer.echo(incident_line(found))


@incident_app.command("show")
def incident_show(incident_id: str = typer.Argument(..., help="As incident list shows it.")
                  ) -> None:
    """An incident and its timeline: messages, decisions, replies, actions, changes."""
    with _client() as client:
        detail = _rpc(lambda: client.incidents.GetIncident(
            incidents_pb2.GetIncidentRequest(incident_id=incident_id)))
    typer.echo(incident_line(detail.incident))
    for entry in detail.timeline:
        typer.echo(f"  {entry.time.ToDatetime():%H:%M:%S}  {entry.kind:<12} "
                   f"{entry.actor_id:<16} {entry.summary}")


@incident_app.command("ack")
def incident_ack(incident_id: str = typer.Argument(...),
                 note: str = typer.Option("", "--note", help="Kept with the change.")) -> None:
    """Acknowledge an incident: you are on it."""
    with _client() as client:
        found = _rpc(lambda: client.incidents.Acknowledge(
            incidents_pb2.ChangeIncidentRequest(incident_id=incident_id, note=note)))
    typer.echo(incident_line(found))


@incident_app.command("resolve")
def incident_resolve(incident_id: str = typer.Argument(...),
                     note: str = typer.Option("", "--note", help="The resolution.")) -> None:
    """Resolve an incident (and its ticket)."""
    with _client() as client:
        found = _rpc(lambda: client.incidents.Resolve(
            incidents_pb2.ChangeIncidentRequest(incident_id=incident_id, note=note)))
    typer.echo(incident_line(found))


def _signer():
    try:
        found = signer(_settings())
    except (OSError, ValueError) as exc:
        typer.echo(f"cannot read the signing keys: {exc}", err=True)
        raise typer.Exit(1) from None
    if found is None:
        typer.echo("no signing key: set AGORA_GATEWAY_SIGNING_KEYS (a private JWKS; agora "
                   "stack up makes one), or AGORA_GATEWAY_JWT_KEY for development", err=True)
        raise typer.Exit(1)
    return found


@gateway_app.command("files")
def gateway_files_command(directory: Path = typer.Argument(
        ..., help="Where to put them (kept when already there).")) -> None:
    """Make what a gateway needs for TLS and RS256 tokens: a local CA and a server
    certificate for 127.0.0.1/localhost, a signing key (private JWKS, 0600) and its
    public JWKS. For compose: agora gateway files ./secrets/gateway"""

    for name, path in gateway_files(directory).items():
        typer.echo(f"{name:<8} {path}")


@token_app.command("issue")
def token_issue(
    subject: str = typer.Argument(..., help="Identity of the bearer, e.g. human:alice; the "
                                            "author of what it posts."),
    channel: list[str] = typer.Option(
        None, "--channel", "-c", help="CHANNEL[:ROLE], role viewer, member (default) or admin; "
                                      "'*' for every channel. Repeatable."),
    admin: bool = typer.Option(False, "--admin", help="A workspace administrator."),
    ttl_s: int = typer.Option(None, "--ttl-s", min=1,
                              help="Lifetime in seconds (default AGORA_GATEWAY_TOKEN_TTL_S; at "
                                   "most AGORA_GATEWAY_TOKEN_MAX_S)."),
    refresh: bool = typer.Option(False, "--refresh",
                                 help="Also print a refresh token (AuthService.Refresh)."),
) -> None:
    """Print an access token for the gateway (and a refresh token with --refresh)."""

    settings = _settings()
    if not channel and not admin:
        raise typer.BadParameter("give at least one --channel ('*' for all) or --admin")
    ttl_s = ttl_s or settings.gateway_token_ttl_s
    if ttl_s > settings.gateway_token_max_s:
        raise typer.BadParameter(f"--ttl-s {ttl_s} is over AGORA_GATEWAY_TOKEN_MAX_S "
                                 f"({settings.gateway_token_max_s}): use a refresh token")
    try:
        roles = auth.parse_roles(channel or [])
        token = auth.issue(_signer(), subject, channel or [], ttl_s, admin=admin)
    except ValueError as exc:  # a malformed subject, channel or role
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    shown = ", ".join(f"{c} ({r.name.lower()})" for c, r in sorted(roles.items()))
    typer.echo(f"token for {subject}{' (admin)' if admin else ''} on {shown or 'no channel'}, "
               f"valid {ttl_s}s", err=True)
    typer.echo(token)
    if refresh:

        try:
            kept, _ = TokenStore(settings.postgres_dsn).new_refresh(
                Grant(subject, roles, admin), settings.gateway_refresh_ttl_s)
        except psycopg.Error as exc:
            typer.echo(f"cannot store the refresh token ({exc.__class__.__name__}: "
                       f"{str(exc).splitlines()[0]}); is Postgres up and `agora db migrate` "
                       "done?", err=True)
            raise typer.Exit(1) from None
        typer.echo(kept)


@token_app.command("refresh")
def token_refresh(refresh_token: str = typer.Argument(
        ..., help="A refresh token (from agora token issue --refresh or a previous refresh); "
                  "'-' reads it from stdin.")) -> None:
    """Redeem a refresh token at the gateway (AuthService.Refresh): prints the new access
    token, then the new refresh token. The one given is spent."""

    settings = _settings()
    token = sys.stdin.readline().strip() if refresh_token == "-" else refresh_token
    with Client(settings.gateway_address, "", channel_credentials(settings)) as client:
        pair = _rpc(lambda: client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=token),
                                                timeout=30))
    typer.echo(f"access token valid until {pair.access_expires_at.ToDatetime():%c} UTC",
               err=True)
    typer.echo(pair.access_token)
    typer.echo(pair.refresh_token)


@token_app.command("rotate-key")
def token_rotate_key(algorithm: str = typer.Option("RS256", help="RS256 or ES256.")) -> None:
    """Add a new signing key to AGORA_GATEWAY_SIGNING_KEYS (it signs from now on) and
    rewrite the public JWKS next to it; tokens of the older keys stay valid."""

    path = Path(_settings().gateway_signing_keys)
    private = json.loads(path.read_text())
    key = auth.new_private_jwk(algorithm)
    private["keys"].append(key)
    save_signing_keys(path, private)
    typer.echo(key["kid"])


@token_app.command("remove-key")
def token_remove_key(kid: str = typer.Argument(..., help="The key to retire.")) -> None:
    """Remove a key: tokens it signed are refused from the next JWKS reload on."""

    path = Path(_settings().gateway_signing_keys)
    private = json.loads(path.read_text())
    kept = [k for k in private["keys"] if k["kid"] != kid]
    if len(kept) == len(private["keys"]):
        raise typer.BadParameter(f"no key {kid!r}")
    if not kept:
        raise typer.BadParameter("that is the last key; rotate first")
    private["keys"] = kept
    save_signing_keys(path, private)


@app.command("config")
def config() -> None:
    """Every setting: variable, default and meaning; then the values in effect."""
    settings = _settings()
    for var, default, description in documented():
        value = getattr(settings, var.removeprefix("AGORA_").lower())
        typer.echo(f"{var:<28} = {value}\n    default {default!r}: {description}")


@app.command("demo")
def demo(keep: bool = typer.Option(False, "--keep", help="Leave the stack running.")) -> None:
    """Start the embedded stack and exercise every service once."""

    scenario.run(_settings(), typer.echo, keep=keep)

