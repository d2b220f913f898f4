"""Built-in tools called directly (no sandbox), and the catalog YAML they are declared in."""

from __future__ import annotations

import importlib
import pathlib

import jsonschema
import pytest
import yaml

from streams.tools.builtin import (
    ToolError,
    calculator,
    chart_generator,
    code_analyzer,
    csv_processor,
    shell,
    text_formatter,
)

CATALOG = pathlib.Path(__file__).resolve().parents[2] / "streams" / "domain" / "tools" / "catalog"
CATEGORIES = {"math", "text", "data", "code", "visualization", "analytics", "system", "incident"}
LIMIT_KEYS = {"cpu_s", "memory_mb", "wall_s", "output_kb", "processes", "file_mb", "disk_mb"}


@pytest.fixture(autouse=True)
def restore_environment(monkeypatch, tmp_path):
    """The chart tool sets MPLCONFIGDIR and BLAS thread variables; undo that after each test."""
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")


def calc(expression: str, tmp_path: pathlib.Path) -> str:
    return calculator.run({"expression": expression}, tmp_path)["output"]


# --- calculator ---------------------------------------------------------------------------

@pytest.mark.parametrize("expression, shown", [
    ("0.17 * 2340", "0.17 * 2340 = 397.8"),
    ("2**10", "2**10 = 1024"),
    ("sqrt(16) + log(8, 2)", "sqrt(16) + log(8, 2) = 7"),
    ("-(3 + 4) * 2 // 3", "-(3 + 4) * 2 // 3 = -5"),
    ("7 % 3 + round(2.567, 2)", "7 % 3 + round(2.567, 2) = 3.57"),
    ("max(1, 5, 3) - min(4, 2)", "max(1, 5, 3) - min(4, 2) = 3"),
    ("floor(pi) + ceil(e)", "floor(pi) + ceil(e) = 6"),
    ("2**100", f"2**100 = {2**100}"),
    ("1/3", "1/3 = 0.333333333333"),
])
def test_calculator_values(tmp_path, expression, shown):
    assert calc(expression, tmp_path) == shown


def test_calculator_sqrt_precision(tmp_path):
    assert calc("sqrt(2)", tmp_path) == "sqrt(2) = 1.41421356237"


@pytest.mark.parametrize("expression, fragment", [
    ("__import__('os')", "'__import__' is not allowed"),
    ("(1).real", "attribute access"),
    ("9**9**9", "exponent"),
    ("10**999 ** 2", "exponent"),
    ("(10**20)**999", "more than 10000 digits"),
    ("99999**1000 * 99999**1000 * 99999**1000", "more than 10000 digits"),
    ("1/0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("'a' * 3", "strings"),
    ("[x for x in (1, 2)]", "comprehensions"),
    ("(lambda: 1)()", "not allowed"),
    ("foo + 1", "unknown name 'foo'"),
    ("2 ^ 3", "use ** for powers"),
    ("sqrt(-1)", "math error"),
    ("exp(1000)", "too large"),
    ("sqrt(1, 2)", "takes 1 argument"),
    ("1 +", "syntax error"),
])
def test_calculator_refuses(tmp_path, expression, fragment):
    with pytest.raises(ToolError) as err:
        calc(expression, tmp_path)
    assert fragment in str(err.value)


# --- text_formatter -----------------------------------------------------------------------

TEXT = "The cat sat on the mat. The cat slept!\nDid the dog care? No."


def fmt(text: str, operation: str, **extra) -> str:
    return text_formatter.run({"text": text, "operation": operation, **extra}, pathlib.Path("."))["output"]


def test_text_stats():
    stats = dict(line.split(": ", 1) for line in fmt(TEXT, "stats").splitlines())
    assert stats["characters"] == str(len(TEXT))
    assert stats["words"] == "14"
    assert stats["sentences"] == "4"
    assert stats["lines"] == "2"
    assert stats["average word length"] == "3.1"  # 43 letters / 14 words
    assert stats["reading time (200 wpm)"] == "4 s"
    assert stats["top words"] == "cat (2), sat (1), mat (1), slept (1), dog (1)"


def test_text_transforms():
    assert fmt("hello World", "upper") == "HELLO WORLD"
    assert fmt("don't STOP me", "title") == "Don't Stop Me"
    assert fmt("Crème Brûlée: 2 ways!", "slugify") == "creme-brulee-2-ways"
    assert fmt(TEXT, "bullets").splitlines() == [
        "- The cat sat on the mat.", "- The cat slept!", "- Did the dog care?", "- No."]
    wrapped = fmt("word " * 40, "wrap", width=20)
    assert max(map(len, wrapped.splitlines())) <= 20 and wrapped.split() == ["word"] * 40
    plain = fmt("# Title\n\nSome **bold** and [a link](http://x.y) and `code`.\n- item", "strip_markdown")
    assert plain == "Title\n\nSome bold and a link and code.\nitem"
    with pytest.raises(ToolError):
        fmt("!!!", "slugify")


# --- csv_processor ------------------------------------------------------------------------

CSV = """region,product,units,price
North,apple,10,1.5
South,pear,5,2
North,pear,7,2.25
East,apple,,1.5
South,apple,3,1.25
"""


def table(output: str) -> list[list[str]]:
    """Body rows of the Markdown table in output."""
    rows = [line.strip("|").split("|") for line in output.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row] for row in rows[2:]]


def csvp(**arguments) -> str:
    return csv_processor.run({"csv": CSV, **arguments}, pathlib.Path("."))["output"]


def test_csv_describe():
    out = csvp(operation="describe")
    assert out.startswith("5 rows, 4 columns")
    rows = {r[0]: r for r in table(out)}
    assert rows["units"][1:7] == ["number", "4", "3", "10", "6.25", "6"]
    assert rows["price"][3:7] == ["1.25", "2.25", "1.7", "1.5"]
    assert rows["region"][1:3] == ["text", "5"] and rows["region"][7:] == ["3", "North (2)"]


def test_csv_head_sort_filter():
    assert [r[0] for r in table(csvp(operation="head", limit=2))] == ["North", "South"]
    by_units = table(csvp(operation="sort", column="units", descending=True))
    assert [r[2] for r in by_units] == ["10", "7", "5", "3", ""]  # empty cell last
    assert [r[3] for r in table(csvp(operation="sort", column="price", limit=2))] == ["1.25", "1.5"]
    out = csvp(operation="filter", column="Region", value="north")
    assert out.startswith("2 of 5 rows") and [r[1] for r in table(out)] == ["apple", "pear"]
    assert table(csvp(operation="filter", column="units", value="10.0"))[0][:2] == ["North", "apple"]


def test_csv_group_sum():
    rows = table(csvp(operation="group_sum", column="region"))
    assert rows == [["North", "2", "17", "3.75"], ["South", "2", "8", "3.25"], ["East", "1", "0", "1.5"]]
    # descending orders groups by the first summed column (units: apple 13, pear 12)
    rows = table(csvp(operation="group_sum", column="product", descending=True))
    assert rows == [["apple", "3", "13", "4.25"], ["pear", "2", "12", "4.25"]]


def test_csv_errors():
    with pytest.raises(ToolError, match="available columns: region, product, units, price"):
        csvp(operation="sort", column="nope")
    with pytest.raises(ToolError, match="needs a column.*region"):
        csvp(operation="group_sum")
    with pytest.raises(ToolError, match="empty"):
        csv_processor.run({"csv": "\n\n", "operation": "describe"}, pathlib.Path("."))
    with pytest.raises(ToolError, match="columns: a, b"):
        csv_processor.run({"csv": "a,b\n", "operation": "head"}, pathlib.Path("."))


# --- code_analyzer ------------------------------------------------------------------------

CODE = '''import os
import json  # used below

def branchy(x, acc=[]):
    if x > 0 and x < 10:
        for i in range(x):
            if i % 2:
                acc.append(i)
            elif i == 3:
                pass
    try:
        return json.dumps([a for a in acc if a]) if acc else missing
    except:
        return None


class Thing:
    def method(self):
        return 1
'''


def test_code_analyzer_metrics_and_findings():
    out = code_analyzer.run({"code": CODE}, pathlib.Path("."))["output"]
    assert out.splitlines()[0] == "lines: 19 total, 16 code, 0 comment, 3 blank"
    # if, and, for, if, elif, except, comprehension-if, ternary: 8 decisions + 1
    assert "| branchy | 4 | 9 |" in out
    assert "| Thing.method | 18 | 1 |" in out and "| Thing | 17 | 1 |" in out
    assert "max nesting depth: 4 (line 7)" in out  # def > if > for > if (elif is not deeper)
    assert "imports: os, json" in out
    assert "- line 1: 'os' imported but unused" in out
    assert "- line 12: undefined name 'missing'" in out
    assert "- line 13: bare 'except:'" in out
    assert "- line 4: mutable default argument" in out


def test_code_analyzer_flags_complex_function():
    body = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(12))
    out = code_analyzer.run({"code": f"def big(x):\n{body}"}, pathlib.Path("."))["output"]
    assert "| big | 1 | 13 |" in out and "complexity 13 (over 10)" in out


def test_code_analyzer_syntax_error_and_no_execution(tmp_path):
    with pytest.raises(ToolError, match="syntax error at line 3"):
        code_analyzer.run({"code": "x = 1\ny = 2\ndef f(:\n    pass\n"}, tmp_path)
    marker = tmp_path / "ran"
    code_analyzer.run({"code": f"open({str(marker)!r}, 'w').write('x')\n"}, tmp_path)
    assert not marker.exists()


# --- chart_generator ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bar", "line", "pie"])
def test_chart_writes_png(tmp_path, kind):
    result = chart_generator.run({"kind": kind, "title": "Sales $ by region", "labels": ["N", "S", "E", "W"],
                                  "values": [3, 5.5, 2, 8], "filename": f"{kind}.png"}, tmp_path)
    assert result["output"] == f'wrote {kind}.png: {kind} chart "Sales $ by region" with 4 points'
    assert result["artifacts"] == [f"{kind}.png"]
    data = (tmp_path / f"{kind}.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


@pytest.mark.parametrize("change, fragment", [
    ({"filename": "../x.png"}, "bad filename"),
    ({"filename": ".hidden.png"}, "bad filename"),
    ({"filename": "chart.jpg"}, "bad filename"),
    ({"values": [1, 2]}, "same non-zero length"),
    ({"values": [1, 2, float("inf")]}, "finite"),
    ({"kind": "pie", "values": [1, -2, 3]}, "non-negative"),
])
def test_chart_refuses(tmp_path, change, fragment):
    arguments = {"kind": "bar", "title": "t", "labels": ["a", "b", "c"], "values": [1, 2, 3], **change}
    with pytest.raises(ToolError, match=fragment):
        chart_generator.run(arguments, tmp_path)
    assert not list(tmp_path.parent.glob("x.png"))


def test_chart_does_not_follow_symlinks(tmp_path):
    outside = tmp_path / "outside.txt"
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "chart.png").symlink_to(outside)
    with pytest.raises(ToolError, match="cannot write chart.png"):
        chart_generator.run({"kind": "line", "title": "t", "labels": ["a"], "values": [1]}, tmp_path / "work")
    assert not outside.exists()


# --- shell --------------------------------------------------------------------------------

def test_shell_echo(tmp_path):
    result = shell.run({"command": "echo hello; echo oops >&2; echo x > made.txt"}, tmp_path)
    assert result["output"] == "hello\noops\nexit status 0"
    assert result["artifacts"] == ["made.txt"] and (tmp_path / "made.txt").read_text() == "x\n"


def test_shell_nonzero_exit(tmp_path):
    with pytest.raises(ToolError) as err:
        shell.run({"command": "echo failing; exit 3"}, tmp_path)
    assert str(err.value) == "exit status 3\nfailing"


# --- catalog ------------------------------------------------------------------------------

EXAMPLES = {
    "calculator": {"expression": "0.17 * 2340"},
    "text_formatter": {"text": "Hello there.", "operation": "wrap", "width": 40},
    "csv_processor": {"csv": CSV, "operation": "sort", "column": "units", "descending": True, "limit": 3},
    "code_analyzer": {"code": CODE, "language": "python"},
    "chart_generator": {"kind": "pie", "title": "Share", "labels": ["a", "b"], "values": [1, 2.5],
                        "filename": "share.png"},
    "shell": {"command": "ls -la"},
    "ticket.create": {"title": "API returns 502", "severity": "SEV1", "service": "api"},
    "ticket.update": {"ticket": "INC-42", "status": "in_progress", "assignee": "human:maya"},
    "ticket.close": {"ticket": "INC-42", "resolution": "rolled back"},
    "notify": {"message": "API down for everyone", "severity": "SEV1", "ticket": "INC-42"},
}
# Optional keys: how a gated tool is voted and who skips the vote, what a run may change
# outside, and where it runs.
OPTIONAL = {"vote", "vote_exempt", "external_effects", "idempotent", "runs_in"}
GATED = {"shell", "ticket.create", "notify"}


def schema_problems(schema: dict, where: str = "parameters") -> list[str]:
    """Grammar-friendliness rules, checked on every nested schema."""
    problems = []
    kind = schema.get("type")
    if kind == "string" and "maxLength" not in schema and "enum" not in schema:
        problems.append(f"{where}: string without maxLength")
    if kind == "array":
        if "maxItems" not in schema:
            problems.append(f"{where}: array without maxItems")
        problems += schema_problems(schema.get("items", {}), f"{where}.items")
    if kind == "integer" and not {"minimum", "maximum"} <= schema.keys():
        problems.append(f"{where}: integer without minimum/maximum")
    if kind == "object":
        if schema.get("additionalProperties") is not False:
            problems.append(f"{where}: object without additionalProperties: false")
        for name, sub in schema.get("properties", {}).items():
            if not sub.get("description"):
                problems.append(f"{where}.{name}: no description")
            problems += schema_problems(sub, f"{where}.{name}")
    for banned in ("oneOf", "anyOf", "patternProperties", "format"):
        if banned in schema:
            problems.append(f"{where}: uses {banned}")
    return problems


def catalog() -> list[pathlib.Path]:
    return sorted(CATALOG.glob("*.yaml"))


def test_catalog_has_every_tool():
    assert {p.stem for p in catalog()} == set(EXAMPLES)


@pytest.mark.parametrize("path", catalog(), ids=lambda p: p.stem)
def test_catalog_entry(path):
    assert path.read_text().startswith("# Tool: ")
    entry = yaml.safe_load(path.read_text())
    assert set(entry) - OPTIONAL == {"name", "category", "description", "entrypoint",
                                     "parameters", "permissions", "needs_vote", "network",
                                     "limits"}
    assert isinstance(entry["external_effects"], bool)  # every tool says
    assert ("vote" in entry) is entry["needs_vote"]  # a gated tool says how it is voted
    assert entry["name"] == path.stem
    assert entry["category"] in CATEGORIES
    assert isinstance(entry["description"], str) and 20 < len(entry["description"]) < 500
    module, _, attr = entry["entrypoint"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    jsonschema.Draft202012Validator.check_schema(entry["parameters"])
    assert schema_problems(entry["parameters"]) == []
    assert entry["permissions"] == [f"tool:{path.stem}"]
    assert entry["needs_vote"] is (path.stem in GATED)
    assert entry["network"] is False
    limits = entry["limits"]
    assert set(limits) == LIMIT_KEYS
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in limits.values())
    jsonschema.Draft202012Validator(entry["parameters"]).validate(EXAMPLES[path.stem])
