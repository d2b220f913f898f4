"""Rows for the ClickHouse sink: which table rows a decoded event becomes. Pure (no I/O,
no ClickHouse import); the tables are ``ops/store/migrations/clickhouse/0001_events.sql``.

``rows(name, record)`` gives ``(table, values)`` pairs, the values in the order of
``COLUMNS[table]``, ready for ``client.insert(table, [values, ...],
column_names=COLUMNS[table])`` with clickhouse-connect. Every event is one row in its
table, except a RelevanceDecision, which is also one ``relevance_scores`` row per agent
scored. ``ingested_at`` is left to its column default, and the per-minute aggregate
tables are filled by materialized views, so neither appears here.

The tables are ReplacingMergeTrees keyed by the event id, which collapse a replayed
event only on merge, while the materialized views count every insert: the sink skips
the rows whose key is already stored. ``event_ids(table, row)`` is that key (the event
id, or ``"<decision id>/<agent_id>"`` in relevance_scores) and ``KEY_SQL[table]`` the
ClickHouse expression that computes it from the stored columns, for the lookup.

Values: aware UTC datetimes for DateTime64, ``None`` for Nullable, lists for Array,
dicts for Map, ``bool`` for Bool, ``str``/``int``/``float`` otherwise. Text is kept as
is (a ClickHouse String holds any bytes, NUL included), except lone surrogates, which
UTF-8 cannot encode and become U+FFFD. Bytes (a DeadLetter's key, value and header
values) are base64 text. Floats are kept as they are, NaN included.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any, Callable

from ops.store.values import arguments, b64, rows_of
from schemas.codec import from_epoch_ms, safe_text

__all__ = ["COLUMNS", "KEY_SQL", "event_ids", "rows", "stored_keys_query"]

COLUMNS: dict[str, tuple[str, ...]] = {
    "chat_messages": (
        "event_id", "channel_id", "thread_id", "reply_to", "author_id", "author_kind", "text",
        "text_length", "mentions", "thread_depth", "created_at", "task_id", "metadata",
        "sources"),
    "relevance_decisions": (
        "event_id", "message_id", "channel_id", "thread_id", "thread_depth", "decided_at",
        "selected", "considered", "skip_reason", "config_version"),
    "relevance_scores": (
        "event_id", "message_id", "channel_id", "decided_at", "agent_id", "score", "expertise",
        "workload", "social", "timing", "quality", "selected", "selected_rank", "reason",
        "config_version"),
    "inference_tasks": (
        "event_id", "decision_id", "message_id", "channel_id", "thread_id", "thread_depth",
        "agent_id", "context_message_ids", "created_at", "deadline_at"),
    "tool_requests": (
        "event_id", "channel_id", "agent_id", "tool", "arguments", "arguments_valid", "reason",
        "source_message_id", "requested_at"),
    "tool_results": (
        "event_id", "request_id", "channel_id", "agent_id", "tool", "status", "output", "error",
        "artifacts", "vote_id", "started_at", "finished_at", "duration_ms"),
    "vote_proposals": (
        "event_id", "vote_id", "channel_id", "proposer_id", "vote_type", "strategy", "title",
        "description", "options", "eligible_voters", "weights", "quorum", "deadline_at",
        "created_at", "tool_request_id"),
    "ballots": (
        "event_id", "vote_id", "channel_id", "voter_id", "choice", "rationale", "cast_at"),
    "vote_results": (
        "event_id", "vote_id", "channel_id", "vote_type", "strategy", "outcome",
        "winning_option", "tally", "ballots_counted", "eligible_count", "reason", "closed_at",
        "tool_request_id", "request_sha256"),
    "ballot_rejections": (
        "event_id", "vote_id", "voter_id", "ballot_event_id", "reason", "detail",
        "rejected_at", "channel_id"),
    "agent_profiles": (
        "event_id", "agent_id", "name", "template", "persona", "system_prompt", "expertise",
        "tools", "channels", "permissions", "state", "state_reason", "performance_score",
        "created_at", "updated_at"),
    "agent_status": (
        "event_id", "agent_id", "worker_id", "state", "open_tasks", "finished_tasks",
        "last_error", "updated_at"),
    "dead_letters": (
        "event_id", "source_topic", "source_partition", "source_offset", "key", "value",
        "headers", "source_timestamp", "reason", "error_type", "stage", "attempts",
        "failed_at"),
    "vote_deadlines": (
        "event_id", "vote_id", "deadline_at", "noticed_at", "lag_ms"),
    "incident_messages": (
        "event_id", "incident_id", "opened", "channel_id", "message_id", "author_id", "text",
        "severity", "service", "score", "evidence", "message_at", "detected_at",
        "config_version"),
    "agent_feedback": (
        "event_id", "agent_id", "channel_id", "kind", "value", "rater_id", "ref_id", "comment",
        "created_at"),
    "incident_changes": (
        "event_id", "incident_id", "channel_id", "change", "actor_id", "note", "severity",
        "opened_at", "changed_at", "seconds_open"),
}

# The dedupe key of a stored row, as a ClickHouse expression over its columns
# (``SELECT <KEY_SQL[t]> FROM t WHERE ...`` gives what ``event_ids`` gives).
KEY_SQL: dict[str, str] = {table: "event_id" for table in COLUMNS}
KEY_SQL["relevance_scores"] = "concat(event_id, '/', agent_id)"

# Nothing to escape in a ClickHouse string literal, and no % for client-side binding.
_PLAIN_KEY = re.compile(r"[\w./:-]*\Z", re.ASCII)

_INDEX = {table: {column: i for i, column in enumerate(columns)}
          for table, columns in COLUMNS.items()}
# Per table: its column names as a set (to check a row's values) and a getter that
# orders them (itemgetter, not a generator: mapping is most of the sink's own cost).
_ORDER = {table: (frozenset(columns), itemgetter(*columns)) for table, columns in COLUMNS.items()}


# --- value conversion ---------------------------------------------------------------

def _opt_text(value: str | None) -> str | None:
    return None if value is None else safe_text(value)


def _texts(values: Any) -> list[str]:
    return [safe_text(v) for v in (values or [])]


def _time(value: datetime | int) -> datetime:
    """An aware UTC datetime, from an aware datetime or epoch milliseconds."""
    if isinstance(value, datetime):
        if value.tzinfo is timezone.utc:  # as the codec decodes them
            return value
        if value.tzinfo is None:
            raise ValueError("naive datetime: event times must be timezone-aware (UTC)")
        return value.astimezone(timezone.utc)
    return from_epoch_ms(int(value))


def _opt_time(value: datetime | int | None) -> datetime | None:
    return None if value is None else _time(value)


def _string_map(values: Any) -> dict[str, str]:
    return {safe_text(str(k)): safe_text(v) for k, v in (values or {}).items()}


def _float_map(values: Any) -> dict[str, float]:
    return {safe_text(str(k)): float(v) for k, v in (values or {}).items()}


def _row(table: str, **values: Any) -> tuple[str, tuple]:
    names, ordered = _ORDER[table]
    if values.keys() != names:  # a programming error in this module
        raise AssertionError(f"{table}: values for {sorted(values)} but columns "
                             f"{COLUMNS[table]}")
    return table, ordered(values)


# --- events -------------------------------------------------------------------------

Rows = list[tuple[str, tuple]]


def _chat_message(r: dict) -> Rows:
    text = safe_text(r["text"])
    return [_row(
        "chat_messages", event_id=r["event_id"], channel_id=safe_text(r["channel_id"]),
        thread_id=r["thread_id"], reply_to=_opt_text(r.get("reply_to")),
        author_id=safe_text(r["author_id"]), author_kind=r.get("author_kind", "SYSTEM"),
        text=text, text_length=len(text), mentions=_texts(r.get("mentions")),
        thread_depth=int(r["thread_depth"]), created_at=_time(r["created_at"]),
        task_id=_opt_text(r.get("task_id")), metadata=_string_map(r.get("metadata")),
        sources=[(s["document_id"], s["chunk_id"], safe_text(s["title"]), safe_text(s["heading"]))
                 for s in r.get("sources") or ()])]


def _relevance_decision(r: dict) -> Rows:
    decided_at = _time(r["decided_at"])
    channel_id = safe_text(r["channel_id"])
    config_version = safe_text(r["config_version"])
    selected = _texts(r.get("selected"))
    scores = list(r.get("scores") or [])
    out = [_row(
        "relevance_decisions", event_id=r["event_id"], message_id=r["message_id"],
        channel_id=channel_id, thread_id=r["thread_id"], thread_depth=int(r["thread_depth"]),
        decided_at=decided_at, selected=selected, considered=len(scores),
        skip_reason=_opt_text(r.get("skip_reason")), config_version=config_version)]
    rank = {}
    for i, agent_id in enumerate(selected, 1):
        rank.setdefault(agent_id, i)
    seen = set()
    for s in scores:
        agent_id = safe_text(s["agent_id"])
        # (decision, agent) is the row's key: a second score for the same agent would
        # collide with the first; the first one is kept.
        if agent_id in seen:
            continue
        seen.add(agent_id)
        out.append(_row(
            "relevance_scores", event_id=r["event_id"], message_id=r["message_id"],
            channel_id=channel_id, decided_at=decided_at, agent_id=agent_id,
            score=float(s["score"]), expertise=float(s["expertise"]),
            workload=float(s["workload"]), social=float(s["social"]),
            timing=float(s["timing"]), quality=float(s["quality"]),
            selected=bool(s["selected"]), selected_rank=rank.get(agent_id, 0),
            reason=safe_text(s["reason"]), config_version=config_version))
    return out


def _inference_task(r: dict) -> Rows:
    return [_row(
        "inference_tasks", event_id=r["event_id"], decision_id=r["decision_id"],
        message_id=r["message_id"], channel_id=safe_text(r["channel_id"]),
        thread_id=r["thread_id"], thread_depth=int(r["thread_depth"]),
        agent_id=safe_text(r["agent_id"]),
        context_message_ids=_texts(r.get("context_message_ids")),
        created_at=_time(r["created_at"]), deadline_at=_opt_time(r.get("deadline_at")))]


def _tool_request(r: dict) -> Rows:
    text, valid = arguments(r["arguments_json"])
    return [_row(
        "tool_requests", event_id=r["event_id"], channel_id=safe_text(r["channel_id"]),
        agent_id=safe_text(r["agent_id"]), tool=safe_text(r["tool"]), arguments=text,
        arguments_valid=valid, reason=safe_text(r["reason"]),
        source_message_id=_opt_text(r.get("source_message_id")),
        requested_at=_time(r["requested_at"]))]


def _tool_result(r: dict) -> Rows:
    return [_row(
        "tool_results", event_id=r["event_id"], request_id=r["request_id"],
        channel_id=safe_text(r["channel_id"]), agent_id=safe_text(r["agent_id"]),
        tool=safe_text(r["tool"]), status=r.get("status", "FAILED"), output=safe_text(r["output"]),
        error=_opt_text(r.get("error")), artifacts=_texts(r.get("artifacts")),
        vote_id=_opt_text(r.get("vote_id")), started_at=_opt_time(r.get("started_at")),
        finished_at=_time(r["finished_at"]), duration_ms=int(r["duration_ms"]))]


def _vote_proposal(r: dict) -> Rows:
    return [_row(
        "vote_proposals", event_id=r["event_id"], vote_id=r["vote_id"],
        channel_id=safe_text(r["channel_id"]), proposer_id=safe_text(r["proposer_id"]),
        vote_type=r.get("vote_type", "PROJECT_DECISION"),
        strategy=r.get("strategy", "CONSENSUS"), title=safe_text(r["title"]),
        description=safe_text(r["description"]), options=_texts(r.get("options", ["yes", "no"])),
        eligible_voters=_texts(r.get("eligible_voters")),
        weights=_float_map(r.get("weights")), quorum=float(r["quorum"]),
        deadline_at=_time(r["deadline_at"]), created_at=_time(r["created_at"]),
        tool_request_id=_opt_text(r.get("tool_request_id")))]


def _ballot(r: dict) -> Rows:
    return [_row(
        "ballots", event_id=r["event_id"], vote_id=r["vote_id"],
        channel_id=safe_text(r["channel_id"]), voter_id=safe_text(r["voter_id"]),
        choice=safe_text(r["choice"]), rationale=safe_text(r["rationale"]),
        cast_at=_time(r["cast_at"]))]


def _vote_result(r: dict) -> Rows:
    return [_row(
        "vote_results", event_id=r["event_id"], vote_id=r["vote_id"],
        channel_id=safe_text(r["channel_id"]), vote_type=r.get("vote_type", "PROJECT_DECISION"),
        strategy=r.get("strategy", "CONSENSUS"), outcome=r.get("outcome", "FAILED"),
        winning_option=_opt_text(r.get("winning_option")), tally=_float_map(r.get("tally")),
        ballots_counted=int(r["ballots_counted"]), eligible_count=int(r["eligible_count"]),
        reason=safe_text(r["reason"]), closed_at=_time(r["closed_at"]),
        tool_request_id=_opt_text(r.get("tool_request_id")),
        request_sha256=_opt_text(r.get("request_sha256")))]


def _ballot_rejected(r: dict) -> Rows:
    return [_row(
        "ballot_rejections", event_id=r["event_id"], vote_id=r["vote_id"],
        voter_id=safe_text(r["voter_id"]), ballot_event_id=r["ballot_event_id"],
        reason=r.get("reason", "INVALID_CHOICE"), detail=safe_text(r["detail"]),
        rejected_at=_time(r["rejected_at"]), channel_id=_opt_text(r.get("channel_id")))]


def _agent_profile(r: dict) -> Rows:
    return [_row(
        "agent_profiles", event_id=r["event_id"], agent_id=safe_text(r["agent_id"]),
        name=safe_text(r["name"]), template=safe_text(r["template"]), persona=safe_text(r["persona"]),
        system_prompt=safe_text(r["system_prompt"]), expertise=safe_text(r["expertise"]),
        tools=_texts(r.get("tools")), channels=_texts(r.get("channels")),
        permissions=_texts(r.get("permissions")), state=r.get("state", "PAUSED"),
        state_reason=_opt_text(r.get("state_reason")),
        performance_score=float(r["performance_score"]), created_at=_time(r["created_at"]),
        updated_at=_time(r["updated_at"]))]


def _agent_status(r: dict) -> Rows:
    return [_row(
        "agent_status", event_id=r["event_id"], agent_id=safe_text(r["agent_id"]),
        worker_id=safe_text(r["worker_id"]), state=r.get("state", "ERROR"),
        open_tasks=int(r["open_tasks"]), finished_tasks=int(r["finished_tasks"]),
        last_error=_opt_text(r.get("last_error")), updated_at=_time(r["updated_at"]))]


def _dead_letter(r: dict) -> Rows:
    return [_row(
        "dead_letters", event_id=r["event_id"], source_topic=safe_text(r["source_topic"]),
        source_partition=int(r["partition"]), source_offset=int(r["offset"]),
        key=b64(r.get("key")), value=b64(r.get("value")),
        headers={safe_text(str(k)): b64(v) for k, v in (r.get("headers") or {}).items()},
        source_timestamp=_opt_time(r.get("source_timestamp")), reason=safe_text(r["reason"]),
        error_type=safe_text(r["error_type"]), stage=safe_text(r["stage"]),
        attempts=int(r["attempts"]), failed_at=_time(r["failed_at"]))]


def _vote_deadline(r: dict) -> Rows:
    deadline_at, noticed_at = _time(r["deadline_at"]), _time(r["noticed_at"])
    return [_row(
        "vote_deadlines", event_id=r["event_id"], vote_id=r["vote_id"],
        deadline_at=deadline_at, noticed_at=noticed_at,
        lag_ms=(noticed_at - deadline_at) // timedelta(milliseconds=1))]


def _incident_detected(r: dict) -> Rows:
    return [_row(
        "incident_messages", event_id=r["event_id"], incident_id=r["incident_id"],
        opened=bool(r["opened"]), channel_id=safe_text(r["channel_id"]),
        message_id=r["message_id"], author_id=safe_text(r["author_id"]),
        text=safe_text(r["text"]), severity=r.get("severity", "UNKNOWN"),
        service=_opt_text(r.get("service")), score=float(r["score"]),
        evidence=[(safe_text(e["signal"]), float(e["value"]), safe_text(e["detail"]))
                  for e in r.get("evidence") or ()],
        message_at=_time(r["message_at"]), detected_at=_time(r["detected_at"]),
        config_version=safe_text(r["config_version"]))]


def _incident_changed(r: dict) -> Rows:
    opened_at, changed_at = _time(r["opened_at"]), _time(r["changed_at"])
    return [_row(
        "incident_changes", event_id=r["event_id"], incident_id=r["incident_id"],
        channel_id=safe_text(r["channel_id"]), change=r.get("change", "UNKNOWN"),
        actor_id=safe_text(r["actor_id"]), note=_opt_text(r.get("note")),
        severity=r.get("severity", "UNKNOWN"), opened_at=opened_at, changed_at=changed_at,
        seconds_open=(changed_at - opened_at).total_seconds())]


def _agent_feedback(r: dict) -> Rows:
    return [_row(
        "agent_feedback", event_id=r["event_id"], agent_id=safe_text(r["agent_id"]),
        channel_id=safe_text(r["channel_id"]), kind=r.get("kind", "UNKNOWN"),
        value=int(r["value"]), rater_id=_opt_text(r.get("rater_id")), ref_id=r["ref_id"],
        comment=_opt_text(r.get("comment")), created_at=_time(r["created_at"]))]


_EVENTS: dict[str, Callable[[dict], Rows]] = {
    "ChatMessage": _chat_message,
    "RelevanceDecision": _relevance_decision,
    "InferenceTask": _inference_task,
    "ToolRequest": _tool_request,
    "ToolResult": _tool_result,
    "VoteProposal": _vote_proposal,
    "Ballot": _ballot,
    "VoteResult": _vote_result,
    "BallotRejected": _ballot_rejected,
    "AgentProfile": _agent_profile,
    "AgentStatus": _agent_status,
    "DeadLetter": _dead_letter,
    "VoteDeadline": _vote_deadline,
    "IncidentDetected": _incident_detected,
    "IncidentChanged": _incident_changed,
    "AgentFeedback": _agent_feedback,
}


def rows(name: str, record: dict) -> list[tuple[str, tuple]]:
    """(table, values in ``COLUMNS[table]`` order) for one decoded event."""
    return rows_of(_EVENTS, "ClickHouse", name, record)


def event_ids(table: str, row: tuple) -> str:
    """The dedupe key of ``row`` in ``table``: its event_id, or for relevance_scores
    ``"<decision id>/<agent_id>"`` (what ``KEY_SQL[table]`` computes in ClickHouse)."""
    try:
        index = _INDEX[table]
    except KeyError:
        raise ValueError(f"unknown ClickHouse table {table!r}") from None
    if table == "relevance_scores":
        return f"{row[index['event_id']]}/{row[index['agent_id']]}"
    return row[index["event_id"]]


def stored_keys_query(table: str, keys: list[str]) -> tuple[str, dict[str, Any] | None]:
    """(SQL, parameters) selecting which of ``keys`` ``table`` already holds. By key
    alone, with no time bound: an event made again upstream (a worker's replay, a
    dead letter for the same record) keeps its id but not its timestamps. Keys of
    plain characters (our UUIDs and derived ids) are written into the SQL as they are:
    the client's escaping of 2000 parameters costs about as much as the lookup."""
    key = KEY_SQL[table]
    if all(_PLAIN_KEY.match(k) for k in keys):
        listed = "', '".join(keys)
        return f"SELECT {key} FROM {table} WHERE {key} IN ('{listed}')", None
    return f"SELECT {key} FROM {table} WHERE {key} IN %(keys)s", {"keys": keys}
