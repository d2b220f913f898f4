"""The feedback Faust agent: ratings and outcomes in, each agent's performance score
out (in the registry, where relevance reads its quality factor).

Keyed by agent id, so one worker at a time scores an agent. Each AgentFeedback is
stored (the same row again changes nothing), then the agent's score is computed from
everything stored about it (``domain.feedback.score``, the template's score as prior)
and a new profile version is published when it moved. A replay stores nothing new and
so publishes nothing; feedback about an agent the registry does not have is a dead
letter.
"""

from __future__ import annotations

from datetime import datetime, timezone

import faust
import structlog
from prometheus_client import Counter

from ops.core.errors import NotFound
from schemas import codec
from schemas.events import AgentFeedback
from schemas.ids import derived_id
from schemas.topics import AGENT_FEEDBACK, AGENTS, DEADLETTER
from streams.app import send_all, topic
from streams.deadletter import dead_letter_on_failure
from streams.domain import feedback
from streams.domain.registry import templates
from streams.services import Services, stored

log = structlog.get_logger("agora.feedback")
FEEDBACK = Counter("agora_feedback_total", "Feedback about agents, by kind and value",
                   ["kind", "value"])


class Feedback:
    """What the feedback agent holds: its topics and the worker's services."""

    def __init__(self, app: faust.App, services: Services):
        self.services = services
        self.source, self.deadletter = topic(app, AGENT_FEEDBACK), topic(app, DEADLETTER)
        self.agents = topic(app, AGENTS)

    async def handle(self, record: AgentFeedback) -> None:
        registry, agent = self.services.registry, record["agent_id"]
        if agent not in registry.data:
            await registry.caught_up()  # an agent created a moment ago
        profile = registry.get(agent)
        if profile is None:
            raise NotFound(f"feedback about {agent!r}, which the registry does not have")
        counts = await stored(self.services.feedback.record, record)
        prior = float(templates().get(profile["template"], {}).get("performance_score", 0.7))
        score = feedback.score(prior, counts)
        FEEDBACK.labels(record["kind"], str(record["value"])).inc()
        if abs(score - profile["performance_score"]) < 1e-4:
            return
        # The id derives from the feedback, so a replay after a crash writes the same
        # version (which every reader keeps once).
        updated = {**profile, "event_id": derived_id(record["event_id"], "score"),
                   "performance_score": score, "updated_at": datetime.now(timezone.utc)}
        await send_all([(self.agents, agent, "AgentProfile", updated)])
        log.info("feedback.scored", agent=agent, kind=record["kind"], value=record["value"],
                 score=score, previous=profile["performance_score"])

    async def consume(self, stream: faust.StreamT) -> None:
        """The agent."""
        await self.services.ready()
        async for event in stream.events():
            async with dead_letter_on_failure(self.deadletter, event.message, "feedback"):
                record = codec.decode_as(event.message.value, AgentFeedback)
                await self.handle(record)


def register(app: faust.App, services: Services) -> faust.types.AgentT:
    agent = Feedback(app, services)
    return app.agent(agent.source, name="feedback")(agent.consume)
