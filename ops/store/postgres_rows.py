"""Rows for the Postgres sink: which statements a decoded event becomes, with what
parameters. Pure (no I/O); the tables are ``ops/store/migrations/postgres/0001_state.sql``.

``rows(name, record)`` gives ``(statement name, parameters)`` pairs. ``STATEMENTS``
maps a statement name to its SQL, with psycopg named placeholders, run per row;
``BULK`` the high-volume ones, staged and written per batch (``postgres.execute`` runs
both kinds). Every statement is idempotent, so a replayed event changes nothing:

* immutable events are ``INSERT ... ON CONFLICT DO NOTHING`` on their event id;
* agents and agent_status keep the latest version by ``(updated_at, event_id)``, in
  whatever order versions arrive;
* a message bumps its channel's counter in the same statement that inserts it, and
  only when the message row was new;
* a vote and its result, and a ballot and its rejection, come on different topics in
  either order: each side writes its own row and then fixes up the other side's row
  when it is there (see the migration's comments). Both sides first take a
  transaction-scoped advisory lock on the vote or ballot id (``advisory_lock``) so that
  two sink transactions writing them at the same time cannot miss each other.

Run an event's statements in the order given, in one transaction at READ COMMITTED
(psycopg's default); the lock lasts until that transaction ends. Grouping a batch's
statements by name is fine: the fix-ups give the same rows whichever side runs first.

Parameters: text[] columns get Python lists of str, jsonb columns a JSON ``str`` (cast
with ``::jsonb`` in SQL, or COPYed into a jsonb column) (this module does not import psycopg), times aware datetimes,
bytes base64 text. Text that Postgres cannot store is replaced rather than failing the
event: NUL characters and lone surrogates become U+FFFD (text and jsonb refuse them),
and non-finite floats become null inside JSON (jsonb has no NaN or Infinity).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ops.store.values import arguments, b64, json_text, rows_of
from schemas.codec import safe_text

__all__ = ["BULK", "MESSAGE_COLUMNS", "STATEMENTS", "reference_rows", "rows"]

STATEMENTS: dict[str, str] = {
    # --- reference data -------------------------------------------------------------
    "agent_template": """
INSERT INTO agent_templates AS t
    (template, name, persona, system_prompt, expertise, tools, permissions, performance_score)
VALUES (%(template)s, %(name)s, %(persona)s, %(system_prompt)s, %(expertise)s,
        %(tools)s::text[], %(permissions)s::text[], %(performance_score)s)
ON CONFLICT (template) DO UPDATE SET
    name = excluded.name, persona = excluded.persona, system_prompt = excluded.system_prompt,
    expertise = excluded.expertise, tools = excluded.tools, permissions = excluded.permissions,
    performance_score = excluded.performance_score, loaded_at = now()
WHERE (t.name, t.persona, t.system_prompt, t.expertise, t.tools, t.permissions,
       t.performance_score)
      IS DISTINCT FROM (excluded.name, excluded.persona, excluded.system_prompt,
                        excluded.expertise, excluded.tools, excluded.permissions,
                        excluded.performance_score)""",
    "tool_definition": """
INSERT INTO tool_definitions AS t
    (name, category, description, parameters, permissions, needs_vote, network, limits,
     vote_strategy, vote_quorum)
VALUES (%(name)s, %(category)s, %(description)s, %(parameters)s::jsonb, %(permissions)s::text[],
        %(needs_vote)s, %(network)s, %(limits)s::jsonb, %(vote_strategy)s, %(vote_quorum)s)
ON CONFLICT (name) DO UPDATE SET
    category = excluded.category, description = excluded.description,
    parameters = excluded.parameters, permissions = excluded.permissions,
    needs_vote = excluded.needs_vote, network = excluded.network, limits = excluded.limits,
    vote_strategy = excluded.vote_strategy, vote_quorum = excluded.vote_quorum,
    loaded_at = now()
WHERE (t.category, t.description, t.parameters, t.permissions, t.needs_vote, t.network,
       t.limits, t.vote_strategy, t.vote_quorum)
      IS DISTINCT FROM (excluded.category, excluded.description, excluded.parameters,
                        excluded.permissions, excluded.needs_vote, excluded.network,
                        excluded.limits, excluded.vote_strategy, excluded.vote_quorum)""",
    # --- incidents --------------------------------------------------------------------
    # A joining message raises the severity (SEV1 < SEV2 < SEV3 < UNKNOWN as text) and
    # recounts the incident's messages, so a replay changes nothing.
    "incident_message": """
INSERT INTO incident_messages (event_id, incident_id, opened, channel_id, message_id,
    author_id, text, severity, service, score, evidence, message_at, detected_at,
    config_version)
VALUES (%(event_id)s, %(incident_id)s, %(opened)s, %(channel_id)s, %(message_id)s,
        %(author_id)s, %(text)s, %(severity)s, %(service)s, %(score)s, %(evidence)s::jsonb,
        %(message_at)s, %(detected_at)s, %(config_version)s)
ON CONFLICT (event_id) DO NOTHING""",
    "incident": """
INSERT INTO incidents AS i (incident_id, channel_id, title, severity, service, opened_by,
    opened_message_id, opened_at, updated_at)
VALUES (%(incident_id)s, %(channel_id)s, %(title)s, %(severity)s, %(service)s,
        %(author_id)s, %(message_id)s, %(message_at)s, %(detected_at)s)
ON CONFLICT (incident_id) DO UPDATE SET
    severity = least(i.severity, excluded.severity),
    service = coalesce(i.service, excluded.service),
    messages = (SELECT count(*) FROM incident_messages m
                WHERE m.incident_id = excluded.incident_id),
    updated_at = greatest(i.updated_at, excluded.updated_at)""",
    "incident_change": """
INSERT INTO incident_changes (event_id, incident_id, channel_id, change, actor_id, note,
    severity, opened_at, changed_at)
VALUES (%(event_id)s, %(incident_id)s, %(channel_id)s, %(change)s, %(actor_id)s, %(note)s,
        %(severity)s, %(opened_at)s, %(changed_at)s)
ON CONFLICT (event_id) DO NOTHING""",
    # The gateway made the change already; this keeps the first acknowledgement and
    # resolution whatever the order, and never reopens a resolved incident.
    "incident_state": """
UPDATE incidents SET
    status = CASE WHEN %(resolved)s OR status = 'resolved' THEN 'resolved'
                  ELSE 'acknowledged' END,
    acknowledged_at = coalesce(acknowledged_at, %(changed_at)s),
    acknowledged_by = coalesce(acknowledged_by, %(actor_id)s),
    resolved_at = CASE WHEN %(resolved)s THEN coalesce(resolved_at, %(changed_at)s)
                       ELSE resolved_at END,
    resolved_by = CASE WHEN %(resolved)s THEN coalesce(resolved_by, %(actor_id)s)
                       ELSE resolved_by END,
    resolution = CASE WHEN %(resolved)s AND resolved_at IS NULL THEN %(note)s
                      ELSE resolution END,
    updated_at = greatest(updated_at, %(changed_at)s)
WHERE incident_id = %(incident_id)s""",
    "agent_feedback": """
INSERT INTO agent_feedback (event_id, agent_id, channel_id, kind, value, rater_id, ref_id,
    comment, created_at)
VALUES (%(event_id)s, %(agent_id)s, %(channel_id)s, %(kind)s, %(value)s, %(rater_id)s,
        %(ref_id)s, %(comment)s, %(created_at)s)
ON CONFLICT (event_id) DO NOTHING""",
    # --- shared ---------------------------------------------------------------------
    # Serialises the two sides of a vote (proposal/result) or of a ballot
    # (ballot/rejection) across concurrent transactions; released at commit.
    "advisory_lock": """
SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))""",
    "infraction": """
INSERT INTO infractions (event_id, agent_id, kind, detail, occurred_at)
VALUES (%(event_id)s, %(agent_id)s, %(kind)s, %(detail)s, %(occurred_at)s)
ON CONFLICT (event_id) DO NOTHING""",
    # --- AgentProfile / AgentStatus: latest (updated_at, event_id) wins ---------------
    "agent": """
INSERT INTO agents AS a
    (agent_id, event_id, name, template, persona, system_prompt, expertise, tools, channels,
     permissions, state, state_reason, performance_score, created_at, updated_at)
VALUES (%(agent_id)s, %(event_id)s, %(name)s, %(template)s, %(persona)s, %(system_prompt)s,
        %(expertise)s, %(tools)s::text[], %(channels)s::text[], %(permissions)s::text[],
        %(state)s, %(state_reason)s, %(performance_score)s, %(created_at)s, %(updated_at)s)
ON CONFLICT (agent_id) DO UPDATE SET
    event_id = excluded.event_id, name = excluded.name, template = excluded.template,
    persona = excluded.persona, system_prompt = excluded.system_prompt,
    expertise = excluded.expertise, tools = excluded.tools, channels = excluded.channels,
    permissions = excluded.permissions, state = excluded.state,
    state_reason = excluded.state_reason, performance_score = excluded.performance_score,
    created_at = excluded.created_at, updated_at = excluded.updated_at, ingested_at = now()
WHERE (excluded.updated_at, excluded.event_id) > (a.updated_at, a.event_id)""",
    "agent_status": """
INSERT INTO agent_status AS s
    (agent_id, worker_id, event_id, state, open_tasks, finished_tasks, last_error, updated_at)
VALUES (%(agent_id)s, %(worker_id)s, %(event_id)s, %(state)s, %(open_tasks)s,
        %(finished_tasks)s, %(last_error)s, %(updated_at)s)
ON CONFLICT (agent_id, worker_id) DO UPDATE SET
    event_id = excluded.event_id, state = excluded.state, open_tasks = excluded.open_tasks,
    finished_tasks = excluded.finished_tasks, last_error = excluded.last_error,
    updated_at = excluded.updated_at, ingested_at = now()
WHERE (excluded.updated_at, excluded.event_id) > (s.updated_at, s.event_id)""",
    # --- tools ----------------------------------------------------------------------
    "tool_request": """
INSERT INTO tool_requests
    (event_id, channel_id, agent_id, tool, arguments, reason, source_message_id, requested_at)
VALUES (%(event_id)s, %(channel_id)s, %(agent_id)s, %(tool)s, %(arguments)s::jsonb,
        %(reason)s, %(source_message_id)s, %(requested_at)s)
ON CONFLICT (event_id) DO NOTHING""",
    # No conflict target: a second result for the same request (request_id is unique)
    # is ignored like a replay, not an error.
    "tool_run": """
INSERT INTO tool_runs
    (event_id, request_id, channel_id, agent_id, tool, status, output, error, artifacts,
     vote_id, started_at, finished_at, duration_ms)
VALUES (%(event_id)s, %(request_id)s, %(channel_id)s, %(agent_id)s, %(tool)s, %(status)s,
        %(output)s, %(error)s, %(artifacts)s::text[], %(vote_id)s, %(started_at)s,
        %(finished_at)s, %(duration_ms)s)
ON CONFLICT DO NOTHING""",
    # --- votes ----------------------------------------------------------------------
    # The proposal takes the closed fields from vote_results when the result came first.
    "vote": """
INSERT INTO votes
    (vote_id, event_id, channel_id, proposer_id, vote_type, strategy, title, description,
     options, eligible_voters, weights, quorum, deadline_at, created_at, tool_request_id,
     status, outcome, winning_option, tally, ballots_counted, eligible_count, reason,
     closed_at)
SELECT p.vote_id, p.event_id, p.channel_id, p.proposer_id, p.vote_type, p.strategy, p.title,
       p.description, p.options, p.eligible_voters, p.weights, p.quorum, p.deadline_at,
       p.created_at, p.tool_request_id,
       CASE WHEN r.vote_id IS NULL THEN 'OPEN' ELSE 'CLOSED' END,
       r.outcome, r.winning_option, r.tally, r.ballots_counted, r.eligible_count, r.reason,
       r.closed_at
FROM (VALUES (%(vote_id)s::text, %(event_id)s::text, %(channel_id)s::text,
              %(proposer_id)s::text, %(vote_type)s::text, %(strategy)s::text, %(title)s::text,
              %(description)s::text, %(options)s::text[], %(eligible_voters)s::text[],
              %(weights)s::jsonb, %(quorum)s::double precision, %(deadline_at)s::timestamptz,
              %(created_at)s::timestamptz, %(tool_request_id)s::text))
     AS p (vote_id, event_id, channel_id, proposer_id, vote_type, strategy, title,
           description, options, eligible_voters, weights, quorum, deadline_at, created_at,
           tool_request_id)
LEFT JOIN vote_results AS r ON r.vote_id = p.vote_id
ON CONFLICT (vote_id) DO NOTHING""",
    # No conflict target: one result per vote (vote_id is unique); any repeat is ignored.
    "vote_result": """
INSERT INTO vote_results
    (event_id, vote_id, channel_id, vote_type, strategy, outcome, winning_option, tally,
     ballots_counted, eligible_count, reason, closed_at, tool_request_id, request_sha256)
VALUES (%(event_id)s, %(vote_id)s, %(channel_id)s, %(vote_type)s, %(strategy)s, %(outcome)s,
        %(winning_option)s, %(tally)s::jsonb, %(ballots_counted)s, %(eligible_count)s,
        %(reason)s, %(closed_at)s, %(tool_request_id)s, %(request_sha256)s)
ON CONFLICT DO NOTHING""",
    # Closes the vote from the stored result (the first one kept), when the vote is there.
    "vote_close": """
UPDATE votes AS v SET
    status = 'CLOSED', outcome = r.outcome, winning_option = r.winning_option,
    tally = r.tally, ballots_counted = r.ballots_counted, eligible_count = r.eligible_count,
    reason = r.reason, closed_at = r.closed_at
FROM vote_results AS r
WHERE r.vote_id = %(vote_id)s AND v.vote_id = r.vote_id AND v.status = 'OPEN'""",
    # The ballot takes counted=false from ballot_rejections when the rejection came first.
    "ballot": """
INSERT INTO ballots
    (event_id, vote_id, channel_id, voter_id, choice, rationale, cast_at, counted,
     rejection_reason, rejection_detail)
SELECT b.event_id, b.vote_id, b.channel_id, b.voter_id, b.choice, b.rationale, b.cast_at,
       r.event_id IS NULL, r.reason, r.detail
FROM (VALUES (%(event_id)s::text, %(vote_id)s::text, %(channel_id)s::text,
              %(voter_id)s::text, %(choice)s::text, %(rationale)s::text,
              %(cast_at)s::timestamptz))
     AS b (event_id, vote_id, channel_id, voter_id, choice, rationale, cast_at)
LEFT JOIN ballot_rejections AS r ON r.ballot_event_id = b.event_id
ON CONFLICT (event_id) DO NOTHING""",
    # No conflict target: a ballot is rejected once (ballot_event_id is unique).
    "ballot_rejection": """
INSERT INTO ballot_rejections
    (event_id, vote_id, voter_id, ballot_event_id, reason, detail, rejected_at, channel_id)
VALUES (%(event_id)s, %(vote_id)s, %(voter_id)s, %(ballot_event_id)s, %(reason)s,
        %(detail)s, %(rejected_at)s, %(channel_id)s)
ON CONFLICT DO NOTHING""",
    # Flags the ballot from the stored rejection, when the ballot is there.
    "ballot_reject": """
UPDATE ballots AS b SET
    counted = false, rejection_reason = r.reason, rejection_detail = r.detail
FROM ballot_rejections AS r
WHERE r.ballot_event_id = %(ballot_event_id)s AND b.event_id = r.ballot_event_id
  AND b.counted""",
}


# --- value conversion ---------------------------------------------------------------

def _text(value: str) -> str:
    """``value`` as Postgres can store it in text or jsonb (no NUL, no lone surrogate)."""
    return safe_text(value.replace("\x00", "\ufffd") if "\x00" in value else value)


def _json(value: Any) -> str:
    """JSON text for a ``%(x)s::jsonb`` parameter."""
    return json_text(value, _text)


def _params(**values: Any) -> dict[str, Any]:
    """Parameters with text made storable (lists of text for text[] columns)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, str):
            value = _text(value)
        elif isinstance(value, (list, tuple)):
            value = [_text(v) if isinstance(v, str) else v for v in value]
        out[key] = value
    return out


def _lock(kind: str, key: str) -> tuple[str, dict]:
    return "advisory_lock", _params(lock_key=f"{kind}:{key}")


# --- events -------------------------------------------------------------------------

def _chat_message(r: dict) -> list[tuple[str, dict]]:
    return [("message", _params(
        event_id=r["event_id"], channel_id=r["channel_id"], thread_id=r["thread_id"],
        reply_to=r.get("reply_to"), author_id=r["author_id"], author_kind=r["author_kind"],
        text=r["text"], mentions=list(r.get("mentions") or []),
        thread_depth=r["thread_depth"], created_at=r["created_at"],
        task_id=r.get("task_id"), metadata=_json(r.get("metadata") or {}),
        sources=None if r.get("sources") is None else _json(r["sources"])))]


def _agent_profile(r: dict) -> list[tuple[str, dict]]:
    return [("agent", _params(
        agent_id=r["agent_id"], event_id=r["event_id"], name=r["name"],
        template=r["template"], persona=r["persona"], system_prompt=r["system_prompt"],
        expertise=r["expertise"], tools=list(r.get("tools") or []),
        channels=list(r.get("channels") or []), permissions=list(r.get("permissions") or []),
        state=r.get("state", "PAUSED"), state_reason=r.get("state_reason"),
        performance_score=r["performance_score"], created_at=r["created_at"],
        updated_at=r["updated_at"]))]


def _agent_status(r: dict) -> list[tuple[str, dict]]:
    return [("agent_status", _params(
        agent_id=r["agent_id"], worker_id=r["worker_id"], event_id=r["event_id"],
        state=r.get("state", "ERROR"), open_tasks=r["open_tasks"],
        finished_tasks=r["finished_tasks"], last_error=r.get("last_error"),
        updated_at=r["updated_at"]))]


def _relevance_decision(r: dict) -> list[tuple[str, dict]]:
    return [("relevance_decision", _params(
        event_id=r["event_id"], message_id=r["message_id"], channel_id=r["channel_id"],
        thread_id=r["thread_id"], thread_depth=r["thread_depth"], decided_at=r["decided_at"],
        selected=list(r.get("selected") or []), skip_reason=r.get("skip_reason"),
        config_version=r["config_version"], scores=_json(list(r.get("scores") or []))))]


def _inference_task(r: dict) -> list[tuple[str, dict]]:
    return [("inference_task", _params(
        event_id=r["event_id"], decision_id=r["decision_id"], message_id=r["message_id"],
        channel_id=r["channel_id"], thread_id=r["thread_id"], thread_depth=r["thread_depth"],
        agent_id=r["agent_id"], context_message_ids=list(r.get("context_message_ids") or []),
        created_at=r["created_at"], deadline_at=r.get("deadline_at")))]


def _tool_request(r: dict) -> list[tuple[str, dict]]:
    return [("tool_request", _params(
        event_id=r["event_id"], channel_id=r["channel_id"], agent_id=r["agent_id"],
        tool=r["tool"], arguments=arguments(r["arguments_json"], _text)[0], reason=r["reason"],
        source_message_id=r.get("source_message_id"), requested_at=r["requested_at"]))]


def _tool_result(r: dict) -> list[tuple[str, dict]]:
    status = r.get("status", "FAILED")
    out = [("tool_run", _params(
        event_id=r["event_id"], request_id=r["request_id"], channel_id=r["channel_id"],
        agent_id=r["agent_id"], tool=r["tool"], status=status, output=r["output"],
        error=r.get("error"), artifacts=list(r.get("artifacts") or []),
        vote_id=r.get("vote_id"), started_at=r.get("started_at"),
        finished_at=r["finished_at"], duration_ms=r["duration_ms"]))]
    if status == "DENIED":
        out.append(("infraction", _params(
            event_id=r["event_id"], agent_id=r["agent_id"], kind="tool_denied",
            detail=f"tool {r['tool']} denied: {r.get('error') or 'no permission'}",
            occurred_at=r["finished_at"])))
    return out


def _vote_proposal(r: dict) -> list[tuple[str, dict]]:
    return [_lock("vote", r["vote_id"]), ("vote", _params(
        vote_id=r["vote_id"], event_id=r["event_id"], channel_id=r["channel_id"],
        proposer_id=r["proposer_id"], vote_type=r.get("vote_type", "PROJECT_DECISION"),
        strategy=r.get("strategy", "CONSENSUS"), title=r["title"],
        description=r["description"], options=list(r.get("options", ["yes", "no"])),
        eligible_voters=list(r.get("eligible_voters") or []),
        weights=_json(r.get("weights") or {}), quorum=r["quorum"],
        deadline_at=r["deadline_at"], created_at=r["created_at"],
        tool_request_id=r.get("tool_request_id")))]


def _ballot(r: dict) -> list[tuple[str, dict]]:
    return [_lock("ballot", r["event_id"]), ("ballot", _params(
        event_id=r["event_id"], vote_id=r["vote_id"], channel_id=r["channel_id"],
        voter_id=r["voter_id"], choice=r["choice"], rationale=r["rationale"],
        cast_at=r["cast_at"]))]


def _vote_deadline(r: dict) -> list[tuple[str, dict]]:
    return [("system_event", _params(
        event_id=r["event_id"], kind="vote_deadline", source="votes",
        detail=_json({"vote_id": r["vote_id"], "deadline_at": r["deadline_at"],
                      "noticed_at": r["noticed_at"]}),
        occurred_at=r["noticed_at"]))]


def _vote_result(r: dict) -> list[tuple[str, dict]]:
    return [_lock("vote", r["vote_id"]), ("vote_result", _params(
        event_id=r["event_id"], vote_id=r["vote_id"], channel_id=r["channel_id"],
        vote_type=r.get("vote_type", "PROJECT_DECISION"),
        strategy=r.get("strategy", "CONSENSUS"), outcome=r.get("outcome", "FAILED"),
        winning_option=r.get("winning_option"), tally=_json(r.get("tally") or {}),
        ballots_counted=r["ballots_counted"], eligible_count=r["eligible_count"],
        reason=r["reason"], closed_at=r["closed_at"],
        tool_request_id=r.get("tool_request_id"), request_sha256=r.get("request_sha256"))),
        ("vote_close", _params(vote_id=r["vote_id"]))]


def _ballot_rejected(r: dict) -> list[tuple[str, dict]]:
    reason = r.get("reason", "INVALID_CHOICE")
    return [_lock("ballot", r["ballot_event_id"]), ("ballot_rejection", _params(
        event_id=r["event_id"], vote_id=r["vote_id"], voter_id=r["voter_id"],
        ballot_event_id=r["ballot_event_id"], reason=reason, detail=r["detail"],
        rejected_at=r["rejected_at"], channel_id=r.get("channel_id"))),
        ("ballot_reject", _params(ballot_event_id=r["ballot_event_id"])),
        ("infraction", _params(
            event_id=r["event_id"], agent_id=r["voter_id"], kind="ballot_rejected",
            detail=f"ballot in vote {r['vote_id']} rejected ({reason}): {r['detail']}",
            occurred_at=r["rejected_at"]))]


def _incident_detected(r: dict) -> list[tuple[str, dict]]:
    message = _params(
        event_id=r["event_id"], incident_id=r["incident_id"], opened=r["opened"],
        channel_id=r["channel_id"], message_id=r["message_id"], author_id=r["author_id"],
        text=r["text"], severity=r.get("severity", "UNKNOWN"), service=r.get("service"),
        score=r["score"], evidence=_json(list(r.get("evidence") or [])),
        message_at=r["message_at"], detected_at=r["detected_at"],
        config_version=r["config_version"])
    incident = {k: message[k] for k in ("incident_id", "channel_id", "severity", "service",
                                        "author_id", "message_id", "message_at",
                                        "detected_at")}
    incident["title"] = " ".join(message["text"].split())[:200] or "(no text)"
    return [("incident_message", message), ("incident", incident)]


def _incident_changed(r: dict) -> list[tuple[str, dict]]:
    change = r.get("change", "UNKNOWN")
    recorded = _params(
        event_id=r["event_id"], incident_id=r["incident_id"], channel_id=r["channel_id"],
        change=change, actor_id=r["actor_id"], note=r.get("note"),
        severity=r.get("severity", "UNKNOWN"), opened_at=r["opened_at"],
        changed_at=r["changed_at"])
    out = [("incident_change", recorded)]
    if change != "UNKNOWN":  # a change of a later version: recorded, state left alone
        out.append(("incident_state", {
            **{k: recorded[k] for k in ("incident_id", "actor_id", "note", "changed_at")},
            "resolved": change == "RESOLVED"}))
    return out


def _agent_feedback(r: dict) -> list[tuple[str, dict]]:
    return [("agent_feedback", _params(
        event_id=r["event_id"], agent_id=r["agent_id"], channel_id=r["channel_id"],
        kind=r.get("kind", "UNKNOWN"), value=r["value"], rater_id=r.get("rater_id"),
        ref_id=r["ref_id"], comment=r.get("comment"), created_at=r["created_at"]))]


def _dead_letter(r: dict) -> list[tuple[str, dict]]:
    detail = {
        "topic": r["source_topic"], "partition": r["partition"], "offset": r["offset"],
        "reason": r["reason"], "error_type": r["error_type"], "stage": r["stage"],
        "attempts": r["attempts"], "source_timestamp": r.get("source_timestamp"),
        "key": b64(r.get("key")), "value": b64(r.get("value")),
        "headers": {k: b64(v) for k, v in (r.get("headers") or {}).items()},
    }
    return [("system_event", _params(
        event_id=r["event_id"], kind="dead_letter", source=r["stage"], detail=_json(detail),
        occurred_at=r["failed_at"]))]


_EVENTS = {
    "ChatMessage": _chat_message,
    "AgentProfile": _agent_profile,
    "AgentStatus": _agent_status,
    "RelevanceDecision": _relevance_decision,
    "InferenceTask": _inference_task,
    "ToolRequest": _tool_request,
    "ToolResult": _tool_result,
    "VoteProposal": _vote_proposal,
    "Ballot": _ballot,
    "VoteDeadline": _vote_deadline,
    "VoteResult": _vote_result,
    "BallotRejected": _ballot_rejected,
    "IncidentDetected": _incident_detected,
    "IncidentChanged": _incident_changed,
    "AgentFeedback": _agent_feedback,
    "DeadLetter": _dead_letter,
}


# --- bulk: the high-volume immutable statements, staged ----------------------------
# A batch's rows of these statements are COPYed into a temporary staging table (the
# target's columns, emptied at commit) and written with one INSERT ... SELECT: about
# a third of the cost of one upsert per row. The parameters' names are the target's
# columns. The result is the same as running the statement per row, replays included.

def _insert_from_stage(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(columns)
    return (f"INSERT INTO {table} ({names})\nSELECT {names} FROM stage_{table}\n"
            f"ON CONFLICT (event_id) DO NOTHING")


# The messages table as the gateway reads it too (ChatService).
MESSAGE_COLUMNS = ("event_id", "channel_id", "thread_id", "reply_to", "author_id",
                    "author_kind", "text", "mentions", "thread_depth", "created_at",
                    "task_id", "metadata", "sources")

# statement name -> (target table, its staged columns, SQL from stage_<table>)
BULK: dict[str, tuple[str, tuple[str, ...], str]] = {
    # Each new message bumps its channel's counter once: the counts of the rows that
    # were really inserted, grouped by channel.
    "message": ("messages", MESSAGE_COLUMNS, f"""
WITH new AS (
    {_insert_from_stage("messages", MESSAGE_COLUMNS)}
    RETURNING channel_id, created_at
)
INSERT INTO channels AS c (channel_id, first_message_at, last_message_at, message_count)
SELECT channel_id, min(created_at), max(created_at), count(*) FROM new GROUP BY channel_id
ON CONFLICT (channel_id) DO UPDATE SET
    message_count = c.message_count + excluded.message_count,
    first_message_at = least(c.first_message_at, excluded.first_message_at),
    last_message_at = greatest(c.last_message_at, excluded.last_message_at)"""),
}
for _name, _table, _columns in (
        ("relevance_decision", "relevance_decisions",
         ("event_id", "message_id", "channel_id", "thread_id", "thread_depth", "decided_at",
          "selected", "skip_reason", "config_version", "scores")),
        ("inference_task", "inference_tasks",
         ("event_id", "decision_id", "message_id", "channel_id", "thread_id", "thread_depth",
          "agent_id", "context_message_ids", "created_at", "deadline_at")),
        ("system_event", "system_events",
         ("event_id", "kind", "source", "detail", "occurred_at"))):
    BULK[_name] = (_table, _columns, _insert_from_stage(_table, _columns))


def rows(name: str, record: dict) -> list[tuple[str, dict]]:
    """(statement name, parameters) for one decoded event, in the order to run them."""
    return rows_of(_EVENTS, "Postgres", name, record)


def reference_rows(templates: dict[str, dict], tools: dict) -> list[tuple[str, dict]]:
    """Rows for agent_templates (``profiles.templates()``) and tool_definitions
    (``catalog.load()``), upserted on every migrate run."""
    out = []
    for key, spec in templates.items():
        out.append(("agent_template", _params(
            template=spec.get("template", key), name=spec["name"], persona=spec["persona"],
            system_prompt=spec["system_prompt"], expertise=spec["expertise"],
            tools=list(spec.get("tools") or []), permissions=list(spec.get("permissions") or []),
            performance_score=float(spec.get("performance_score", 0.7)))))
    for name, tool in tools.items():
        limits = tool.limits
        out.append(("tool_definition", _params(
            name=tool.name or name, category=tool.category, description=tool.description,
            parameters=_json(tool.parameters), permissions=list(tool.permissions),
            needs_vote=bool(tool.needs_vote), network=bool(tool.network),
            limits=_json(limits if dataclasses.is_dataclass(limits) else dict(limits)),
            vote_strategy=tool.vote_strategy, vote_quorum=float(tool.vote_quorum))))
    return out
