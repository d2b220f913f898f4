"""The responder Faust agent: a selected agent thinks on Triton and acts.

For each InferenceTask it builds the prompt (persona, the knowledge-base passages that
answer the message, memory hits, the channel's last messages), streams a
schema-constrained generation, publishing the reply's text as it comes (ReplyChunk),
then the reply plus any tool request, vote proposal or ballot. It keeps the agent's
status (open tasks, working state) on the compacted status topic, which relevance reads
as the workload factor.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import faust
import structlog
from prometheus_client import Counter, Histogram

from inference.client import GenerationResult, InferenceError, InferenceTimeout
from ops.core.errors import Unavailable
from ops.core.retry import Retry, retrying, until
from schemas import codec
from schemas.events import ChatMessage, InferenceTask
from schemas.topics import (
    AGENT_STATUS,
    CHAT_MESSAGES,
    DEADLETTER,
    INFERENCE_TASKS,
    REPLY_CHUNKS,
    TOOL_REQUESTS,
    VOTES,
)
from streams.app import send_all, topic
from streams.deadletter import send_dead_letter
from streams.domain import channels
from streams.domain.knowledge import grounding
from streams.domain.responder.actions import (
    action_schema,
    ballot_options,
    build_messages,
    build_prompt,
    events,
)
from streams.domain.responder.partial import ReplyText, chunk
from streams.domain.responder.tasks import TaskFailed, status_record, task_inputs
from streams.services import Services

log = structlog.get_logger("agora.responder")
TASKS = Counter("agora_responder_tasks_total", "Inference tasks handled", ["outcome"])
LATENCY = Histogram("agora_responder_task_seconds", "Task to published reply",
                    buckets=(.5, 1, 2, 5, 10, 20, 30, 60, 120))
FIRST_TOKEN = Histogram("agora_reply_first_token_seconds",
                        "Posted message to the first streamed text of an agent's reply",
                        buckets=(.25, .5, 1, 2, 5, 10, 20, 30, 60, 120))
MEMORY_HITS = 3
MAX_TOKENS = 400
T = TypeVar("T")


class Preview:
    """A reply's text streamed as it is generated (ReplyChunk events): a live preview,
    each chunk sent but not awaited to delivery (the reply is the record)."""

    def __init__(self, chunks: faust.TopicT, task: InferenceTask, message: ChatMessage,
                 agent_id: str,
                 posted_ms: int):
        self.chunks, self.task, self.message, self.agent_id = chunks, task, message, agent_id
        self.posted_ms = posted_ms
        self.sequence = itertools.count()
        self.first_token_ms: int | None = None

    async def send(self, text: str, offset: int) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = codec.epoch_ms(datetime.now(timezone.utc)) - self.posted_ms
            FIRST_TOKEN.observe(self.first_token_ms / 1000)
        await self.chunks.send(key=self.task["channel_id"].encode(), value=codec.encode(
            "ReplyChunk", chunk(self.task, self.message, self.agent_id, next(self.sequence),
                                offset, text)))


class Responder:
    """What the responder agent holds: its topics, the worker's services, the channel
    table (for history), and each agent's open and finished task counts."""

    def __init__(self, app: faust.App, services: Services, channel_state: faust.types.TableT):
        self.services, self.settings = services, services.settings
        self.channel_state = channel_state
        self.tasks = topic(app, INFERENCE_TASKS)
        self.out = {"ChatMessage": topic(app, CHAT_MESSAGES),
                    "ToolRequest": topic(app, TOOL_REQUESTS),
                    "VoteProposal": topic(app, VOTES), "Ballot": topic(app, VOTES)}
        self.status_topic, self.deadletter = topic(app, AGENT_STATUS), topic(app, DEADLETTER)
        self.chunks = topic(app, REPLY_CHUNKS)
        self.open_tasks: dict[str, int] = defaultdict(int)
        self.finished: dict[str, int] = defaultdict(int)

    async def publish_status(self, agent_id: str, error: str | None = None) -> None:
        worker = self.settings.worker_id
        record = status_record(agent_id, worker, self.open_tasks[agent_id],
                               self.finished[agent_id], error, datetime.now(timezone.utc))
        await self.status_topic.send(key=f"{agent_id}@{worker}".encode(),
                                     value=codec.encode("AgentStatus", record))

    @staticmethod
    async def outlast(task: InferenceTask, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, waiting out outages of Triton and of memory until the task's
        deadline; any other inference error fails the task (an exception escaping the
        agent would crash it, and Faust restarts it without the task it was working on)."""
        deadline = task["deadline_at"] or datetime.now(timezone.utc)
        policy = Retry(stop=until(deadline, clock=lambda: datetime.now(timezone.utc)))
        try:
            return await retrying(call, policy, (Unavailable, InferenceTimeout),
                                  "responder.retry", task=task["event_id"])
        except (Unavailable, InferenceTimeout) as exc:
            raise TaskFailed(f"unavailable until the task deadline: {exc}") from exc
        except InferenceError as exc:
            raise TaskFailed(f"inference failed: {exc}") from exc

    async def think(self, prompt: str, messages: list[dict], schema: dict, task: InferenceTask,
                    preview: Preview) -> GenerationResult:
        """The agent's action, its reply's text streamed to ``preview`` as it is
        generated; waits out Triton outages until the task's deadline (a restarted
        generation streams the reply again from offset 0)."""
        async def generate() -> GenerationResult:
            reply = ReplyText()
            generation = self.services.inference.generate(
                prompt, messages=messages, json_schema=schema, max_tokens=MAX_TOKENS,
                temperature=0.7, repetition_penalty=1.1,
                seed=uuid.UUID(task["event_id"]).int % 2**31)
            async with generation:
                async for piece in generation:
                    if new := reply.feed(piece):
                        await preview.send(new, len(reply.text) - len(new))
            return generation.result

        return await self.outlast(task, generate)

    async def answer(self, task: InferenceTask) -> list[tuple[str, str, dict]]:
        services, settings, outlast = self.services, self.settings, self.outlast
        agent = services.registry.get(task["agent_id"])
        history = (self.channel_state.get(task["channel_id"]) or channels.empty())["history"]
        message, context, posted_ms = task_inputs(task, agent, history,
                                                  datetime.now(timezone.utc),
                                                  settings.history_size)
        [vector] = await outlast(task, lambda: services.inference.embed([message["text"]]))
        memories, found = await asyncio.gather(
            outlast(task, lambda: asyncio.to_thread(
                services.memory.recall, task["channel_id"], vector, MEMORY_HITS,
                [h["id"] for h in history])),
            outlast(task, lambda: asyncio.to_thread(
                services.knowledge.search, task["channel_id"], message["text"], vector,
                grounding.SEARCHED)))
        passages = grounding.relevant(found)
        reply, ballot = None, ballot_options(message)
        if passages and ballot is None and settings.responder_grounding != "free":
            candidates = grounding.sentences(passages)
            sentence_vectors = await outlast(task, lambda: services.inference.embed(
                [c.embedded_text() for c in candidates]))
            reply = grounding.reply_schema(settings.responder_grounding, grounding.ranked(
                message["text"], vector, candidates, sentence_vectors))
        prompt = build_prompt(agent, context, memories, message, ballot is not None, passages)
        messages = build_messages(agent, context, memories, message, ballot is not None,
                                  passages)
        preview = Preview(self.chunks, task, message, agent["agent_id"], posted_ms)
        result = await self.think(prompt, messages,
                                  action_schema(agent["tools"], ballot, reply), task, preview)
        usage = {"prompt_tokens": str(result.prompt_tokens),
                 "completion_tokens": str(result.completion_tokens),
                 **({"first_token_ms": str(preview.first_token_ms)}
                    if preview.first_token_ms is not None else {})}
        return events(task, agent, message, result.parsed,
                      timedelta(seconds=settings.vote_deadline_s), usage,
                      grounding.sources(passages))

    async def handle(self, event: faust.EventT) -> None:
        """One task: answered and its events durable, or a dead letter; the agent's
        status published before and after."""
        started = datetime.now(timezone.utc)
        try:
            task = codec.decode_as(event.message.value, InferenceTask)
        except ValueError as exc:
            TASKS.labels("dead_letter").inc()
            await send_dead_letter(self.deadletter, event.message, "responder", exc)
            return
        agent_id = task["agent_id"]
        self.open_tasks[agent_id] += 1
        await self.publish_status(agent_id)
        error = None
        try:
            produced = await self.answer(task)
            # Durable before the task's offset is committed.
            await send_all((self.out[name], key, name, rec) for name, key, rec in produced)
            TASKS.labels("answered").inc()
            LATENCY.observe((datetime.now(timezone.utc) - started).total_seconds())
        except Exception as exc:  # noqa: BLE001 - a failed task is a dead letter, never an ack
            error = str(exc) or type(exc).__name__
            TASKS.labels("dead_letter").inc()
            if isinstance(exc, TaskFailed):
                log.warning("responder.task_failed", task=task["event_id"], reason=error)
            else:
                log.exception("responder.task_crashed", task=task["event_id"])
            await send_dead_letter(self.deadletter, event.message, "responder", exc)
        finally:
            self.open_tasks[agent_id] -= 1
            self.finished[agent_id] += 1
        await self.publish_status(agent_id, error)

    async def consume(self, stream: faust.StreamT) -> None:
        """The agent."""
        await self.services.ready()
        async for event in stream.events():
            await self.handle(event)


def register(app: faust.App, services: Services, channel_state: faust.types.TableT
             ) -> faust.types.AgentT:
    agent = Responder(app, services, channel_state)
    # Several tasks at once: the generator decodes them together (continuous batching).
    return app.agent(agent.tasks, name="responder",
                     concurrency=services.settings.responder_concurrency)(agent.consume)
