"""The responder Faust agent: a selected agent thinks on Triton and acts.

For each InferenceTask it builds the prompt (persona, the knowledge-base passages that
answer the message, memory hits, the channel's last messages), streams a schema-constrained generation, publishing the
reply's text as it comes (ReplyChunk), then the reply plus any tool request, vote
proposal or ballot. It keeps the agent's status
(open tasks, working state) on the compacted status topic, which relevance reads as
the workload factor.
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


def register(app: faust.App, services: Services, channel_state: faust.TableT
             ) -> faust.types.AgentT:
    settings = services.settings
    tasks = topic(app, INFERENCE_TASKS)
    out = {"ChatMessage": topic(app, CHAT_MESSAGES), "ToolRequest": topic(app, TOOL_REQUESTS),
           "VoteProposal": topic(app, VOTES), "Ballot": topic(app, VOTES)}
    status_topic, deadletter = topic(app, AGENT_STATUS), topic(app, DEADLETTER)
    chunks = topic(app, REPLY_CHUNKS)
    open_tasks: dict[str, int] = defaultdict(int)
    finished: dict[str, int] = defaultdict(int)

    async def publish_status(agent_id: str, error: str | None = None) -> None:
        record = status_record(agent_id, settings.worker_id, open_tasks[agent_id],
                               finished[agent_id], error, datetime.now(timezone.utc))
        await status_topic.send(key=f"{agent_id}@{settings.worker_id}".encode(),
                                value=codec.encode("AgentStatus", record))

    async def outlast(task: dict, call: Callable[[], Awaitable[T]]) -> T:
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

    async def think(prompt: str, messages: list[dict], schema: dict, task: dict,
                    stream_reply: Callable[[str, int], Awaitable[None]]) -> GenerationResult:
        """The agent's action, its reply's text passed to ``stream_reply(text, offset)``
        as it is generated; waits out Triton outages until the task's deadline (a
        restarted generation streams the reply again from offset 0)."""
        async def generate() -> GenerationResult:
            reply = ReplyText()
            generation = services.inference.generate(
                prompt, messages=messages, json_schema=schema, max_tokens=MAX_TOKENS,
                temperature=0.7, repetition_penalty=1.1,
                seed=uuid.UUID(task["event_id"]).int % 2**31)
            async with generation:
                async for piece in generation:
                    if new := reply.feed(piece):
                        await stream_reply(new, len(reply.text) - len(new))
            return generation.result

        return await outlast(task, generate)

    async def answer(task: dict) -> list[tuple[str, str, dict]]:
        agent = services.registry.get(task["agent_id"])
        history = (channel_state.get(task["channel_id"]) or channels.empty())["history"]
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
        sequence, first_token_ms = itertools.count(), None

        async def stream_reply(text: str, offset: int) -> None:
            nonlocal first_token_ms
            seq = next(sequence)
            if first_token_ms is None:
                first_token_ms = codec.epoch_ms(datetime.now(timezone.utc)) - posted_ms
                FIRST_TOKEN.observe(first_token_ms / 1000)
            # Not awaited to delivery: chunks are a live preview, the reply is the record.
            await chunks.send(key=task["channel_id"].encode(), value=codec.encode(
                "ReplyChunk", chunk(task, message, agent["agent_id"], seq, offset, text)))

        result = await think(prompt, messages, action_schema(agent["tools"], ballot, reply),
                             task, stream_reply)
        usage = {"prompt_tokens": str(result.prompt_tokens),
                 "completion_tokens": str(result.completion_tokens),
                 **({"first_token_ms": str(first_token_ms)} if first_token_ms is not None else {})}
        return events(task, agent, message, result.parsed,
                      timedelta(seconds=settings.vote_deadline_s), usage,
                      grounding.sources(passages))

    # Several tasks at once: the generator decodes them together (continuous batching).
    @app.agent(tasks, name="responder", concurrency=settings.responder_concurrency)
    async def responder(stream):
        await services.ready()
        async for event in stream.events():
            started = datetime.now(timezone.utc)
            try:
                _, task = codec.decode(event.message.value, expected="InferenceTask")
            except ValueError as exc:
                TASKS.labels("dead_letter").inc()
                await send_dead_letter(deadletter, event.message, "responder", exc)
                continue
            agent_id = task["agent_id"]
            open_tasks[agent_id] += 1
            await publish_status(agent_id)
            error = None
            try:
                produced = await answer(task)
                # Durable before the task's offset is committed.
                await send_all((out[name], key, name, rec) for name, key, rec in produced)
                TASKS.labels("answered").inc()
                LATENCY.observe((datetime.now(timezone.utc) - started).total_seconds())
            except Exception as exc:  # noqa: BLE001 - a failed task is a dead letter, never an ack
                error = str(exc) or type(exc).__name__
                TASKS.labels("dead_letter").inc()
                if isinstance(exc, TaskFailed):
                    log.warning("responder.task_failed", task=task["event_id"], reason=error)
                else:
                    log.exception("responder.task_crashed", task=task["event_id"])
                await send_dead_letter(deadletter, event.message, "responder", exc)
            finally:
                open_tasks[agent_id] -= 1
                finished[agent_id] += 1
            await publish_status(agent_id, error)

    return responder
