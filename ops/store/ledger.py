"""The tool-run ledger in Postgres (migration 0006, ``tool_ledger``): the tools agent
claims each sandboxed run before it starts, so a replayed request never runs a tool
with external effects twice (``streams/domain/tools/runs.py`` decides from the row).

Synchronous (the agent calls it in a thread); Postgres outages surface as
``Unavailable``, which the agent waits out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ops.store.memory import connection, pool


@dataclass(frozen=True)
class Run:
    state: str  # claimed | running | done | failed
    worker_id: str
    outcome: tuple[bytes, ...]  # the published events, encoded, in order (when finished)


class ToolLedger:
    def __init__(self, dsn: str):
        self.pool = pool(dsn, max_size=2)

    def close(self) -> None:
        self.pool.close()

    def claim(self, request_id: str, tool: str, worker_id: str) -> Run | None:
        """Claim the run of a request: None when this call claimed it, else the row as a
        previous attempt left it."""
        with connection(self.pool) as conn:
            claimed = conn.execute(
                """INSERT INTO tool_ledger (request_id, tool, state, worker_id)
                   VALUES (%s, %s, 'claimed', %s) ON CONFLICT (request_id) DO NOTHING
                   RETURNING request_id""", (request_id, tool, worker_id)).fetchone()
            if claimed:
                return None
            state, owner, outcome = conn.execute(
                "SELECT state, worker_id, outcome FROM tool_ledger WHERE request_id = %s",
                (request_id,)).fetchone()
        return Run(state, owner, tuple(bytes(e) for e in outcome or ()))

    def take(self, request_id: str, worker_id: str) -> None:
        """Take over a run claimed by an earlier attempt (it never started, or its tool
        can run again), as this worker."""
        with connection(self.pool) as conn:
            conn.execute("""UPDATE tool_ledger SET state = 'claimed', worker_id = %s,
                            updated_at = now() WHERE request_id = %s""",
                         (worker_id, request_id))

    def running(self, request_id: str) -> None:
        """The sandbox is starting the run: from here on it may act."""
        with connection(self.pool) as conn:
            conn.execute("""UPDATE tool_ledger SET state = 'running', updated_at = now()
                            WHERE request_id = %s""", (request_id,))

    def finish(self, request_id: str, state: str, status: str,
               outcome: Sequence[bytes]) -> None:
        """Record how the run ended (``done`` or ``failed``) and the events it publishes;
        kept before they are sent, so a replay publishes these same events."""
        with connection(self.pool) as conn:
            conn.execute("""UPDATE tool_ledger SET state = %s, status = %s, outcome = %s,
                            updated_at = now() WHERE request_id = %s""",
                         (state, status, list(outcome), request_id))
