"""The tools Faust agent: check, gate and run tool requests.

A request is checked against the catalog, the agent's permissions and the channel's
policy (a denial runs nothing), then its arguments against the tool's schema. A tool
that needs a vote opens a TOOL_USAGE vote and waits: the votes agent sends the
request back on ``agora.tool.approved`` if the vote passes, or rejects it. A record
there runs only when a PASSED VoteResult of its vote exists and the request hashes to
what was voted on; otherwise it is dead-lettered (a forged or swapped approval).
Everything else runs in the sandbox, claimed first in the Postgres ledger (a replayed
request publishes its stored outcome, or fails if its run of a tool with external
effects was cut off: never a second run), and the outcome goes out as a ToolResult
plus a notice in the channel. Ids derive from the request id, so a replayed request
yields the same events. Any failure while handling a record becomes a dead letter.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import cast

import faust
import structlog
from prometheus_client import Counter, Histogram

from ops.core.errors import Denied
from schemas import codec
from schemas.events import Event, ToolRequest, ToolResult
from schemas.topics import (
    AGENT_FEEDBACK,
    CHAT_MESSAGES,
    DEADLETTER,
    TOOL_APPROVED,
    TOOL_REQUESTS,
    TOOL_RESULTS,
    VOTES,
)
from streams.app import send_all, topic
from streams.deadletter import dead_letter, dead_letter_on_failure
from streams.domain import feedback
from streams.domain.tools import catalog, permissions
from streams.domain.tools.records import (
    request_digest,
    result_events,
    usage_proposal,
    vote_id_of,
)
from streams.domain.tools.runs import interrupted_reason, next_step
from streams.services import Services, stored
from streams.tools import actions, sandbox

log = structlog.get_logger("agora.tools")
RESULTS = Counter("agora_tool_results_total", "Tool requests by outcome", ["tool", "status"])
RUN_SECONDS = Histogram("agora_tool_run_seconds", "Sandboxed run time", ["tool"],
                        buckets=(.1, .25, .5, 1, 2, 5, 10, 20, 60))


class Unapproved(Denied):
    """A record on the approvals topic that no passed vote backs."""


class Tools:
    """What the tools agent holds: the catalog, the channel policies, its topics and
    the worker's services (the registry, passed votes, the run ledger, action stores)."""

    def __init__(self, app: faust.App, services: Services):
        self.services, self.settings = services, services.settings
        self.tools = catalog.load()
        self.policy = permissions.load_policy(self.settings.tool_policies)
        self.runs = self.settings.stack_dir / "tool-runs"
        self.ledger = services.ledger
        self.stores = actions.Stores(settings=self.settings, tickets=services.tickets,
                                     oncall=services.oncall)
        self.source = app.topic(TOOL_REQUESTS.name, TOOL_APPROVED.name, key_type=bytes,
                                value_type=bytes, internal=False)
        votes, self.deadletter = topic(app, VOTES), topic(app, DEADLETTER)
        # Where each event goes, and its key: vote records by the vote, dead letters by
        # their source topic, the rest by the channel.
        self.routes = {
            "ToolResult": (topic(app, TOOL_RESULTS), lambda r: r["channel_id"]),
            "ChatMessage": (topic(app, CHAT_MESSAGES), lambda r: r["channel_id"]),
            "ToolRequest": (votes, lambda r: vote_id_of(r["event_id"])),
            "VoteProposal": (votes, lambda r: r["vote_id"]),
            "DeadLetter": (self.deadletter, lambda r: r["source_topic"]),
            "AgentFeedback": (topic(app, AGENT_FEEDBACK), lambda r: r["agent_id"])}

    async def check_approval(self, request: ToolRequest) -> None:
        """Raise Unapproved unless a PASSED vote approved exactly this request."""
        approvals = self.services.approvals
        vote_id = vote_id_of(request["event_id"])
        if vote_id not in approvals.data:
            await approvals.caught_up()  # the result is written before the approval
        approval = approvals.get(vote_id)
        if approval is None:
            raise Unapproved(f"no passed tool-usage vote {vote_id} for request "
                             f"{request['event_id']}: an approval needs its vote")
        if approval["tool_request_id"] != request["event_id"] or \
                approval["request_sha256"] != request_digest(request):
            raise Unapproved(f"request {request['event_id']} differs from the one vote "
                             f"{vote_id} approved")

    async def handle(self, request: ToolRequest, message: faust.types.Message
                     ) -> list[tuple[str, Event]]:
        now = datetime.now(timezone.utc)
        registry = self.services.registry
        approved = message.topic == TOOL_APPROVED.name
        if approved:
            await self.check_approval(request)
        tool = self.tools.get(request["tool"])
        if tool is None:
            return result_events(request, "FAILED", now,
                                 error=f"unknown tool {request['tool']!r}; "
                                       f"tools: {', '.join(sorted(self.tools))}")
        vote_id = vote_id_of(request["event_id"]) if approved else None
        denied = permissions.denial(tool, registry.get(request["agent_id"]),
                                    request["agent_id"], request["channel_id"], self.policy)
        if denied:  # checked again after a vote: the agent or policy may have changed
            return result_events(request, "DENIED", now, error=denied, vote_id=vote_id)
        try:
            arguments = catalog.arguments(tool, request["arguments_json"])
        except catalog.InvalidArguments as exc:
            return result_events(request, "FAILED", now, error=str(exc), vote_id=vote_id)
        profile = registry.get(request["agent_id"]) or {}
        if catalog.needs_vote(tool, profile.get("template"), arguments) and not approved:
            return [("ToolRequest", request), ("VoteProposal", usage_proposal(
                request, tool, self.settings.vote_deadline_s))]
        return await self.run_once(request, tool, arguments, vote_id, now, message)

    async def run_once(self, request: ToolRequest, tool: catalog.Tool, arguments: dict,
                       vote_id: str | None, now: datetime,
                       message: faust.types.Message) -> list[tuple[str, Event]]:
        """Run the request's tool unless the ledger says an earlier attempt did: its
        stored outcome is published again, or, cut off mid-run, it fails."""
        request_id = request["event_id"]
        worker = self.settings.worker_id
        earlier = await stored(self.ledger.claim, request_id, tool.name, worker)
        step = next_step(earlier.state if earlier else None, tool)
        if earlier and step == "publish":
            log.info("tools.replayed", request=request_id, state=earlier.state)
            return [codec.decode(event) for event in earlier.outcome]
        if earlier and step == "interrupted":
            log.warning("tools.interrupted", request=request_id, worker=earlier.worker_id)
            produced = result_events(request, "FAILED", now, vote_id=vote_id,
                                     error=interrupted_reason(tool, earlier.worker_id))
            await stored(self.ledger.finish, request_id, "failed", "FAILED",
                         [codec.encode(name, record) for name, record in produced])
            return produced
        if earlier:  # claimed by a run that never started, or a tool safe to run again
            await stored(self.ledger.take, request_id, worker)
        await stored(self.ledger.running, request_id)
        log.info("tools.sandbox_run", request=request_id, tool=tool.name, runs_in=tool.runs_in)
        more: list[tuple[str, Event]] = []
        if tool.runs_in == "worker":  # an action of our own
            done = await actions.run(tool, request, arguments, self.stores)
            run = sandbox.Run(done.status, done.output, done.error,
                              duration_ms=done.duration_ms)
            more += done.events
            if done.dead_letter:  # it failed outside: say so where failures are watched
                more.append(("DeadLetter", dead_letter(
                    message.topic, message.partition, message.offset, message.key,
                    message.value, "tools", done.dead_letter, "ActionFailed")))
        else:
            try:
                run = await sandbox.run(tool, arguments, sandbox.run_dir(self.runs, request_id))
            except OSError as exc:  # the sandbox could not even start: the request fails
                log.exception("tools.sandbox_error", request=request_id)
                run = sandbox.Run("FAILED", error=f"the sandbox could not start: {exc}")
        RUN_SECONDS.labels(tool.name).observe(run.duration_ms / 1000)
        error = "\n".join(filter(None, [run.error, *run.notes])) or None
        produced = result_events(request, run.status, datetime.now(timezone.utc),
                                 output=run.output, error=error, artifacts=run.artifacts,
                                 vote_id=vote_id, started_at=now,
                                 duration_ms=run.duration_ms) + more
        # Kept before it is sent: a replay from here on publishes these same events.
        await stored(self.ledger.finish, request_id, "done", run.status,
                     [codec.encode(name, record) for name, record in produced])
        return produced

    async def consume(self, stream: faust.StreamT) -> None:
        """The agent."""
        await self.services.ready()
        async for event in stream.events():
            async with dead_letter_on_failure(self.deadletter, event.message, "tools"):
                request = codec.decode_as(event.message.value, ToolRequest)
                await self.publish(request, await self.handle(request, event.message))

    async def publish(self, request: ToolRequest, produced: list[tuple[str, Event]]) -> None:
        """A request's events (and feedback on a failed run), durable before the
        request's offset is committed."""
        results = [cast(ToolResult, r) for n, r in produced if n == "ToolResult"]
        produced += [("AgentFeedback", found) for result in results
                     for found in feedback.tool_failed(result, self.services.registry.data)]
        await send_all((self.routes[name][0], self.routes[name][1](record), name, record)
                       for name, record in produced)
        status = results[0]["status"] if results else "VOTING"
        RESULTS.labels(request["tool"], status).inc()
        log.info("tools.request", request=request["event_id"], tool=request["tool"],
                 agent=request["agent_id"], status=status)


def register(app: faust.App, services: Services) -> faust.types.AgentT:
    agent = Tools(app, services)
    return app.agent(agent.source, name="tools",
                     concurrency=services.settings.tool_concurrency)(agent.consume)
