"""Feedback about agents in Postgres (migration 0010, ``agent_feedback``): the same
idempotent insert as the sink's (``postgres_rows``), for the gateway (a rating is
stored before it is published, so that a second rating of a reply by the same person
is refused) and for the feedback agent, which then reads the agent's counts."""

from __future__ import annotations

from psycopg import AsyncConnection

from ops.store.memory import connection, pool
from ops.store.postgres_rows import STATEMENTS, rows

COUNTS = "SELECT kind, value, count(*) FROM agent_feedback WHERE agent_id = %s GROUP BY 1, 2"


def _row(record: dict) -> dict:
    [(_, params)] = rows("AgentFeedback", record)
    return params


async def claim(conn: AsyncConnection, record: dict) -> bool:
    """Store a rating; False when its id (the reply and the rater) is there already."""
    cur = await conn.execute(STATEMENTS["agent_feedback"] + " RETURNING event_id",
                             _row(record))
    return await cur.fetchone() is not None


async def release(conn: AsyncConnection, event_id: str) -> None:
    """Take back a rating that could not be published."""
    await conn.execute("DELETE FROM agent_feedback WHERE event_id = %s", (event_id,))


class FeedbackStore:
    """For the feedback agent. Synchronous (called in a thread); Postgres outages
    surface as ``Unavailable``, which the agent waits out."""

    def __init__(self, dsn: str):
        self.pool = pool(dsn, max_size=2)

    def close(self) -> None:
        self.pool.close()

    def record(self, record: dict) -> list[tuple[str, int, int]]:
        """Store one piece of feedback (again: no change); the agent's (kind, value,
        how many) counts after it."""
        with connection(self.pool) as conn:
            conn.execute(STATEMENTS["agent_feedback"], _row(record))
            return conn.execute(COUNTS, (record["agent_id"],)).fetchall()
