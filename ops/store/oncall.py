"""The on-call rota in Postgres (migration 0008): who is on call for a channel, when,
and which channel their alerts go to. Synchronous; outages surface as ``Unavailable``."""

from __future__ import annotations

from datetime import datetime

from ops.store.memory import connection, pool


class OncallStore:
    def __init__(self, dsn: str):
        self.pool = pool(dsn, max_size=1)

    def close(self) -> None:
        self.pool.close()

    def add(self, channel_id: str, person: str, notify_channel: str, starts_at: datetime,
            ends_at: datetime | None = None) -> None:
        """A shift (the same person's shift from the same time is replaced)."""
        with connection(self.pool) as conn:
            conn.execute("""INSERT INTO oncall_rota (channel_id, person, starts_at, ends_at,
                            notify_channel) VALUES (%s, %s, %s, %s, %s)
                            ON CONFLICT (channel_id, person, starts_at) DO UPDATE
                            SET ends_at = EXCLUDED.ends_at,
                                notify_channel = EXCLUDED.notify_channel""",
                         (channel_id, person, starts_at, ends_at, notify_channel))

    def shifts(self, channel_id: str | None = None) -> list[tuple]:
        """(channel, person, starts, ends, notify channel) of every shift, or a channel's."""
        with connection(self.pool) as conn:
            return conn.execute(
                """SELECT channel_id, person, starts_at, ends_at, notify_channel
                   FROM oncall_rota WHERE %s::text IS NULL OR channel_id = %s
                   ORDER BY channel_id, starts_at, person""", (channel_id, channel_id)).fetchall()

    def now(self, channel_id: str, at: datetime) -> tuple[str | None, list[str]]:
        """(the channel alerts go to, the people on call) for ``channel_id`` at ``at``;
        (None, []) when nobody is."""
        with connection(self.pool) as conn:
            rows = conn.execute(
                """SELECT person, notify_channel FROM oncall_rota
                   WHERE channel_id = %s AND starts_at <= %s AND (ends_at IS NULL OR ends_at > %s)
                   ORDER BY starts_at DESC, person""", (channel_id, at, at)).fetchall()
        # A person with overlapping shifts is paged once.
        return (rows[0][1] if rows else None), list(dict.fromkeys(p for p, _ in rows))
