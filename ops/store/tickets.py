"""Incident tickets in Postgres (migration 0007): what the ticket.* actions read and
write. Synchronous (the tools agent calls it in a thread); Postgres outages surface as
``Unavailable``, which the agent waits out."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import dict_row

from ops.core.errors import NotFound
from ops.store.memory import connection, pool

COLUMNS = ("id, incident_id, channel_id, title, severity, service, status, assignee, "
           "message_ids, opened_by, resolution, created_at, updated_at, closed_at")


def ticket_number(ref: str) -> int:
    """42 for "INC-42" (or "42"); NotFound for anything else."""
    digits = ref.strip().upper().removeprefix("INC-")
    if not digits.isdigit():
        raise NotFound(f"no ticket {ref!r}: tickets are named INC-<number>")
    return int(digits)


class TicketStore:
    def __init__(self, dsn: str):
        self.pool = pool(dsn, max_size=2)

    def close(self) -> None:
        self.pool.close()

    def open(self, request_id: str, channel_id: str, opened_by: str, title: str,
             severity: str, service: str | None, incident_id: str | None,
             message_ids: Sequence[str] = (), assignee: str | None = None
             ) -> tuple[dict, bool]:
        """(the ticket, whether this call opened it): the request's own ticket if it
        opened one already, else the incident's, else a new one."""
        with connection(self.pool) as conn:
            conn.row_factory = dict_row
            for _ in range(2):  # a concurrent opener of the same incident wins once
                found = conn.execute(
                    f"SELECT {COLUMNS} FROM tickets WHERE request_id = %s "
                    "OR (incident_id IS NOT NULL AND incident_id = %s) "
                    "ORDER BY request_id = %s DESC LIMIT 1",
                    (request_id, incident_id, request_id)).fetchone()
                if found:
                    return found, False
                try:
                    created = conn.execute(
                        f"""INSERT INTO tickets (request_id, incident_id, channel_id, title,
                            severity, service, assignee, message_ids, opened_by)
                            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}""",
                        (request_id, incident_id, channel_id, title, severity, service,
                         assignee, list(message_ids), opened_by)).fetchone()
                    return created, True
                except psycopg.errors.UniqueViolation:
                    continue
        raise RuntimeError("a ticket was opened and removed while opening it")

    def update(self, ref: str, status: str | None = None, assignee: str | None = None,
               message_ids: Sequence[str] = (), resolution: str | None = None) -> dict:
        """The ticket after the change (unchanged fields kept; message ids added)."""
        with connection(self.pool) as conn:
            conn.row_factory = dict_row
            found = conn.execute(
                f"""UPDATE tickets SET status = coalesce(%s, status),
                    assignee = coalesce(%s, assignee),
                    message_ids = ARRAY(SELECT DISTINCT unnest(message_ids || %s::text[])),
                    resolution = coalesce(%s, resolution), updated_at = now(),
                    closed_at = CASE WHEN coalesce(%s, status) IN ('resolved', 'closed')
                                     THEN coalesce(closed_at, now()) ELSE NULL END
                    WHERE id = %s RETURNING {COLUMNS}""",
                (status, assignee, list(message_ids), resolution, status,
                 ticket_number(ref))).fetchone()
        if found is None:
            raise NotFound(f"no ticket {ref!r}")
        return found

    def get(self, ref: str) -> dict:
        with connection(self.pool) as conn:
            conn.row_factory = dict_row
            found = conn.execute(f"SELECT {COLUMNS} FROM tickets WHERE id = %s",
                                 (ticket_number(ref),)).fetchone()
        if found is None:
            raise NotFound(f"no ticket {ref!r}")
        return found
