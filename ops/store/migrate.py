"""``agora db migrate``: versioned SQL migrations, applied once each and tracked.

Postgres files are ``ops/store/migrations/postgres/NNNN_name.sql``, applied in order, each
in its own transaction together with its row in ``schema_migrations``. ClickHouse
files (``ops/store/migrations/clickhouse/``) have no transactions: their statements are
idempotent (``IF NOT EXISTS``) and the file is recorded once all have run. An advisory lock
lets many processes run the command at once (compose's init job and a developer,
say) without applying anything twice. A file changed after it was applied is an
error: write a new migration instead. Reference data (templates, tool definitions)
is upserted on every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import psycopg

from ops.core.config import Settings
from ops.core.errors import Conflict
from ops.store.postgres_rows import STATEMENTS, reference_rows
from streams.domain.registry import templates
from streams.domain.tools.catalog import load

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
LOCK_ID = 0x61676F7261  # "agora": one advisory lock for every migrating process


class MigrationError(Conflict):
    """A migration cannot be applied; the message says which and why."""


def _files(kind: str) -> list[tuple[str, Path, str]]:
    found = []
    for path in sorted((MIGRATIONS / kind).glob("*.sql")):
        version = path.stem.split("_", 1)[0]
        found.append((version, path, hashlib.sha256(path.read_bytes()).hexdigest()))
    return found


def _pending(kind: str, done: dict[str, str], progress: Callable[[str], None]):
    """The files of ``kind`` not applied yet; an applied file that changed is an error."""
    for version, path, checksum in _files(kind):
        if version in done:
            if done[version] != checksum:
                raise MigrationError(f"{path.name} changed after it was applied; "
                                     "add a new migration instead")
            continue
        progress(f"applying {path.name}")
        yield version, path, checksum


def postgres(settings: Settings, progress: Callable[[str], None] = lambda line: None
             ) -> list[str]:
    """Apply the pending Postgres migrations; returns the versions applied now."""
    applied_now = []
    with psycopg.connect(settings.postgres_dsn, connect_timeout=10) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
        try:
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())""")
            conn.commit()
            done = dict(conn.execute("SELECT version, checksum FROM schema_migrations"))
            for version, path, checksum in _pending("postgres", done, progress):
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute("INSERT INTO schema_migrations (version, name, checksum) "
                                 "VALUES (%s, %s, %s)", (version, path.stem, checksum))
                applied_now.append(version)
            with conn.transaction(), conn.cursor() as cur:
                for statement, params in reference_rows(templates(), load()):
                    cur.execute(STATEMENTS[statement], params)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
    return applied_now


CLICKHOUSE_DATABASE = "agora"


def clickhouse_statements(path: Path) -> list[str]:
    """The statements of a ClickHouse migration file (split at ``;`` ending a line)."""
    return [stmt.strip() for stmt in path.read_text().split(";\n") if
            any(line.strip() and not line.strip().startswith("--")
                for line in stmt.splitlines())]


def clickhouse(client, progress: Callable[[str], None] = lambda line: None) -> list[str]:
    """Apply the pending ClickHouse migrations through a clickhouse-connect client (chdb
    or HTTP); returns the versions applied now."""
    db = CLICKHOUSE_DATABASE
    if client.database != db:  # the files name tables without their database
        raise ValueError(f"open the client on the {db!r} database "
                         "(ops.store.clickhouse.open_client)")
    client.command(f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version String, "
                   "name String, checksum String, applied_at DateTime64(3, 'UTC') "
                   "DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version")
    done = dict(client.query(f"SELECT version, checksum FROM {db}.schema_migrations FINAL"
                             ).result_rows)
    applied_now = []
    for version, path, checksum in _pending("clickhouse", done, progress):
        for statement in clickhouse_statements(path):
            client.command(statement)
        client.insert(f"{db}.schema_migrations", [[version, path.stem, checksum]],
                      column_names=["version", "name", "checksum"])
        applied_now.append(version)
    return applied_now
