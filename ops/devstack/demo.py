"""``agora demo``: an incident in a workspace of agents and people, played through the
gateway on the embedded stack.

It starts the stack, checks each service once, and runs a worker (relevance,
responder, tools, votes) and the Postgres sink. From then on it is a client of the
gateway like any program: it creates a team of agents from the templates, adds the
team's runbooks and policies (``examples/knowledge``) to the knowledge base, follows
#incidents live (StreamChannel) and plays the scenario: an incident report the right
agents pick up and answer from the runbook, citing it, a question to one agent, a tool
call, a shell command that a tool-usage vote must allow, and a project decision vote. Every relevance decision is
shown with its factors and the agents' replies appear token by token. At the end the
ClickHouse sink catches up and the analytics service sums the run up.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from gateway import auth
from gateway.chat import posted_id
from gateway.client import Client
from gateway.describe import Transcript, incident_line
from gateway.server import signer
from gateway.tls import channel_credentials
from ops import devstack as stack
from ops.core.config import Settings
from ops.core.kafka import ensure_topics
from ops.devstack import smoke
from ops.devstack.process import start_agora, start_worker, stop
from ops.store import migrate
from ops.store.oncall import OncallStore
from schemas.agora.v1 import (
    agents_pb2,
    analytics_pb2,
    chat_pb2,
    incidents_pb2,
    knowledge_pb2,
    tools_pb2,
    votes_pb2,
)
from schemas.topics import ALL

Echo = Callable[[str], None]
CHANNEL = "incidents"
TEAM = {"developer-backend": "", "developer-frontend": "", "analyst-data": "",  # template: id
        "moderator-quality": "", "researcher-tech": "", "creative-writer": "",
        "devops-oncall": "nox"}  # NOX, the on-call agent people address as @nox
SCRIPT = [
    ("The API server returns 502 since the last deploy and the PostgreSQL connection pool "
     "looks exhausted. Where do we start?", []),
    ("The checkout page renders blank in Safari after the same deploy, CSS or JavaScript?", []),
    ("Please draft a two-line status note for customers about the outage.",
     ["creative-writer"]),
    ("@nox Serveur down", ["nox"]),  # the seeds' scenario: a Sev1, NOX on call
]
REPLY_WAIT_S = 180
KNOWLEDGE = Path(__file__).resolve().parents[2] / "examples" / "knowledge"
RUNBOOK = "Runbook: API returns 502"  # the incident's answers must cite it
SUMMARY = [  # (query, parameters, title) of the closing analytics
    ("relevance_selection", {"channel": CHANNEL}, "relevance per agent"),
    ("agent_response_latency", {}, "reply latency per agent"),
    ("tokens_per_agent", {}, "tokens per agent"),
    ("tool_runs", {}, "tool runs"),
    ("vote_outcomes", {}, "vote outcomes"),
    ("incident_response", {}, "incidents: time to acknowledge and resolve"),
    ("agent_satisfaction", {}, "satisfaction per agent (people's ratings)"),
]
STORED_WAIT_S = 60  # for the Postgres sink to store what the script reads back


def run(settings: Settings, echo: Echo, keep: bool) -> None:
    already_up = all(s.state == "up" for s in stack.status(settings.stack_dir))
    echo("== starting the embedded stack")
    stack.up(settings.stack_dir, progress=echo)
    settings = Settings()  # now resolves to the running stack's addresses
    try:
        _services(settings, echo)
        Scenario(settings, echo).play()
    finally:
        if keep or already_up:
            echo("\n== the stack stays up; connect with:")
            echo('   eval "$(agora stack env)"')
            echo(f"   agora token issue human:you -c {CHANNEL}   # then export "
                 "AGORA_GATEWAY_TOKEN=<token>")
            echo(f"   agora tail {CHANNEL} --explain   # and, in another shell: "
                 f"agora post {CHANNEL} 'hello'")
            echo("   agora stack down   # stops everything")
        else:
            echo("\n== stopping the stack")
            stack.down(settings.stack_dir, progress=echo)


def _services(settings: Settings, echo: Echo) -> None:
    echo("\n== each service once")
    for t in ensure_topics(settings, ALL):
        if t.action == "created":
            echo(f"   topic {t.name} ({t.partitions} partitions)")
    echo(f"   postgres read back {smoke.postgres_roundtrip(settings, 'state check')!r}")
    applied = migrate.postgres(settings)
    echo(f"   postgres migrations: {', '.join(applied) or 'up to date'}")
    echo(f"   gateway at {settings.gateway_address} (gRPC, health and reflection)")


class Live:
    """Follows the channel through the gateway in a thread: prints each event as it
    comes and keeps it, so that the script can wait for what it expects."""

    def __init__(self, client, channel: str, echo_lock: threading.Lock):
        self.events: list = []
        self.posted: set[str] = set()  # the script's messages: their decisions in full
        self._changed = threading.Condition()
        self._lock = echo_lock
        self._transcript = Transcript(explain=lambda decision: decision.message_id in self.posted)
        self._line_start = True
        self._call = client.stream(channel)  # subscribed once this returns
        self._thread = threading.Thread(target=self._follow, name="demo-live", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for event in self._call:
                if self._shown(event):
                    with self._lock:
                        print(self._indented(self._transcript.feed(event)), end="", flush=True)
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                with self._lock:
                    print(f"\n   (the stream ended: {exc.code().name} {exc.details()})")

    def _shown(self, event) -> bool:
        """Not the decisions that chose nobody to answer an agent or a notice."""
        return (event.WhichOneof("event") != "relevance" or bool(event.relevance.selected)
                or event.relevance.message_id in self.posted)

    def _indented(self, text: str) -> str:
        """``text`` indented under the script's lines (a reply grows on its line)."""
        if not text:
            return text
        out = ("   " if self._line_start else "") + text.replace("\n", "\n   ")
        self._line_start = out.endswith("\n   ")
        return out.removesuffix("   ") if self._line_start else out

    def wait(self, predicate, count: int = 1, timeout_s: float = REPLY_WAIT_S) -> list:
        """The first ``count`` events that satisfy ``predicate``; fewer on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [e for e in self.events if predicate(e)]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found[:count]
                self._changed.wait(left)

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)


class Scenario:
    def __init__(self, settings: Settings, echo: Echo):
        self.settings = settings
        self._echo = echo
        self.lock = threading.Lock()
        key, ttl = signer(settings), settings.gateway_token_max_s
        self.maya = auth.issue(key, "human:maya", [f"{CHANNEL}:member"], ttl)
        self.operator = auth.issue(key, "ops:demo", ["*:admin"], ttl)
        self.missing: list[str] = []
        self.replies: list = []  # the agents' replies to the script's messages

    def echo(self, text: str) -> None:
        with self.lock:
            self._echo(text)

    def play(self) -> None:
        tls = channel_credentials(self.settings)
        with Client(self.settings.gateway_address, self.operator, tls) as ops:
            self._team(ops)
            self._rota()
            processes = self._start_processes()
            try:
                self._knowledge(ops)
                with Client(self.settings.gateway_address, self.maya, tls) as maya:
                    self.echo(f"\n== following #{CHANNEL} through the gateway (StreamChannel)")
                    live = Live(maya, CHANNEL, self.lock)
                    try:
                        for text, mentions in SCRIPT:
                            self._message(maya, live, text, mentions)
                        self._tool_call(maya, live)
                        self._gated_tool(maya, live)
                        self._decision_vote(maya, live)
                        self._incident(maya)
                        self._ratings(maya, ops)
                    finally:
                        live.close()
            finally:
                for proc in processes:
                    stop(proc, grace_s=15)
            self._analytics(ops)
        if self.missing:
            raise RuntimeError("the demo did not see: " + "; ".join(self.missing))

    def _team(self, ops) -> None:
        self.echo(f"\n== a team of agents in #{CHANNEL}, created through the gateway "
                  "(AgentService; expertise embedded once, kept in pgvector)")
        for template, agent_id in TEAM.items():
            agent = ops.agents.CreateAgent(agents_pb2.CreateAgentRequest(
                template=template, channel_id=CHANNEL, agent_id=agent_id), timeout=60)
            self.echo(f"   {agent.agent_id:<19} tools: {', '.join(agent.tools)}")

    def _rota(self) -> None:
        self.echo(f"\n== the on-call rota: human:maya on call for #{CHANNEL}, alerts in "
                  f"#{CHANNEL} (agora oncall add)")
        rota = OncallStore(self.settings.postgres_dsn)
        try:
            rota.add(CHANNEL, "human:maya", CHANNEL, datetime.now(timezone.utc))
        finally:
            rota.close()

    def _start_processes(self) -> list:
        self.echo("\n== a worker (relevance, responder, tools, votes: Faust) and the "
                  "Postgres sink")
        started = time.monotonic()
        worker = start_worker(self.settings, "demo")
        sink = start_agora(self.settings.stack_dir, ["sink", "postgres"], "sink-demo",
                           lambda log: "sink.ready" in log, timeout_s=60)
        self.echo(f"   ready in {time.monotonic() - started:.1f}s; logs in "
                  f"{self.settings.stack_dir / 'logs'}")
        return [worker, sink]

    def _knowledge(self, ops) -> None:
        self.echo("\n== the team's runbooks and policies (examples/knowledge) into the "
                  "knowledge base, for every channel (KnowledgeService)")
        for path in sorted(KNOWLEDGE.iterdir()):
            doc = ops.add_document(path.read_bytes(), path.name, timeout_s=60)
            try:
                doc = ops.ingested(doc, timeout_s=120)
            except TimeoutError:
                pass  # reported as missing below
            if doc.state != knowledge_pb2.DOCUMENT_STATE_ACTIVE:
                self.missing.append(f"the document {path.name} ({doc.error or 'not ingested'})")
            self.echo(f"   {path.name:<22} \"{doc.title}\": {doc.chunks} passages")

    def _message(self, maya, live: Live, text: str, mentions: list[str]) -> None:
        self.echo(f"\n>> human:maya posts: {text}"
                  + (f"  (mentions {', '.join(mentions)})" if mentions else ""))
        key = str(uuid.uuid4())
        live.posted.add(posted_id("human:maya", key))  # known before the stream has it
        posted = maya.post(CHANNEL, text, mentions=mentions, idempotency_key=key)
        [decision] = live.wait(lambda e: e.WhichOneof("event") == "relevance"
                               and e.relevance.message_id == posted.message_id) or [None]
        if decision is None:
            self.missing.append(f"a decision on {text[:30]!r}")
            return
        selected = list(decision.relevance.selected)
        replies = live.wait(lambda e: e.WhichOneof("event") == "message"
                            and e.message.reply_to == posted.message_id, count=len(selected))
        self.replies += [r.message for r in replies]
        if len(replies) < len(selected):
            self.missing.append(f"{len(selected) - len(replies)} replies to {text[:30]!r}")
        if "502" in text and not any(s.title == RUNBOOK for r in replies
                                     for s in r.message.sources):
            self.missing.append(f"an answer to {text[:30]!r} citing {RUNBOOK!r}")
        if text.startswith("@nox"):  # NOX's first response: the ticket, then the page
            for kind, tool in (("tool_result", "ticket.create"), ("oncall_alert", None)):
                if not live.wait(lambda e: e.WhichOneof("event") == "message"
                                 and e.message.metadata.get("kind") == kind
                                 and (tool is None or e.message.metadata.get("tool") == tool)):
                    self.missing.append(f"NOX's {tool or 'page'} for {text!r}")

    def _tool_call(self, maya, live: Live) -> None:
        self.echo("\n== a tool call: analyst-data runs the calculator in the sandbox "
                  "(ToolService)")
        request = self._request_tool(maya, "analyst-data", "calculator",
                                     {"expression": "1312 / 48210 * 100"},
                                     "share of requests that failed with 502 in the last hour")
        self._result_of(live, request.request_id, "the calculator's result")

    def _gated_tool(self, maya, live: Live) -> None:
        self.echo("\n== a shell command needs the channel's consent: a tool-usage vote "
                  "(consensus of the agents allowed to vote)")
        request = self._request_tool(maya, "developer-backend", "shell",
                                     {"command": "echo 'rollback plan: redeploy v1.4.2'; date -u"},
                                     "print the rollback plan for the 502 incident")
        self._closed(live, lambda v: v.tool_request_id == request.request_id,
                     "the tool-usage vote's result")
        self._result_of(live, request.request_id, "the shell's result")

    def _request_tool(self, maya, agent_id: str, tool: str, arguments: dict, reason: str):
        request = tools_pb2.RequestToolRequest(channel_id=CHANNEL, agent_id=agent_id, tool=tool,
                                               reason=reason, idempotency_key=str(uuid.uuid4()))
        request.arguments.update(arguments)
        self.echo(f">> {agent_id} asks: {tool} {json.dumps(arguments)}")
        return maya.tools.RequestTool(request, timeout=30)

    def _decision_vote(self, maya, live: Live) -> None:
        voters = ["developer-backend", "developer-frontend", "moderator-quality", "human:maya"]
        self.echo("\n== a project decision: agents and maya vote (simple majority, "
                  "VoteService)")
        vote = maya.votes.StartVote(votes_pb2.StartVoteRequest(
            channel_id=CHANNEL, title="Roll back the last deploy now?",
            description="The 502s and the blank checkout page started with the deploy.",
            vote_type=votes_pb2.VOTE_TYPE_PROJECT_DECISION,
            strategy=votes_pb2.VOTE_STRATEGY_SIMPLE_MAJORITY, options=["yes", "no"],
            eligible_voters=voters, deadline=duration_pb2.Duration(seconds=240),
            idempotency_key=str(uuid.uuid4())), timeout=30)
        self.echo(f">> human:maya opens the vote {vote.vote_id[:8]}: {vote.title}")
        live.wait(lambda e: e.WhichOneof("event") == "vote_update"
                  and e.vote_update.WhichOneof("update") == "opened"
                  and e.vote_update.opened.vote_id == vote.vote_id, timeout_s=30)
        maya.votes.CastBallot(votes_pb2.CastBallotRequest(
            vote_id=vote.vote_id, channel_id=CHANNEL, choice="yes",
            rationale="The timing matches the deploy.", idempotency_key=str(uuid.uuid4())),
            timeout=30)
        self._closed(live, lambda v: v.vote_id == vote.vote_id, "the decision vote's result")

    def _incident(self, maya) -> None:
        self.echo("\n== the incident: maya (on call) acknowledges it, then resolves it "
                  "(IncidentService; agora incident ack|resolve|show)")
        found = _waited(lambda: [i for i in maya.incidents.ListIncidents(
            incidents_pb2.ListIncidentsRequest(channel_id=CHANNEL), timeout=30).incidents
            if i.ticket])
        if not found:
            self.missing.append("the incident with NOX's ticket, stored")
            return
        incident = found[0]
        self.echo(f"   {incident_line(incident)}")
        for change, note in ((maya.incidents.Acknowledge, "on it, rolling back"),
                             (maya.incidents.Resolve, "rolled back to v1.4.2; pool size "
                                                      "raised to 50")):
            incident = change(incidents_pb2.ChangeIncidentRequest(
                incident_id=incident.incident_id, note=note), timeout=30)
            self.echo(f">> human:maya: {incident_line(incident)}")
        detail = maya.incidents.GetIncident(incidents_pb2.GetIncidentRequest(
            incident_id=incident.incident_id), timeout=30)
        self.echo("   its timeline (GetIncident):")
        for entry in detail.timeline:
            self.echo(f"     {entry.time.ToDatetime():%H:%M:%S}  {entry.kind:<12} "
                      f"{entry.actor_id:<18} {entry.summary[:100]}")
        kinds = {e.kind for e in detail.timeline}
        for kind in ("opened", "ticket", "acknowledged", "resolved"):
            if kind not in kinds:
                self.missing.append(f"the incident timeline's {kind!r} entry")

    def _ratings(self, maya, ops) -> None:
        self.echo("\n== maya rates replies (ChatService.RateReply; agora rate): the "
                  "performance scores, relevance's quality factor, move")
        cited = [r for r in self.replies if any(s.title == RUNBOOK for s in r.sources)]
        uncited = [r for r in self.replies if not r.sources and r not in cited]
        rated = [(r, 1, "quoted the runbook") for r in cited[:2]] + \
                [(r, -1, "nothing we could act on") for r in uncited[:1]]
        if not cited or not uncited:
            self.missing.append("a reply citing the runbook and one citing nothing, to rate")
        before = {r.author_id: ops.agents.GetAgent(agents_pb2.GetAgentRequest(
            agent_id=r.author_id), timeout=30).performance_score for r, _, _ in rated}
        for reply, value, comment in rated:
            _waited(lambda r=reply: _stored(maya, r))  # the sink has the reply
            rating = maya.chat.RateReply(chat_pb2.RateReplyRequest(
                message_id=reply.message_id, rating=value, comment=comment), timeout=30)
            self.echo(f">> human:maya rates {rating.agent_id}'s reply {rating.rating:+d}: "
                      f"{comment}")

        def moved() -> dict:
            now = {a: ops.agents.GetAgent(agents_pb2.GetAgentRequest(agent_id=a),
                                          timeout=30).performance_score for a in before}
            return now if all(now[a] != before[a] for a in before) else {}

        after = _waited(moved)
        for agent, score in before.items():
            self.echo(f"   {agent:<19} performance {score:.3f} -> "
                      f"{after.get(agent, score):.3f}")
        if not after:
            self.missing.append("performance scores moved by the ratings")

    def _closed(self, live: Live, which, what: str) -> None:
        closed = live.wait(lambda e: e.WhichOneof("event") == "vote_update"
                           and e.vote_update.WhichOneof("update") == "closed"
                           and which(e.vote_update.closed), timeout_s=300)
        if not closed:
            self.missing.append(what)

    def _result_of(self, live: Live, request_id: str, what: str) -> None:
        if not live.wait(lambda e: e.WhichOneof("event") == "tool_result"
                         and e.tool_result.request_id == request_id, timeout_s=120):
            self.missing.append(what)

    def _analytics(self, ops) -> None:
        self.echo("\n== the ClickHouse sink catches up, then the analytics service sums up")
        # The sink stops by itself once idle; the log starts empty, so its stop is this run's.
        sink = start_agora(self.settings.stack_dir, ["sink", "clickhouse", "--until-idle-s", "3"],
                           "sink-clickhouse-demo", lambda log: "sink.stopped" in log,
                           timeout_s=300)
        stop(sink, grace_s=15)
        for name, params, title in SUMMARY:
            request = analytics_pb2.RunQueryRequest(name=name)
            for key, value in params.items():
                request.params[key].string_value = value
            answer = ops.analytics.RunQuery(request, timeout=60)
            table = [[c.name for c in answer.columns],
                     *[[_value(v) for v in row.values] for row in answer.rows]]
            widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
            self.echo(f"\n   {title} ({name}):")
            for cells in table:
                self.echo("   " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)))
            if not answer.rows:
                self.missing.append(f"analytics rows of {name}")


def _waited(check, timeout_s: float = STORED_WAIT_S):
    """``check()``'s first truthy answer, polled; the last answer on timeout."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def _stored(client, reply) -> bool:
    """Whether the sink has stored ``reply`` (History reads what it stored)."""
    page = client.chat.History(chat_pb2.HistoryRequest(
        channel_id=reply.channel_id, thread_id=reply.thread_id), timeout=30)
    return any(m.message_id == reply.message_id for m in page.messages)


def _value(value) -> str:
    kind = value.WhichOneof("kind")
    if kind == "float_value":
        return f"{value.float_value:.3g}"
    if kind == "time_value":
        return value.time_value.ToDatetime().strftime("%H:%M:%S")
    return str(getattr(value, kind)) if kind else ""

