"""The Postgres sink: the state the product reads (agents, channels, messages, votes,
ballots, tool runs, system events), one transaction per batch.

Every statement is idempotent by event id (``postgres_rows``), so a batch replayed
after a crash changes nothing. An unreachable or not yet migrated database is
``Unavailable`` (the batch is retried); a statement that fails for one event's data is isolated with
savepoints and that event is ``Rejected`` (dead-lettered), not the batch.
"""

from __future__ import annotations

import psycopg

from ops.core.config import Settings
from ops.core.errors import Unavailable
from ops.store.postgres_rows import BULK, STATEMENTS, rows
from ops.store.sink import Event, Rejected


class PostgresStore:
    def __init__(self, settings: Settings):
        self.dsn = settings.postgres_dsn
        self.conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            try:
                self.conn = psycopg.connect(self.dsn, connect_timeout=5)
            except psycopg.OperationalError as exc:
                raise Unavailable(str(exc).strip()) from exc
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def write(self, events: list[Event]) -> None:
        conn = self._connection()
        statements = [rows(e.name, e.record) if e.name != "Tombstone" else [] for e in events]
        try:
            with conn.transaction():
                bad = self._apply(conn, statements)
                if bad:
                    raise Rejected(bad)  # rolls the batch back; it is retried without them
        except psycopg.OperationalError as exc:
            conn.close()
            raise Unavailable(str(exc).strip()) from exc
        except psycopg.errors.UndefinedTable as exc:  # wait for it rather than dead-letter
            raise Unavailable(f"the database is not migrated (agora db migrate): "
                              f"{str(exc).strip()}") from exc

    @staticmethod
    def _apply(conn: psycopg.Connection, statements: list[list[tuple[str, dict]]]
               ) -> dict[int, str]:
        """Run the batch; on a data error, find the events that cause it (savepoint per
        event) so that the batch can be written without them."""
        try:
            with conn.transaction():
                execute(conn, [pair for per_event in statements for pair in per_event])
            return {}
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
            raise
        except psycopg.Error:
            pass
        bad = {}
        for index, per_event in enumerate(statements):
            try:
                with conn.transaction():
                    execute(conn, per_event)
            except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
                raise
            except psycopg.Error as exc:
                bad[index] = f"rejected by Postgres: {str(exc).strip()}"
        return bad


def execute(conn: psycopg.Connection, statements: list[tuple[str, dict]]) -> None:
    """Run (statement name, parameters) pairs in the current transaction, grouped by
    name in order of first appearance: a ``BULK`` statement COPYs its rows into its
    session's staging table and writes them with one INSERT ... SELECT, the others
    run per row (``executemany``, pipelined)."""
    grouped: dict[str, list[dict]] = {}
    for name, params in statements:
        grouped.setdefault(name, []).append(params)
    with conn.cursor() as cur:
        for name, params in grouped.items():
            if name not in BULK:
                cur.executemany(STATEMENTS[name], params)
                continue
            table, columns, sql = BULK[name]
            # A temporary table is the session's own; created again if a rolled-back
            # savepoint took it away.
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_{table} "
                        f"(LIKE {table} INCLUDING DEFAULTS)")
            with cur.copy(f"COPY stage_{table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in params:
                    copy.write_row([row[c] for c in columns])
            cur.execute(sql)
            cur.execute(f"TRUNCATE stage_{table}")
