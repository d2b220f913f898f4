"""The Grafana dashboards (ops/grafana/dashboards) without Grafana: their JSON, the
plugin macro expansion of tests/support/dashboards.py, every PromQL expression through promtool,
and every ClickHouse panel query run for real on chdb over the sample events.

``assert_panels_run`` is also called by tests/integration/test_sinks.py on the data the pipeline
wrote, so that the panels are known to return rows from real events too."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from ops.core.config import Settings
from ops.store import migrate
from ops.store.clickhouse import open_client
from ops.store.clickhouse_rows import COLUMNS, rows
from support import dashboards
from support.dashboards import assert_panels_run, defined_metrics
from support.samples import SAMPLES

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "ops" / "grafana" / "provisioning" / "datasources" / "datasources.yml"
EXPECTED = {"system-overview", "agent-performance", "relevance", "tools-and-votes",
            "incidents"}
PANEL_TYPES = {"row", "timeseries", "stat", "table", "barchart", "piechart"}
# Grafana's own variables in PromQL, replaced by a valid duration for promtool.
PROM_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h"}
PROMTOOL = "/usr/bin/promtool"
START = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc)
END = datetime(2024, 5, 7, 1, 2, 3, 456000, tzinfo=timezone.utc)
S, E = 1714979289, 1715043723  # START and END in Unix seconds


@pytest.fixture(scope="module")
def boards() -> dict[str, dict]:
    return dashboards.load()


def datasources() -> dict[str, str]:
    """Provisioned data source uid -> type."""
    return {ds["uid"]: ds["type"] for ds in yaml.safe_load(PROVISIONING.read_text())["datasources"]}


def prometheus_targets(board: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboards.panels(board)
            for target in panel.get("targets", [])
            if dashboards.datasource_type(panel, target) == "prometheus"]


# --- the JSON ---------------------------------------------------------------------------

def test_the_dashboards_are_there_with_stable_unique_uids(boards):
    assert set(boards) == EXPECTED
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids) and all(uid.startswith("agora-") for uid in uids)
    for name, board in boards.items():
        assert board["title"] and "agora" in board["tags"], name
        assert board["schemaVersion"] >= 39, name
        assert board["time"] == {"from": "now-6h", "to": "now"} and board["refresh"], name


def test_panels_have_unique_ids_a_grid_position_and_a_provisioned_datasource(boards):
    known = datasources()
    for name, board in boards.items():
        found = dashboards.panels(board)
        ids = [panel["id"] for panel in found]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        for panel in found:
            where = f"{name} / {panel.get('title')}"
            assert panel["type"] in PANEL_TYPES, where
            pos = panel["gridPos"]
            assert all(isinstance(pos[k], int) for k in "hwxy"), where
            assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, where
            if panel["type"] == "row":
                continue
            assert panel["title"] and panel["targets"], where
            assert known.get(panel["datasource"]["uid"]) == panel["datasource"]["type"], where
            for target in panel["targets"]:
                ds = target.get("datasource") or panel["datasource"]
                assert known.get(ds["uid"]) == ds["type"], f"{where} {target['refId']}"


def test_clickhouse_targets_use_the_v4_sql_editor_fields(boards):
    for name, board in boards.items():
        for panel in dashboards.panels(board):
            for target in panel.get("targets", []):
                if dashboards.datasource_type(panel, target) != dashboards.CLICKHOUSE:
                    continue
                where = f"{name} / {panel['title']}"
                assert target["editorType"] == "sql" and target["rawSql"], where
                assert target["pluginVersion"].startswith("4."), where
                # The plugin's formats: 0 time series, 1 table.
                expected = (0, "timeSeries") if panel["type"] == "timeseries" else (1, "table")
                assert (target["format"], target["queryType"]) == expected, where


def test_clickhouse_variables_offer_all(boards):
    for name, board in boards.items():
        for variable in board["templating"]["list"]:
            assert variable["includeAll"] and variable["multi"], f"{name} ${variable['name']}"
            assert variable["query"]["rawSql"] == variable["definition"]


# --- the expansion ----------------------------------------------------------------------

def expanded(sql: str, **variables: list[str]) -> str:
    return dashboards.expand(sql, START, END, 30, variables)


@pytest.mark.parametrize("sql, result", [
    ("$__timeFilter(t)", f"t >= toDateTime({S}) AND t <= toDateTime({E})"),
    ("$__timeFilter_ms(t)", "t >= fromUnixTimestamp64Milli(1714979289123) "
                            "AND t <= fromUnixTimestamp64Milli(1715043723456)"),
    ("$__dateFilter(d)", "d >= toDate('2024-05-06') AND d <= toDate('2024-05-07')"),
    ("$__dateTimeFilter(d, t)", "(d >= toDate('2024-05-06') AND d <= toDate('2024-05-07')) "
                                f"AND (t >= toDateTime({S}) AND t <= toDateTime({E}))"),
    ("$__dt(d,t)", "(d >= toDate('2024-05-06') AND d <= toDate('2024-05-07')) "
                   f"AND (t >= toDateTime({S}) AND t <= toDateTime({E}))"),
    ("$__fromTime", f"toDateTime({S})"),
    ("$__toTime", f"toDateTime({E})"),
    ("$__fromTime_ms", "fromUnixTimestamp64Milli(1714979289123)"),
    ("$__toTime_ms", "fromUnixTimestamp64Milli(1715043723456)"),
    ("$__interval_s", "30"),
    ("$__timeInterval(m.created_at)",
     "toStartOfInterval(toDateTime(m.created_at), INTERVAL 30 second)"),
    ("$__timeInterval_ms( t )", "toStartOfInterval(toDateTime64(t, 3), INTERVAL 30000 millisecond)"),
    ("x IN (${v:singlequote})", "x IN ('a','it\\'s')"),
    ("x IN (${v:doublequote})", 'x IN ("a","it\'s")'),
    ("'${v:csv}'", "'a,it's'"),
    ("$__conditionalAll(x IN (${v:singlequote}), $v)", "x IN ('a','it\\'s')"),
    ("$__conditionalAll(f(x, y) = ${w}, ${w})", "f(x, y) = b"),
    ("$w = ${w}", "b = b"),
])
def test_each_macro_and_variable_expands_as_the_plugin_does(sql, result):
    assert expanded(sql, v=["a", "it's"], w=["b"]) == result


def test_conditional_all_is_1_1_when_all_is_selected():
    sql = "WHERE $__conditionalAll(x IN (${v:singlequote}), $v) AND y IN (${v:singlequote})"
    assert dashboards.expand(sql, START, END, 30, {"v": ["a", "b"]}, all_selected={"v"}) == \
        "WHERE 1=1 AND y IN ('a','b')"


def test_the_interval_is_at_least_one_second_and_ms_times_floor():
    assert dashboards.expand("$__interval_s $__timeInterval_ms(t)", START, END, 0, {}) == \
        "1 toStartOfInterval(toDateTime64(t, 3), INTERVAL 1 millisecond)"
    before_epoch = datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=timezone.utc)
    assert dashboards.expand("$__fromTime $__fromTime_ms", before_epoch, END, 1, {}) == \
        "toDateTime(-1) fromUnixTimestamp64Milli(-500)"


@pytest.mark.parametrize("sql, message", [
    ("$__timeFilter(t) AND $__unixEpochFilter(t) AND $__nope", r"\$__nope, \$__unixEpochFilter"),
    ("$__timeFilter(a, b)", "takes 1 argument"),
    ("$__timeFilter", "in parentheses"),
    ("$__timeFilter(t", "unclosed"),
    ("$missing", "unknown template variable"),
    ("x IN ($v)", "several values"),
    ("${v:regex}", "unsupported format"),
    ("$__conditionalAll(x, ${v:singlequote})", "plain variable reference"),
])
def test_what_grafana_would_not_expand_raises(sql, message):
    with pytest.raises(ValueError, match=message):
        expanded(sql, v=["a", "b"])


def test_a_naive_time_range_is_refused():
    with pytest.raises(ValueError, match="timezone"):
        dashboards.expand("$__fromTime", START.replace(tzinfo=None), END, 1, {})


def test_every_clickhouse_query_expands_completely(boards):
    for name, board in boards.items():
        names = [variable for variable, _ in dashboards.variable_queries(board)]
        one_each = {variable: ["x"] for variable in names}
        queries = dashboards.clickhouse_targets(board) + dashboards.variable_queries(board)
        assert queries, name
        for title, sql in queries:
            for selected in ((), names):  # one value each, then All everywhere
                text = dashboards.expand(sql, START, END, 60, one_each, all_selected=selected)
                assert "$" not in text, f"{name} / {title}: {text}"


# --- PromQL -----------------------------------------------------------------------------

def test_every_promql_expression_is_valid(boards, tmp_path):
    rules = []
    for name, board in boards.items():
        for title, expr in prometheus_targets(board):
            for variable, value in PROM_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{name} / {title}: unknown variable in {expr}"
            rules.append({"record": f"panel_{len(rules)}", "expr": expr})
    assert rules
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    check = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_metric_in_promql_exists_in_the_code(boards):
    known = defined_metrics()
    for name, board in boards.items():
        for title, expr in prometheus_targets(board):
            unknown = set(re.findall(r"\bagora_\w+", expr)) - known
            assert not unknown, f"{name} / {title}: {sorted(unknown)} not defined"


# --- every ClickHouse panel, run ---------------------------------------------------------

def test_every_panel_returns_rows_on_chdb(tmp_path):
    client = open_client(Settings(clickhouse_url=f"chdb://{tmp_path}"))
    try:
        migrate.clickhouse(client)
        for event, record in SAMPLES:
            for table, row in rows(event, record):
                client.insert(table, [row], column_names=COLUMNS[table])
        assert_panels_run(client)
        # One value selected instead of All: the conditions must be valid SQL too.
        one = {"channel": ["general"], "agent": ["developer-backend"], "tool": ["shell"],
               "vote_type": ["TOOL_USAGE"], "severity": ["SEV1"]}
        start, end = datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc)
        for name, board in dashboards.load().items():
            for title, sql in dashboards.clickhouse_targets(board):
                run_ok = client.query(dashboards.expand(sql, start, end, 60, one))
                assert run_ok.column_names, f"{name} / {title}"
    finally:
        client.close()
