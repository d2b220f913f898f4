"""AnalyticsService: the predefined ClickHouse queries of ops/store/analytics, for "*" tokens.

Parameters arrive typed and are checked against their declared ClickHouse types, then
bound by ClickHouse (never spliced into the SQL). Each call opens its own client in a
thread (clickhouse-connect is blocking, and one client's session takes one query at
a time) and closes it after: embedded chdb lets only one process open its directory,
and the ClickHouse sink must be able to take it. Within this process the embedded
engine is used by one call at a time.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
from datetime import date, datetime, time, timezone
from pathlib import Path

from clickhouse_connect.driver.exceptions import Error as ClickHouseError
from clickhouse_connect.driver.exceptions import OperationalError

from gateway import validation
from gateway.auth import ALL_CHANNELS, Role
from gateway.guard import caller
from ops.core.config import Settings
from ops.core.errors import Denied, NotFound, Unavailable
from ops.store import analytics
from ops.store.clickhouse import open_client
from schemas.agora.v1 import analytics_pb2, analytics_pb2_grpc
from schemas.convert import timestamp

MAX_ROWS = 10_000  # rows per answer; more are cut and flagged as truncated
INT64 = range(-2**63, 2**63)
_INT = re.compile(r"(U?)Int(\d+)$")


def typed(value) -> analytics_pb2.TypedValue:
    """A query parameter's default or a result cell as a TypedValue."""
    if value is None:
        return analytics_pb2.TypedValue()
    if isinstance(value, bool):
        return analytics_pb2.TypedValue(bool_value=value)
    if isinstance(value, int) and value in INT64:
        return analytics_pb2.TypedValue(int_value=value)
    if isinstance(value, float):
        return analytics_pb2.TypedValue(float_value=value)
    if isinstance(value, datetime):
        # clickhouse-connect gives naive datetimes in UTC for columns without a zone.
        return analytics_pb2.TypedValue(time_value=timestamp(
            value if value.tzinfo else value.replace(tzinfo=timezone.utc)))
    if isinstance(value, date):
        return analytics_pb2.TypedValue(time_value=timestamp(
            datetime.combine(value, time(), timezone.utc)))
    if isinstance(value, (list, tuple, dict)):
        return analytics_pb2.TypedValue(string_value=json.dumps(value, default=str))
    return analytics_pb2.TypedValue(string_value=str(value))  # Decimal, UUID, big ints...


def param_value(param: analytics.Param, value: analytics_pb2.TypedValue):
    """The Python value to bind for ``param``; InvalidField when its kind does not fit."""
    field, kind = f"params[{param.name}]", value.WhichOneof("kind")

    def refuse(reason: str):
        return validation.InvalidField(field, f"{param.type}: {reason}")

    if (match := _INT.match(param.type)):
        if kind != "int_value":
            raise refuse("needs int_value")
        unsigned, bits = match.group(1) == "U", int(match.group(2))
        low, high = (0, 2**bits - 1) if unsigned else (-2**(bits - 1), 2**(bits - 1) - 1)
        if not low <= value.int_value <= high:
            raise refuse(f"{value.int_value} is out of range [{low}, {high}]")
        return value.int_value
    if param.type.startswith("Float"):
        if kind not in ("float_value", "int_value"):
            raise refuse("needs float_value or int_value")
        return float(getattr(value, kind))
    if param.type.startswith(("DateTime", "Date")):
        if kind != "time_value":
            raise refuse("needs time_value")
        return value.time_value.ToDatetime(timezone.utc)
    if param.type == "Bool":
        if kind != "bool_value":
            raise refuse("needs bool_value")
        return value.bool_value
    if kind != "string_value":
        raise refuse("needs string_value")
    return value.string_value


def query(definition: analytics.Query) -> analytics_pb2.Query:
    return analytics_pb2.Query(
        name=definition.name, title=definition.title,
        params=[analytics_pb2.QueryParam(name=p.name, type=p.type, default_value=typed(p.default))
                for p in definition.params])


def _held(directory: str) -> bool:
    """Whether another process holds the chdb directory (ClickHouse flocks its status file)."""
    try:
        fd = os.open(Path(directory) / "status", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock, if taken


def _require_all_channels() -> None:
    who = caller()
    if not who.may(ALL_CHANNELS, Role.VIEWER):
        raise Denied(f"{who.subject}: analytics span every channel and need a token that "
                     f"reads {ALL_CHANNELS!r} (viewer or more)")


class AnalyticsService(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, settings: Settings):
        self.settings = settings
        self.embedded = settings.clickhouse.startswith("chdb://")
        self._engine = asyncio.Lock()

    def _open(self):
        try:
            return open_client(self.settings)
        except ClickHouseError as exc:
            if self.embedded and _held(self.settings.clickhouse.removeprefix("chdb://")):
                raise Unavailable(
                    f"the embedded ClickHouse at {self.settings.clickhouse} is held by another "
                    "process, usually the ClickHouse sink (only one process may open it); "
                    "point AGORA_CLICKHOUSE_URL at a ClickHouse server to query while the "
                    "sink runs") from exc
            raise Unavailable(f"cannot open ClickHouse at {self.settings.clickhouse}: "
                              f"{exc}") from exc

    def _run(self, sql: str, values: dict) -> analytics_pb2.RunQueryResponse:
        client = self._open()
        try:
            # One row past the limit says whether there were more.
            found = client.query(sql, parameters=values, settings={
                "max_result_rows": MAX_ROWS + 1, "result_overflow_mode": "break"})
        except OperationalError as exc:
            raise Unavailable(f"ClickHouse: {exc}") from exc
        finally:
            client.close()
        rows = found.result_rows
        return analytics_pb2.RunQueryResponse(
            columns=[analytics_pb2.Column(name=n, type=t.name)
                     for n, t in zip(found.column_names, found.column_types)],
            rows=[analytics_pb2.Row(values=[typed(v) for v in row]) for row in rows[:MAX_ROWS]],
            truncated=len(rows) > MAX_ROWS)

    async def ListQueries(self, request, context):
        _require_all_channels()
        return analytics_pb2.ListQueriesResponse(
            queries=[query(q) for q in analytics.load().values()])

    async def RunQuery(self, request, context):
        _require_all_channels()
        queries = analytics.load()
        if request.name not in queries:
            raise NotFound(f"no query {request.name!r}; queries: {', '.join(queries)}")
        definition = queries[request.name]
        try:
            values = definition.bind(request.params, param_value)
        except analytics.UnknownParameter as exc:
            raise validation.InvalidField(f"params[{exc.name[:40]}]", str(exc)) from None
        if not self.embedded:
            return await asyncio.to_thread(self._run, definition.sql, values)
        async with self._engine:
            return await asyncio.to_thread(self._run, definition.sql, values)
