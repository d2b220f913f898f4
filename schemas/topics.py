"""The Kafka topics of docs/ARCHITECTURE.md: name, key, the events each carries, retention.

The chat, relevance and inference topics share ``AGORA_PARTITIONS`` so that a
channel's records land on the same partition number in each and so meet in the same
worker; the other topics use the same count, since none needs more locally.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    events: tuple[str, ...]
    config: dict[str, str] = field(default_factory=dict)
    stored: bool = True  # whether the sinks keep its events


CHAT_MESSAGES = Topic("agora.chat.messages", "channel_id", ("ChatMessage",))
RELEVANCE_DECISIONS = Topic("agora.relevance.decisions", "channel_id", ("RelevanceDecision",))
# Replies as they are generated, for live followers only: the finished ChatMessage is
# the record, so an hour of chunks is kept and the sinks skip them.
REPLY_CHUNKS = Topic("agora.chat.replies.partial", "channel_id", ("ReplyChunk",),
                     {"retention.ms": str(3600 * 1000)}, stored=False)
INFERENCE_TASKS = Topic("agora.inference.tasks", "channel_id", ("InferenceTask",))
TOOL_REQUESTS = Topic("agora.tool.requests", "channel_id", ("ToolRequest",))
# Requests whose tool-usage vote passed, written only by the votes agent.
TOOL_APPROVED = Topic("agora.tool.approved", "channel_id", ("ToolRequest",))
TOOL_RESULTS = Topic("agora.tool.results", "channel_id", ("ToolResult",))
# A vote's whole life in one partition, in order: for a TOOL_USAGE vote the gated
# ToolRequest comes first, then the proposal, ballots and the timer's deadline notice.
VOTES = Topic("agora.votes", "vote_id", ("ToolRequest", "VoteProposal", "Ballot", "VoteDeadline"))
VOTE_RESULTS = Topic("agora.vote.results", "vote_id", ("VoteResult", "BallotRejected"))
# The registry is read as a table: only the latest profile per agent matters.
AGENTS = Topic("agora.agents", "agent_id", ("AgentProfile",),
               {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})
# Workload and working state per agent and responder worker (single writer per key).
AGENT_STATUS = Topic("agora.agents.status", "agent_id@worker_id", ("AgentStatus",),
                     {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})
# Documents added to or removed from the knowledge base, the latest per document kept.
# The knowledge agent writes them to Postgres itself (chunks and vectors), so the sinks
# skip them. A record carries a whole document: up to AGORA_KNOWLEDGE_MAX_BYTES.
KNOWLEDGE_DOCUMENTS = Topic("agora.knowledge.documents", "document_id", ("KnowledgeDocument",),
                            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
                             "max.message.bytes": str(16 * 1024 * 1024)}, stored=False)
# An incident's life in one partition, in order: the messages that report it (relevance
# detects them) and what people do about it (the gateway's IncidentService).
INCIDENTS = Topic("agora.incidents", "channel_id", ("IncidentDetected", "IncidentChanged"))
# Ratings of replies and outcomes, per agent: the feedback agent scores them.
AGENT_FEEDBACK = Topic("agora.agents.feedback", "agent_id", ("AgentFeedback",))
DEADLETTER = Topic("agora.deadletter", "source_topic", ("DeadLetter",))

ALL: tuple[Topic, ...] = (CHAT_MESSAGES, REPLY_CHUNKS, RELEVANCE_DECISIONS, INFERENCE_TASKS,
                          TOOL_REQUESTS, TOOL_APPROVED, TOOL_RESULTS, VOTES, VOTE_RESULTS, AGENTS,
                          AGENT_STATUS, AGENT_FEEDBACK, KNOWLEDGE_DOCUMENTS, INCIDENTS,
                          DEADLETTER)
STORED: tuple[Topic, ...] = tuple(t for t in ALL if t.stored)
STORED_EVENTS: frozenset[str] = frozenset(e for t in STORED for e in t.events)
