"""Sample events for the sink tests: one list, shared by the Postgres rows
(test_sink_rows.py), the ClickHouse rows (test_clickhouse_rows.py), the analytics
queries, the dashboards and the sink stack tests.

Every event kind at least once, as the sinks see it (encoded, then decoded), with nulls
and non-nulls, empty and full maps and arrays, bytes, a NUL character, a NaN factor,
JSON (with a NaN) and non-JSON tool arguments; in an order that exercises both arrival
orders of a vote and its result and of a ballot and its rejection, and an older agent
profile (and status) after a newer one. Tests name events by label: ``uid("ballot-1")``.

Also the Gemma-style chat template the generator tests format messages with.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from schemas import codec

# Recent times: ClickHouse's raw tables expire rows 180 days after their event time, and
# a background TTL merge must not delete sample rows in the middle of a test.
T0 = (datetime.now(timezone.utc) - timedelta(hours=2)).replace(second=0, microsecond=0)
NS = uuid.UUID("5b0c1f8e-6a53-4f0e-9d8a-6f1c2b7a9e01")


def uid(label: str) -> str:
    return str(uuid.uuid5(NS, label))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def roundtrip(name: str, record: dict) -> tuple[str, dict]:
    """The record exactly as the sink sees it: encoded, then decoded."""
    return codec.decode(codec.encode(name, record), expected=name)


def _samples() -> list[tuple[str, dict]]:
    m1, m2, m3 = uid("m1"), uid("m2"), uid("m3")
    v1, v2 = uid("vote-1"), uid("vote-2")
    b1, b2, b3 = uid("ballot-1"), uid("ballot-2"), uid("ballot-3")
    req_ok, req_bad = uid("req-ok"), uid("req-bad")
    profile = {
        "event_id": uid("profile-new"), "agent_id": "developer-backend", "name": "Backend Dev",
        "template": "developer-backend", "persona": "pragmatic", "system_prompt": "be brief",
        "expertise": "databases", "tools": ["calculator", "shell"], "channels": ["general"],
        "permissions": ["tool:calculator", "vote:cast"], "state": "ACTIVE",
        "state_reason": None, "performance_score": 0.7, "created_at": at(0),
        "updated_at": at(100),
    }
    older = {**profile, "event_id": uid("profile-old"), "name": "Old Name", "state": "PAUSED",
             "state_reason": "maintenance window", "updated_at": at(50)}
    status = {"event_id": uid("status-new"), "agent_id": "developer-backend",
              "worker_id": "responder-1", "state": "WORKING", "open_tasks": 2,
              "finished_tasks": 7, "last_error": None, "updated_at": at(100)}
    incident = {
        "event_id": uid("incident-open"), "incident_id": uid("incident-1"), "opened": True,
        "channel_id": "general", "message_id": m1, "author_id": "human:maya",
        "text": "the API returns 502 since the deploy", "severity": "SEV1",
        "service": "api", "score": 0.82,
        "evidence": [{"signal": "words", "value": 1.0, "detail": "502"},
                     {"signal": "similarity", "value": float("nan"), "detail": "nearest"}],
        "message_at": at(800), "detected_at": at(800.5), "config_version": "abc123"}
    acknowledged = {
        "event_id": uid("incident-ack"), "incident_id": uid("incident-1"),
        "channel_id": "general", "change": "ACKNOWLEDGED", "actor_id": "human:maya",
        "note": None, "severity": "SEV1", "opened_at": at(800), "changed_at": at(900)}
    proposal = {
        "event_id": uid("proposal-1"), "vote_id": v1, "channel_id": "general",
        "proposer_id": "tools", "vote_type": "TOOL_USAGE", "strategy": "WEIGHTED",
        "title": "Run shell?", "description": "ls -la", "options": ["yes", "no"],
        "eligible_voters": ["human:maya", "developer-backend"],
        "weights": {"human:maya": 2.0}, "quorum": 0.5, "deadline_at": at(400),
        "created_at": at(300), "tool_request_id": req_ok,
    }
    result = {
        "event_id": uid("result-1"), "vote_id": v1, "channel_id": "general",
        "vote_type": "TOOL_USAGE", "strategy": "WEIGHTED", "outcome": "PASSED",
        "winning_option": "yes", "tally": {"yes": 2.0, "no": 0.0, "abstain": 0.0},
        "ballots_counted": 1, "eligible_count": 2, "reason": "yes has 100%",
        "closed_at": at(400), "tool_request_id": req_ok,
    }
    ballot = {"event_id": b1, "vote_id": v1, "channel_id": "general",
              "voter_id": "developer-backend", "choice": "maybe", "rationale": "",
              "cast_at": at(310)}
    rejection = {"event_id": uid("reject-1"), "vote_id": v1, "voter_id": "developer-backend",
                 "ballot_event_id": b1, "reason": "INVALID_CHOICE",
                 "detail": "'maybe' is not an option", "rejected_at": at(311),
                 "channel_id": "general"}
    return [
        ("ChatMessage", {
            "event_id": m1, "channel_id": "general", "thread_id": m1, "author_id": "human:maya",
            "author_kind": "HUMAN", "text": "API returns 502 since the deploy \u2014 d\u00e9j\u00e0",
            "mentions": ["developer-backend"], "thread_depth": 0, "created_at": at(10),
            "metadata": {"client": "web", "trace": "abc"}}),
        ("ChatMessage", {
            "event_id": m2, "channel_id": "general", "thread_id": m1, "reply_to": m1,
            "author_id": "developer-backend", "author_kind": "AGENT",
            "text": "Check the upstream timeout \u2014 and nul\x00bytes", "thread_depth": 1,
            "created_at": at(20.5), "task_id": uid("task-1"), "metadata": {},
            "sources": [{"document_id": uid("doc-1"), "chunk_id": uid("chunk-1"),
                         "title": "API 502 runbook", "heading": "API 502 runbook > Roll back"}]}),
        ("ChatMessage", {
            "event_id": m3, "channel_id": "random", "thread_id": m3, "author_id": "system",
            "author_kind": "SYSTEM", "text": "", "thread_depth": 0, "created_at": at(5)}),
        ("AgentProfile", profile),
        ("AgentProfile", older),  # older version after the newer one: ignored
        ("AgentProfile", {
            "event_id": uid("profile-writer"), "agent_id": "creative-writer", "name": "Writer",
            "template": "creative-writer", "persona": "playful", "system_prompt": "rhyme",
            "expertise": "poems", "state": "MAINTENANCE", "state_reason": "model upgrade",
            "performance_score": 0.4, "created_at": at(0), "updated_at": at(0)}),
        ("AgentStatus", status),
        ("AgentStatus", {**status, "event_id": uid("status-old"), "state": "IDLE",
                         "open_tasks": 0, "updated_at": at(90)}),
        ("AgentStatus", {**status, "event_id": uid("status-w2"), "worker_id": "responder-2",
                         "state": "ERROR", "open_tasks": 0, "finished_tasks": 2**40,
                         "last_error": "generator timeout", "updated_at": at(101)}),
        ("RelevanceDecision", {
            "event_id": uid("decision-1"), "message_id": m1, "channel_id": "general",
            "thread_id": m1, "thread_depth": 0, "decided_at": at(11),
            "scores": [{"agent_id": "developer-backend", "score": 0.81, "expertise": 0.9,
                        "workload": 1.0, "social": 1.0, "timing": 1.0, "quality": 0.7,
                        "selected": True, "reason": "mentioned in the message"},
                       {"agent_id": "analyst-data", "score": 0.62, "expertise": 0.6,
                        "workload": 0.5, "social": 0.0, "timing": 1.0, "quality": 0.8,
                        "selected": True, "reason": "score 0.62 >= threshold 0.50"},
                       {"agent_id": "creative-writer", "score": 0.2, "expertise": float("nan"),
                        "workload": 1.0, "social": 0.0, "timing": 1.0, "quality": 0.4,
                        "selected": False, "reason": "below threshold"}],
            "selected": ["developer-backend", "analyst-data"], "config_version": "v3"}),
        ("RelevanceDecision", {
            "event_id": uid("decision-2"), "message_id": m3, "channel_id": "random",
            "thread_id": m3, "thread_depth": 0, "decided_at": at(6),
            "skip_reason": "system message", "config_version": "v3"}),
        ("InferenceTask", {
            "event_id": uid("task-1"), "decision_id": uid("decision-1"), "message_id": m1,
            "channel_id": "general", "thread_id": m1, "thread_depth": 0,
            "agent_id": "developer-backend", "context_message_ids": [m1],
            "created_at": at(12), "deadline_at": at(72)}),
        ("InferenceTask", {
            "event_id": uid("task-2"), "decision_id": uid("decision-1"), "message_id": m1,
            "channel_id": "general", "thread_id": m1, "thread_depth": 0,
            "agent_id": "analyst-data", "created_at": at(12)}),
        ("ToolRequest", {
            "event_id": req_ok, "channel_id": "general", "agent_id": "developer-backend",
            "tool": "shell", "arguments_json": '{"command": "ls -la", "n": NaN}',
            "reason": "look", "source_message_id": m1, "requested_at": at(25)}),
        ("ToolRequest", {
            "event_id": req_bad, "channel_id": "general", "agent_id": "creative-writer",
            "tool": "calculator", "arguments_json": "2+2 {not json", "reason": "sum",
            "requested_at": at(26)}),
        ("ToolResult", {
            "event_id": uid("run-ok"), "request_id": req_ok, "channel_id": "general",
            "agent_id": "developer-backend", "tool": "shell", "status": "OK",
            "output": "total 0\n", "artifacts": ["/tmp/a.txt"], "vote_id": v1,
            "started_at": at(401), "finished_at": at(402), "duration_ms": 850}),
        ("ToolResult", {
            "event_id": uid("run-denied"), "request_id": req_bad, "channel_id": "general",
            "agent_id": "creative-writer", "tool": "calculator", "status": "DENIED",
            "output": "", "error": "agent lacks tool:calculator in general",
            "finished_at": at(27), "duration_ms": 0}),
        # Vote 1: proposal, ballot, rejection, deadline, result (in order).
        ("VoteProposal", proposal),
        ("Ballot", ballot),
        ("BallotRejected", rejection),
        ("Ballot", {**ballot, "event_id": b3, "voter_id": "human:maya", "choice": "yes",
                    "rationale": "fine", "cast_at": at(320)}),
        ("VoteDeadline", {"event_id": uid("deadline-1"), "vote_id": v1,
                          "deadline_at": at(400), "noticed_at": at(400.25)}),
        ("VoteResult", result),
        # Vote 2: result and rejection before the proposal and the ballot.
        ("VoteResult", {**result, "event_id": uid("result-2"), "vote_id": v2,
                        "vote_type": "PROJECT_DECISION", "strategy": "SIMPLE_MAJORITY",
                        "outcome": "NO_QUORUM", "winning_option": None, "tally": {},
                        "ballots_counted": 0, "reason": "no quorum", "closed_at": at(700),
                        "tool_request_id": None}),
        ("BallotRejected", {**rejection, "event_id": uid("reject-2"), "vote_id": v2,
                            "ballot_event_id": b2, "reason": "LATE", "detail": "too late",
                            "rejected_at": at(701), "channel_id": None}),
        ("VoteProposal", {**proposal, "event_id": uid("proposal-2"), "vote_id": v2,
                          "vote_type": "PROJECT_DECISION", "strategy": "SIMPLE_MAJORITY",
                          "title": "Ship Friday?", "weights": {}, "eligible_voters": [],
                          "deadline_at": at(700), "created_at": at(600),
                          "tool_request_id": None}),
        ("Ballot", {**ballot, "event_id": b2, "vote_id": v2, "choice": "yes",
                    "cast_at": at(705)}),
        # An incident: opened (Sev1), joined (Sev2: it stays Sev1), acknowledged,
        # resolved.
        ("IncidentDetected", incident),
        ("IncidentDetected", {**incident, "event_id": uid("incident-join"), "opened": False,
                              "message_id": m2, "author_id": "human:lea",
                              "text": "still slow \x00, some 502s", "severity": "SEV2",
                              "service": None, "evidence": [], "message_at": at(830),
                              "detected_at": at(830.5)}),
        ("IncidentChanged", acknowledged),
        ("IncidentChanged", {**acknowledged, "event_id": uid("incident-resolved"),
                             "change": "RESOLVED", "actor_id": "human:lea",
                             "note": "pool size raised", "changed_at": at(1500)}),
        # Feedback: a person's rating of a reply, and a failed tool run.
        ("AgentFeedback", {
            "event_id": uid("rating-1"), "agent_id": "developer-backend",
            "channel_id": "general", "kind": "RATING", "value": 1, "rater_id": "human:maya",
            "ref_id": m2, "comment": "spot on \x00", "created_at": at(40)}),
        ("AgentFeedback", {
            "event_id": uid("feedback-tool"), "agent_id": "developer-backend",
            "channel_id": "general", "kind": "TOOL_FAILED", "value": -1, "rater_id": None,
            "ref_id": req_bad, "comment": "exit 1", "created_at": at(41)}),
        ("DeadLetter", {
            "event_id": uid("dead-1"), "source_topic": "agora.chat.messages", "partition": 2,
            "offset": 12345678901, "key": b"general", "value": b"\x00\xffnot avro",
            "headers": {"trace": b"\x01\x02"}, "source_timestamp": at(1),
            "reason": "payload starts with 00 ff", "error_type": "MalformedPayload",
            "stage": "postgres", "attempts": 3, "failed_at": at(2)}),
        ("DeadLetter", {
            "event_id": uid("dead-2"), "source_topic": "agora.votes", "partition": 0,
            "offset": 0, "reason": "tombstone", "error_type": "MalformedPayload",
            "stage": "votes", "attempts": 1, "failed_at": at(3)}),
    ]


SAMPLES: list[tuple[str, dict]] = [roundtrip(name, record) for name, record in _samples()]
BY_ID: dict[str, tuple[str, dict]] = {record["event_id"]: (name, record)
                                       for name, record in SAMPLES}


def sample(label: str) -> tuple[str, dict]:
    """The sample event with id ``uid(label)``: (event name, record)."""
    return BY_ID[uid(label)]


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else 'user' }}\n{{ m['content'] | trim }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
