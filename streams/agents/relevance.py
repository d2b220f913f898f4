"""The relevance Faust agent: which agents answer each chat message, and why; and which
messages report an incident (it has their embeddings), with the on-call agent's first
response to a severe one.

Messages are taken in batches so one embedder request covers many of them. Each
message gets one RelevanceDecision (every eligible agent's score and factors) and one
InferenceTask per selected agent, with ids derived from the message id, so a replay
after a crash produces the same events and the sinks drop the copies. The batch's
offsets are committed by Faust after every send of the batch is acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from datetime import datetime, timezone
from typing import Any, cast
from weakref import ref

import faust
import numpy as np
import structlog
from faust.streams import _current_event
from prometheus_client import Counter, Histogram

from inference.client import InferenceTimeout, InferenceUnavailable
from ops.core.retry import Retry, forever, retrying
from schemas import codec
from schemas.codec import epoch_ms
from schemas.events import AgentProfile, ChatMessage
from schemas.topics import (
    CHAT_MESSAGES,
    DEADLETTER,
    INCIDENTS,
    INFERENCE_TASKS,
    RELEVANCE_DECISIONS,
    TOOL_REQUESTS,
)
from streams.app import topic
from streams.deadletter import dead_letter_on_failure, send_dead_letter
from streams.domain import channels
from streams.domain.incidents.detection import (
    Exemplars,
    IncidentConfig,
    detect,
    exemplar_texts,
    exemplars,
    first_response,
)
from streams.domain.relevance.messages import validate
from streams.domain.relevance.records import (
    TASK_DEADLINE,
    Expertise,
    candidates,
    decision_records,
    expertise_of,
    expertise_texts,
    scored_message,
)
from streams.domain.relevance.scoring import RelevanceConfig, decide
from streams.services import Services, stored

log = structlog.get_logger("agora.relevance")
HISTORY_KEPT = 50

MESSAGES = Counter("agora_relevance_messages_total", "Chat messages decided", ["outcome"])
SELECTED = Counter("agora_relevance_selected_total", "Agents selected", ["agent_id"])
BATCH = Histogram("agora_relevance_batch_size", "Messages per relevance batch",
                  buckets=(1, 2, 4, 8, 16, 32, 64))
DETECTED = Counter("agora_incidents_detected_total", "Messages that report an incident",
                   ["outcome"])
LATENCY = Histogram("agora_relevance_batch_seconds", "Time to decide a batch",
                    buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5))


class Relevance:
    """What the relevance agent holds: its topics, the worker's services, the channel
    table, its configuration, and the reference vectors it has embedded so far."""

    def __init__(self, app: faust.App, services: Services, state: faust.types.TableT,
                 config: RelevanceConfig, incidents: IncidentConfig, batch_size: int = 64,
                 batch_within_s: float = 0.02):
        self.services, self.state = services, state
        self.batch_size, self.batch_within_s = batch_size, batch_within_s
        self.config, self.incidents = config, incidents
        self.chat = topic(app, CHAT_MESSAGES)
        self.decisions, self.tasks = topic(app, RELEVANCE_DECISIONS), topic(app, INFERENCE_TASKS)
        self.deadletter, self.incident_topic = topic(app, DEADLETTER), topic(app, INCIDENTS)
        self.tool_requests = topic(app, TOOL_REQUESTS)
        self.vectors: dict[str, np.ndarray] = {}  # reference text -> its vector
        self.known: dict[tuple[str, ...], Expertise] = {}  # an agent's texts -> its expertise
        self.detector: Exemplars | None = None

    async def embedded(self, texts: set[str]) -> dict[str, np.ndarray]:
        """The vectors of reference texts (agents' expertise and examples): kept in
        memory, each embedded once, by whichever worker needs it first."""
        missing = sorted(texts - self.vectors.keys())
        if missing:
            self.vectors.update(await stored(self.services.memory.vectors, missing))
            unknown = [t for t in missing if t not in self.vectors]
            if unknown:
                computed = dict(zip(unknown, await self.patiently(unknown)))
                await stored(self.services.memory.put_vectors, computed)
                self.vectors.update(computed)
        return self.vectors

    async def expertise(self) -> dict[str, Expertise]:
        """agent_id -> its expertise, from its texts' vectors."""
        texts = {a: expertise_texts(p) for a, p in dict(self.services.registry.data).items()}
        found = await self.embedded({t for ts in texts.values() for t in ts})
        for ts in texts.values():
            if ts not in self.known:  # agents of one template share theirs
                self.known[ts] = expertise_of(ts, [found[t] for t in ts])
        return {a: self.known[ts] for a, ts in texts.items()}

    async def admit(self, events: Sequence[faust.EventT]
                    ) -> list[tuple[faust.EventT, ChatMessage]]:
        """Decoded, valid messages of a batch; the others are dead-lettered."""
        good = []
        for event in events:
            try:
                message = codec.decode_as(event.message.value, ChatMessage)
                validate(message)
                good.append((event, message))
            except ValueError as exc:  # CodecError and InvalidMessage
                MESSAGES.labels("dead_letter").inc()
                log.warning("relevance.dead_letter", offset=event.message.offset,
                            partition=event.message.partition, reason=str(exc))
                await send_dead_letter(self.deadletter, event.message, "relevance", exc)
        return good

    async def decide_batch(self, good: list[tuple[faust.EventT, ChatMessage]],
                           embeddings: np.ndarray) -> None:
        """Score, remember and publish a batch; returns once every send is durable."""
        services = self.services
        agents = await self.expertise()
        if self.detector is None:  # the config's exemplars, embedded once
            self.detector = exemplars(self.incidents, await self.embedded(
                exemplar_texts(self.incidents)))
        open_tasks = services.open_tasks()  # one view of the workload for the batch
        on_call = {a: p for a, p in services.registry.data.items()
                   if p["template"] in self.incidents.oncall_templates}
        remembered = asyncio.create_task(stored(
            services.memory.remember, [m for _, m in good], embeddings))
        pending = []
        for (event, message), embedding in zip(good, embeddings):
            async with dead_letter_on_failure(self.deadletter, event.message, "relevance"):
                pending += await self.decide_one(event, message, embedding, agents,
                                                 self.detector, on_call, open_tasks)
        for fut in pending:
            await fut
        await remembered

    async def decide_one(self, event: faust.EventT, message: ChatMessage,
                         embedding: np.ndarray, agents: dict[str, Expertise],
                         reference: Exemplars, on_call: dict[str, AgentProfile],
                         open_tasks: dict) -> list:
        """Decide one message; returns the sends under way (its decision and tasks)."""
        pending = []
        channel = self.state.get(message["channel_id"]) or channels.empty()
        decision = decide(scored_message(message, channel, embedding),
                          candidates(self.services.registry.data, channel, message, agents,
                                     open_tasks),
                          self.config)
        # Table writes go to the changelog partition of the current event: in a
        # batch, make it this message's event.
        _current_event.set(ref(event))
        now = datetime.now(timezone.utc)
        incident, open_incidents = detect(message, embedding, channel, list(on_call),
                                          reference, self.incidents, now)
        updated = {**channels.remember(
            channel, message, HISTORY_KEPT, now_ms=epoch_ms(now),
            pinned_until_ms=epoch_ms(now + TASK_DEADLINE) if decision.selected else None),
            "incidents": open_incidents}
        self.state[message["channel_id"]] = updated
        decision_record, task_records = decision_records(
            message, decision, updated["history"], now, self.config.version,
            self.services.settings.history_size)
        key = message["channel_id"].encode()
        pending.append(await self.decisions.send(
            key=key, value=codec.encode("RelevanceDecision", decision_record)))
        for task in task_records:
            pending.append(await self.tasks.send(key=key,
                                                 value=codec.encode("InferenceTask", task)))
        if incident is not None:
            DETECTED.labels("opened" if incident["opened"] else "joined").inc()
            pending.append(await self.incident_topic.send(
                key=key, value=codec.encode("IncidentDetected", incident)))
            for request in first_response(incident, on_call, self.incidents):
                pending.append(await self.tool_requests.send(
                    key=key, value=codec.encode("ToolRequest", request)))
        MESSAGES.labels("selected" if decision.selected else "none").inc()
        for agent_id in decision.selected:
            SELECTED.labels(agent_id).inc()
        return pending

    async def patiently(self, texts: list[str], started: Awaitable[np.ndarray] | None = None
                        ) -> np.ndarray:
        """Embeddings of ``texts`` (``started``: the call already under way). While
        Triton is down the batch waits, and the stream behind it (its offsets
        uncommitted), instead of failing the agent: Faust would restart it without the
        batch, whose messages would then go undecided."""
        first = iter([started] if started else [])
        return await retrying(
            lambda: next(first, None) or self.services.inference.embed(texts),
            Retry(stop=forever()), (InferenceUnavailable, InferenceTimeout),
            "relevance.inference_retry", texts=len(texts))

    async def finish(self, stream: faust.StreamT, batches: asyncio.Queue) -> None:
        """The second stage: decide each embedded batch, then ack its events."""
        while True:
            events, good, embedding = await batches.get()
            started = time.perf_counter()
            if good:
                await self.decide_batch(good, await self.patiently(
                    [m["text"] for _, m in good], embedding))
            for event in events:
                await stream.ack(event)
            LATENCY.observe(time.perf_counter() - started)

    async def consume(self, stream: faust.StreamT) -> None:
        """The agent. Two stages: while Triton embeds one batch, the previous one is decided.

        Acks are manual: a batch's offsets may be committed only once its decisions,
        tasks and memories are durable, and batches finish in order.
        """
        await self.services.ready()
        batches: asyncio.Queue = asyncio.Queue(maxsize=1)
        finisher = asyncio.get_running_loop().create_task(self.finish(stream, batches))
        try:
            # faust's StreamT types neither noack nor take_events (its Stream has both)
            unacked = cast(Any, stream).noack()
            async for events in unacked.take_events(self.batch_size,
                                                    within=self.batch_within_s):
                BATCH.observe(len(events))
                good = await self.admit(events)
                embedding = asyncio.ensure_future(
                    self.services.inference.embed([m["text"] for _, m in good]))
                put = asyncio.ensure_future(batches.put((events, good, embedding)))
                await asyncio.wait([put, finisher], return_when=asyncio.FIRST_COMPLETED)
                if finisher.done():
                    put.cancel()
                    finisher.result()  # a failed batch fails the agent: Faust restarts it
        finally:
            finisher.cancel()


def register(app: faust.App, services: Services, state: faust.types.TableT,
             config: RelevanceConfig, incidents: IncidentConfig) -> faust.types.AgentT:
    agent = Relevance(app, services, state, config, incidents)
    return app.agent(agent.chat, name="relevance")(agent.consume)
