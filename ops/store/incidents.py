"""Incidents in Postgres (migration 0009) as the gateway's IncidentService reads and
changes them, over its asyncio pool.

A change is one conditional UPDATE from the state the caller saw: of two people
resolving at once, one changes the row and the other finds it moved. The service
publishes the change after it; ``undo`` puts the row back when that fails, so the
state never claims a change the topic does not have.
"""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import dict_row

COLUMNS = ("i.incident_id, i.channel_id, i.title, i.severity, i.service, i.status, "
           "i.opened_by, i.opened_message_id, i.opened_at, i.messages, i.acknowledged_at, "
           "i.acknowledged_by, i.resolved_at, i.resolved_by, i.resolution, i.updated_at, "
           "t.id AS ticket")
SELECT = f"SELECT {COLUMNS} FROM incidents i LEFT JOIN tickets t ON t.incident_id = i.incident_id"
SUMMARY = 300  # characters of a message or output in a timeline line


async def get(conn: AsyncConnection, incident_id: str) -> dict | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"{SELECT} WHERE i.incident_id = %s", (incident_id,))
    return await cur.fetchone()


async def page(conn: AsyncConnection, channels: list[str] | None, include_resolved: bool,
               after: tuple[datetime, str] | None, limit: int) -> list[dict]:
    """Newest first; ``channels`` None for every channel; ``after`` the (opened_at,
    incident_id) of the previous page's last row."""
    where, params = [], []
    if channels is not None:
        where.append("i.channel_id = ANY(%s)")
        params.append(channels)
    if not include_resolved:
        where.append("i.status <> 'resolved'")
    if after is not None:
        where.append("(i.opened_at, i.incident_id) < (%s, %s)")
        params += after
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"{SELECT} {'WHERE ' + ' AND '.join(where) if where else ''} "
                      "ORDER BY i.opened_at DESC, i.incident_id DESC LIMIT %s", (*params, limit))
    return await cur.fetchall()


async def change(conn: AsyncConnection, seen: dict, resolved: bool, actor: str,
                 at: datetime, note: str | None) -> dict | None:
    """The incident acknowledged (or ``resolved``) by ``actor`` at ``at``, if it is
    still as ``seen``; None if it moved meanwhile."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"""WITH i AS (
            UPDATE incidents SET
                status = %(status)s,
                acknowledged_at = coalesce(acknowledged_at, %(at)s),
                acknowledged_by = coalesce(acknowledged_by, %(actor)s),
                resolved_at = CASE WHEN %(resolved)s THEN %(at)s END,
                resolved_by = CASE WHEN %(resolved)s THEN %(actor)s END,
                resolution = CASE WHEN %(resolved)s THEN %(note)s END,
                updated_at = %(at)s
            WHERE incident_id = %(id)s AND status = %(seen)s AND updated_at = %(seen_at)s
            RETURNING *)
        SELECT {COLUMNS} FROM i LEFT JOIN tickets t ON t.incident_id = i.incident_id""",
        {"status": "resolved" if resolved else "acknowledged", "at": at, "actor": actor,
         "resolved": resolved, "note": note, "id": seen["incident_id"],
         "seen": seen["status"], "seen_at": seen["updated_at"]})
    return await cur.fetchone()


async def undo(conn: AsyncConnection, seen: dict, changed: dict) -> None:
    """Back to ``seen``, unless someone changed the row after ``changed``."""
    await conn.execute(
        """UPDATE incidents SET status = %s, acknowledged_at = %s, acknowledged_by = %s,
           resolved_at = %s, resolved_by = %s, resolution = %s, updated_at = %s
           WHERE incident_id = %s AND updated_at = %s""",
        (seen["status"], seen["acknowledged_at"], seen["acknowledged_by"],
         seen["resolved_at"], seen["resolved_by"], seen["resolution"], seen["updated_at"],
         seen["incident_id"], changed["updated_at"]))


async def resolve_ticket(conn: AsyncConnection, incident_id: str, resolution: str | None,
                         at: datetime) -> None:
    """The incident's ticket resolved with it, unless it is resolved or closed."""
    await conn.execute(
        """UPDATE tickets SET status = 'resolved', resolution = coalesce(%s, resolution),
           closed_at = coalesce(closed_at, %s), updated_at = %s
           WHERE incident_id = %s AND status NOT IN ('resolved', 'closed')""",
        (resolution, at, at, incident_id))


def _line(text: str | None) -> str:
    words = " ".join((text or "").split())
    return words if len(words) <= SUMMARY else words[:SUMMARY - 1] + "…"


# One query per kind of record, each giving (time, kind, actor, summary, ref); the
# incident's messages are those that opened or joined it, its actions the tool requests
# made about them (first responses and the agents' own) and about the incident.
_TIMELINE = (
    """SELECT message_at, CASE WHEN opened THEN 'opened' ELSE 'joined' END, author_id,
              severity || coalesce(' ' || service, '') || ': ' || text, message_id
       FROM incident_messages WHERE incident_id = %(id)s""",
    """SELECT d.decided_at, 'decision', 'relevance',
              CASE WHEN cardinality(d.selected) > 0
                   THEN 'chose ' || array_to_string(d.selected, ', ')
                   ELSE 'chose no agent: ' || coalesce(d.skip_reason, '') END, d.event_id
       FROM relevance_decisions d WHERE d.message_id = ANY(%(messages)s)""",
    """SELECT m.created_at, 'reply', m.author_id, m.text, m.event_id FROM messages m
       WHERE m.reply_to = ANY(%(messages)s) AND m.author_kind = 'AGENT'""",
    """SELECT created_at, 'alert', author_id, text, event_id FROM messages
       WHERE author_kind = 'SYSTEM' AND metadata->>'incident_id' = %(id)s""",
    """SELECT r.requested_at, 'action', r.agent_id, r.tool || ' requested: ' || r.reason,
              r.event_id
       FROM tool_requests r WHERE r.event_id = ANY(%(requests)s)""",
    """SELECT run.finished_at, 'action', run.agent_id,
              run.tool || ' ' || run.status || ': ' || coalesce(run.error, run.output),
              run.request_id
       FROM tool_runs run WHERE run.request_id = ANY(%(requests)s)""",
    """SELECT v.created_at, 'vote', v.proposer_id, 'vote opened: ' || v.title, v.vote_id
       FROM votes v WHERE v.tool_request_id = ANY(%(requests)s)""",
    """SELECT v.closed_at, 'vote', 'votes', 'vote ' || v.outcome || ': ' || v.reason, v.vote_id
       FROM votes v WHERE v.tool_request_id = ANY(%(requests)s) AND v.closed_at IS NOT NULL""",
    """SELECT created_at, 'ticket', opened_by,
              'INC-' || id || ' opened (' || severity || coalesce(', ' || assignee, '') || ')',
              'INC-' || id
       FROM tickets WHERE incident_id = %(id)s""",
    # State changes from the row, which the gateway changes before the sink sees them.
    """SELECT acknowledged_at, 'acknowledged', acknowledged_by, '', incident_id
       FROM incidents WHERE incident_id = %(id)s AND acknowledged_at IS NOT NULL""",
    """SELECT resolved_at, 'resolved', resolved_by, coalesce(resolution, ''), incident_id
       FROM incidents WHERE incident_id = %(id)s AND resolved_at IS NOT NULL""",
)


async def timeline(conn: AsyncConnection, incident_id: str) -> list[dict]:
    """What happened in the incident, in time order."""
    cur = await conn.execute(
        "SELECT coalesce(array_agg(message_id), '{}') FROM incident_messages "
        "WHERE incident_id = %s", (incident_id,))
    messages = (await cur.fetchone())[0]
    cur = await conn.execute(
        "SELECT coalesce(array_agg(event_id), '{}') FROM tool_requests "
        "WHERE source_message_id = ANY(%s) OR arguments->>'incident_id' = %s",
        (messages, incident_id))
    requests = (await cur.fetchone())[0]
    params = {"id": incident_id, "messages": messages, "requests": requests}
    cur = await conn.execute(" UNION ALL ".join(f"({q})" for q in _TIMELINE) +
                             " ORDER BY 1, 2", params)
    return [{"time": at, "kind": kind, "actor_id": actor, "summary": _line(summary),
             "ref_id": ref} for at, kind, actor, summary, ref in await cur.fetchall()]
