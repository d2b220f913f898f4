"""The ClickHouse sink: every event, one table per event kind, for analytics.

The same clickhouse-connect code talks to chdb (the embedded engine; this process then
owns its directory) and to a ClickHouse server over HTTP. Replays are dropped twice
over: the sink skips event ids a table already holds (one sink owns a partition, so
the check and the insert do not race), and the tables are ReplacingMergeTrees, which
merge away any copy that slips through.
"""

from __future__ import annotations

from collections import defaultdict

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from ops.core.config import Settings
from ops.core.errors import Unavailable
from ops.store import migrate
from ops.store.clickhouse_rows import COLUMNS, event_ids, rows, stored_keys_query
from ops.store.sink import Event, Rejected

DATABASE = migrate.CLICKHOUSE_DATABASE


def open_client(settings: Settings):
    """A client on the ``agora`` database (created when missing)."""
    bootstrap = clickhouse_connect.get_client(dsn=settings.clickhouse)
    try:
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    finally:
        bootstrap.close()
    return clickhouse_connect.get_client(dsn=settings.clickhouse, database=DATABASE)


class ClickHouseStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = None

    def _connection(self):
        if self.client is None:
            try:
                self.client = open_client(self.settings)
                migrate.clickhouse(self.client)  # the owner of chdb applies its schema
            except OperationalError as exc:
                self.client = None
                raise Unavailable(str(exc)) from exc
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def write(self, events: list[Event]) -> None:
        client = self._connection()
        by_table: dict[str, list[tuple[int, str, tuple]]] = defaultdict(list)
        for index, event in enumerate(events):
            if event.name == "Tombstone":
                continue
            for table, row in rows(event.name, event.record):
                by_table[table].append((index, event_ids(table, row), row))
        try:
            for table, items in by_table.items():
                seen = self._stored(client, table, [key for _, key, _ in items])
                fresh = []
                for index, key, row in items:
                    if key not in seen:
                        seen.add(key)
                        fresh.append((index, row))
                if fresh:
                    self._insert(client, table, fresh)
        except OperationalError as exc:
            self.close()
            raise Unavailable(str(exc)) from exc

    @staticmethod
    def _stored(client, table: str, keys: list[str]) -> set[str]:
        sql, params = stored_keys_query(table, keys)
        return {row[0] for row in client.query(sql, parameters=params).result_rows}

    @staticmethod
    def _insert(client, table: str, fresh: list[tuple[int, tuple]]) -> None:
        try:
            client.insert(table, [row for _, row in fresh], column_names=COLUMNS[table])
        except OperationalError:
            raise  # an outage, not bad data
        except DatabaseError:
            # Find the rows ClickHouse refuses; the batch is written without them.
            bad = {}
            for index, row in fresh:
                try:
                    client.insert(table, [row], column_names=COLUMNS[table])
                except OperationalError:
                    raise
                except DatabaseError as exc:
                    bad[index] = f"rejected by ClickHouse ({table}): {exc}"
            if bad:
                raise Rejected(bad) from None
