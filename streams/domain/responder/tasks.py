"""Whether an InferenceTask can still be answered, and with what; the agent status the
responder reports. Plain functions: the Faust agent does the I/O around them."""

from __future__ import annotations

import uuid
from datetime import datetime

from ops.core.errors import AgoraError
from schemas.codec import from_epoch_ms
from schemas.events import AgentProfile, AgentStatus, ChatMessage, InferenceTask, WorkState

ANSWERING_STATES = ("ACTIVE", "WORKING")


class TaskFailed(AgoraError):
    """The task cannot be answered; the reason becomes its dead letter."""


def task_inputs(task: InferenceTask, agent: AgentProfile | None, history: list[dict],
                now: datetime, context_size: int) -> tuple[ChatMessage, list[dict], int]:
    """The message to answer, the history to answer it with (the one the task was
    decided with, as far as the channel still has it) and when the message was posted
    (epoch ms); TaskFailed when the task cannot be answered any more."""
    if agent is None:
        raise TaskFailed(f"unknown agent {task['agent_id']!r}")
    if agent["state"] not in ANSWERING_STATES:
        raise TaskFailed(f"agent {task['agent_id']!r} is {agent['state']}")
    if task["deadline_at"] and now >= task["deadline_at"]:
        # A late answer is worth less than the time it takes from tasks still in time.
        raise TaskFailed(f"deadline {task['deadline_at'].isoformat()} passed before the "
                         "task's turn")
    known = {h["id"]: h for h in history}
    entry = known.get(task["message_id"])
    if entry is None:
        raise TaskFailed(f"message {task['message_id']} is no longer in the channel history")
    context = ([known[i] for i in task["context_message_ids"] if i in known]
               or history[-context_size:])
    message: ChatMessage = {"event_id": entry["id"], "channel_id": task["channel_id"],
               "thread_id": entry["thread_id"], "thread_depth": task["thread_depth"],
               "author_id": entry["author_id"], "author_kind": entry["author_kind"],
               "text": entry["text"], "metadata": entry["metadata"],
               "created_at": from_epoch_ms(entry["created_ms"])}
    return message, context, entry["created_ms"]


def status_record(agent_id: str, worker_id: str, open_tasks: int, finished_tasks: int,
                  error: str | None, now: datetime) -> AgentStatus:
    """An AgentStatus: one per agent and worker on the compacted status topic."""
    state: WorkState = "ERROR" if error else ("WORKING" if open_tasks else "IDLE")
    return {"event_id": str(uuid.uuid4()), "agent_id": agent_id, "worker_id": worker_id,
            "state": state, "open_tasks": open_tasks, "finished_tasks": finished_tasks,
            "last_error": error, "updated_at": now}
