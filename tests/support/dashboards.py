"""The provisioned Grafana dashboards (ops/grafana/dashboards/*.json), read as data.

Grafana is not part of the local stack, so nothing else would notice a panel whose
SQL breaks only once Grafana has rewritten it. ``expand`` rewrites a ClickHouse panel
query the way the official plugin (grafana-clickhouse-datasource, v4) does before it
reaches ClickHouse, so that the tests can run every panel on chdb:

1. the plugin's front end replaces ``$__conditionalAll(condition, $var)``: ``1=1``
   when the variable's "All" option is selected, else the condition;
2. Grafana replaces the template variables: ``$var``, ``${var}``, ``${var:format}``;
3. the plugin's back end (pkg/macros/macros.go) replaces the ``$__name(args)`` macros,
   with the time range in UTC, as the server in the image runs.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Collection
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prometheus_client import REGISTRY

DASHBOARDS = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "dashboards"
CLICKHOUSE = "grafana-clickhouse-datasource"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::(\w+))?\}")  # Grafana's forms, less [[var]]
_MACRO = re.compile(r"\$__(\w+)")
_CONDITIONAL_ALL = "$__conditionalAll("


def load() -> dict[str, dict]:
    """Dashboard file name (without .json) -> its parsed JSON."""
    return {path.stem: json.loads(path.read_text())
            for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    """Every panel, rows included, and the panels a collapsed row holds."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def datasource_type(panel: dict, target: dict) -> str | None:
    """A target's data source type; a target without one uses its panel's."""
    return (target.get("datasource") or panel.get("datasource") or {}).get("type")


def clickhouse_targets(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, rawSql) of every ClickHouse query of the dashboard."""
    return [(panel.get("title", ""), target["rawSql"])
            for panel in panels(dashboard) for target in panel.get("targets", [])
            if datasource_type(panel, target) == CLICKHOUSE]


def variable_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(name, SQL) of every ClickHouse query variable, in the dashboard's order, which
    is the order Grafana resolves them in."""
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and \
                (variable.get("datasource") or {}).get("type") == CLICKHOUSE:
            query = variable["query"]
            found.append((variable["name"], query["rawSql"] if isinstance(query, dict) else query))
    return found


def expand(sql: str, start: datetime, end: datetime, interval_s: int,
           variables: dict[str, list[str]], all_selected: Collection[str] = ()) -> str:
    """``sql`` as ClickHouse receives it from Grafana for the time range [start, end]
    (timezone-aware), a panel interval of ``interval_s`` seconds and the selected
    ``variables`` (name -> values). ``all_selected`` names the variables whose "All"
    option is selected; their values are then every option, as Grafana sends them.
    ValueError names an unknown macro or variable, or a misused one."""
    sql = _conditional_all(sql, all_selected)
    sql = _VARIABLE.sub(lambda m: _variable(m, variables), sql)
    return _macros(sql, start, end, interval_s)


# --- 1. $__conditionalAll ---------------------------------------------------------------

def _conditional_all(sql: str, all_selected: Collection[str]) -> str:
    while (at := sql.find(_CONDITIONAL_ALL)) >= 0:
        args, after = _arguments(sql, at + len(_CONDITIONAL_ALL) - 1)
        plain = re.fullmatch(r"\$(\w+)|\$\{(\w+)\}", args[1]) if len(args) == 2 else None
        if not plain:
            raise ValueError("$__conditionalAll takes a condition and a plain variable "
                             f"reference ($var or ${{var}}), got {args}")
        name = plain.group(1) or plain.group(2)
        sql = sql[:at] + ("1=1" if name in all_selected else args[0]) + sql[after:]
    return sql


def _arguments(sql: str, open_at: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the parenthesis at ``open_at`` (nested
    parentheses and quoted strings kept whole, each argument trimmed) and the index
    after its closing parenthesis."""
    depth, quote, args, begin = 0, None, [], open_at + 1
    for i in range(open_at, len(sql)):
        char = sql[i]
        if quote:
            quote = None if char == quote and sql[i - 1] != "\\" else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return [a.strip() for a in [*args, sql[begin:i]]], i + 1
        elif char == "," and depth == 1:
            args.append(sql[begin:i])
            begin = i + 1
    raise ValueError(f"unclosed parenthesis in {sql[max(open_at - 20, 0):open_at + 40]!r}")


# --- 2. template variables --------------------------------------------------------------

# Grafana's variable formats used in SQL (several values joined by commas).
_FORMATS: dict[str, Callable[[list[str]], str]] = {
    "singlequote": lambda values: ",".join("'" + v.replace("'", "\\'") + "'" for v in values),
    "doublequote": lambda values: ",".join('"' + v.replace('"', '\\"') + '"' for v in values),
    "csv": ",".join,
}


def _variable(match: re.Match, variables: dict[str, list[str]]) -> str:
    name = match.group(1) or match.group(2)
    if name.startswith("__"):
        return match.group(0)  # a macro: step 3
    if name not in variables:
        raise ValueError(f"unknown template variable ${name}")
    values, fmt = variables[name], match.group(3)
    if not values:
        raise ValueError(f"template variable ${name} has no value")
    if fmt is None:
        # Unformatted, Grafana writes several values as a glob ({a,b}): never valid SQL.
        if len(values) > 1:
            raise ValueError(f"${name} has several values: write ${{{name}:singlequote}}")
        return values[0]
    if fmt not in _FORMATS:
        raise ValueError(f"unsupported format {fmt!r} of ${name}; supported: "
                         f"{', '.join(_FORMATS)}")
    return _FORMATS[fmt](values)


# --- 3. the plugin's macros (pkg/macros/macros.go) --------------------------------------

def _seconds(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError(f"{t} has no timezone: the time range must be timezone-aware")
    return (t - _EPOCH) // timedelta(seconds=1)  # Go's t.Unix(): floored


def _millis(t: datetime) -> int:
    _seconds(t)
    return (t - _EPOCH) // timedelta(milliseconds=1)


def _datetime(t: datetime) -> str:
    return f"toDateTime({_seconds(t)})"


def _datetime64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({_millis(t)})"


def _date(t: datetime) -> str:
    _seconds(t)
    return f"toDate('{t.astimezone(timezone.utc):%Y-%m-%d}')"


def _between(column: str, low: str, high: str) -> str:
    return f"{column} >= {low} AND {column} <= {high}"


# name -> (number of arguments, None for a macro without parentheses; expansion of
# (start, end, interval_s, *arguments)).
_MACROS: dict[str, tuple[int | None, Callable[..., str]]] = {
    "fromTime": (None, lambda s, e, i: _datetime(s)),
    "toTime": (None, lambda s, e, i: _datetime(e)),
    "fromTime_ms": (None, lambda s, e, i: _datetime64(s)),
    "toTime_ms": (None, lambda s, e, i: _datetime64(e)),
    "interval_s": (None, lambda s, e, i: str(max(i, 1))),
    "timeFilter": (1, lambda s, e, i, col: _between(col, _datetime(s), _datetime(e))),
    "timeFilter_ms": (1, lambda s, e, i, col: _between(col, _datetime64(s), _datetime64(e))),
    "dateFilter": (1, lambda s, e, i, col: _between(col, _date(s), _date(e))),
    "dateTimeFilter": (2, lambda s, e, i, day, col:
                       f"({_between(day, _date(s), _date(e))}) AND "
                       f"({_between(col, _datetime(s), _datetime(e))})"),
    "timeInterval": (1, lambda s, e, i, col:
                     f"toStartOfInterval(toDateTime({col}), INTERVAL {max(i, 1)} second)"),
    "timeInterval_ms": (1, lambda s, e, i, col: f"toStartOfInterval(toDateTime64({col}, 3), "
                                                f"INTERVAL {max(i * 1000, 1)} millisecond)"),
}
_MACROS["dt"] = _MACROS["dateTimeFilter"]


def _macros(sql: str, start: datetime, end: datetime, interval_s: int) -> str:
    unknown = sorted({f"$__{name}" for name in _MACRO.findall(sql) if name not in _MACROS})
    if unknown:
        raise ValueError(f"unknown macro {', '.join(unknown)}; supported: "
                         f"{', '.join('$__' + name for name in _MACROS)}")
    out, pos = [], 0
    for match in _MACRO.finditer(sql):
        if match.start() < pos:
            raise ValueError(f"{match.group(0)} inside the arguments of another macro")
        arity, expansion = _MACROS[match.group(1)]
        args, after = ([], match.end()) if arity is None else _macro_arguments(sql, match)
        if arity is not None and len(args) != arity:
            raise ValueError(f"{match.group(0)} takes {arity} argument(s), got {args}")
        out += [sql[pos:match.start()], expansion(start, end, interval_s, *args)]
        pos = after
    return "".join(out) + sql[pos:]


def _macro_arguments(sql: str, match: re.Match) -> tuple[list[str], int]:
    if sql[match.end():match.end() + 1] != "(":
        raise ValueError(f"{match.group(0)} needs its arguments in parentheses")
    return _arguments(sql, match.end())


# --- checks the tests share ---------------------------------------------------------

def defined_metrics() -> set[str]:
    """Every series name the processes' prometheus_client metrics export: the default
    registry after importing every module that declares metrics (the worker's agents,
    the sinks, the inference client)."""
    for module in ("inference.client", "streams.sinks", "streams.worker"):
        importlib.import_module(module)

    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"],
                "summary": ["", "_sum", "_count"]}
    return {family.name + suffix for family in REGISTRY.collect()
            if family.name.startswith("agora_") for suffix in suffixes[family.type]}


def assert_panels_run(client) -> None:
    """Run every variable query and every ClickHouse panel query of every dashboard on
    ``client`` (a clickhouse-connect client on database agora), over a time range that
    covers any test data, with "All" selected for every variable (its values from its
    own query), and require columns and at least one row from each."""
    start = datetime(2000, 1, 1, tzinfo=timezone.utc)
    end = datetime.now(timezone.utc) + timedelta(days=1)
    for name, board in load().items():
        values: dict[str, list[str]] = {}
        for variable, sql in variable_queries(board):
            options = run(client, f"{name} / ${variable}",
                          expand(sql, start, end, 60, values))
            values[variable] = [str(row[0]) for row in options]
        for title, sql in clickhouse_targets(board):
            run(client, f"{name} / {title}",
                expand(sql, start, end, 60, values, all_selected=set(values)))


def run(client, where: str, sql: str) -> list[tuple]:
    try:
        result = client.query(sql)
    except Exception as exc:  # noqa: BLE001 - reported with the panel and its SQL
        raise AssertionError(f"{where} failed: {exc}\n{sql}") from exc
    assert result.column_names and result.result_rows, f"{where} returned no rows:\n{sql}"
    return result.result_rows
