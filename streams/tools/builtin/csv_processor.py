"""CSV processing with the csv module: describe, head, sort, filter, group sums."""

from __future__ import annotations

import csv
import io
import pathlib
import re
import statistics

from streams.tools.builtin import ToolError

NUMBER = re.compile(r"[+-]?[$€£]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?%?")
NEEDS_COLUMN = {"sort", "filter", "group_sum"}


def _number(cell: str) -> float | None:
    cell = cell.strip()
    if not cell or not NUMBER.fullmatch(cell) or not any(c.isdigit() for c in cell):
        return None
    return float(re.sub(r"[$€£,%]", "", cell))


def _fmt(x: float) -> str:
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return format(x, ".10g")


def _parse(text: str) -> tuple[list[str], list[list[str]]]:
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    # pick the delimiter the header uses most (comma unless clearly something else)
    delimiter = max(",\t;|", key=lambda d: (first.count(d), d == ","))
    try:
        rows = [r for r in csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter)
                if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise ToolError(f"could not parse the CSV: {exc}") from None
    if not rows:
        raise ToolError("the CSV is empty (no header row found)")
    header, seen = [], set()
    for i, name in enumerate(rows[0], 1):
        name = name.strip() or f"column_{i}"
        base, n = name, 2
        while name in seen:  # make duplicate names addressable
            name, n = f"{base}_{n}", n + 1
        seen.add(name)
        header.append(name)
    width = len(header)
    data = [(r + [""] * width)[:width] for r in rows[1:]]
    if not data:
        raise ToolError(f"the CSV has a header but no data rows (columns: {', '.join(header)})")
    return header, data


def _column(header: list[str], name: str | None, operation: str) -> int:
    available = ", ".join(header)
    if not name:
        raise ToolError(f"operation '{operation}' needs a column; available columns: {available}")
    if name in header:
        return header.index(name)
    folded = [h.casefold() for h in header]
    if name.strip().casefold() in folded:
        return folded.index(name.strip().casefold())
    raise ToolError(f"unknown column '{name}'; available columns: {available}")


def _numeric_columns(data: list[list[str]], width: int) -> list[bool]:
    """A column is numeric when it has values and every non-empty one is a number."""
    columns = [[r[i] for r in data if r[i].strip()] for i in range(width)]
    return [bool(cells) and all(_number(c) is not None for c in cells) for cells in columns]


def _cell(value: str) -> str:
    value = " ".join(value.split()).replace("|", "\\|")
    return value if len(value) <= 60 else value[:59] + "…"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def _describe(header, data, numeric) -> str:
    rows = []
    for i, name in enumerate(header):
        cells = [r[i].strip() for r in data if r[i].strip()]
        if numeric[i]:
            nums = [_number(c) for c in cells]
            rows.append([name, "number", str(len(cells)), _fmt(min(nums)), _fmt(max(nums)),
                         _fmt(statistics.fmean(nums)), _fmt(statistics.median(nums)), "", ""])
        else:
            counts: dict[str, int] = {}
            for c in cells:
                counts[c] = counts.get(c, 0) + 1
            top = max(counts, key=counts.get) if counts else ""
            rows.append([name, "text", str(len(cells)), "", "", "", "", str(len(counts)),
                         f"{top} ({counts[top]})" if top else ""])
    columns = ["column", "type", "count", "min", "max", "mean", "median", "distinct", "top"]
    return f"{len(data)} rows, {len(header)} columns\n\n" + _table(columns, rows)


def _matches(cell: str, wanted: str) -> bool:
    cell, wanted = cell.strip(), wanted.strip()
    if cell.casefold() == wanted.casefold():
        return True
    a, b = _number(cell), _number(wanted)
    return a is not None and a == b


def _group_sum(header, data, numeric, col, descending, limit) -> str:
    summed = [i for i in range(len(header)) if numeric[i] and i != col]
    groups: dict[str, list] = {}
    for r in data:
        key = r[col].strip() or "(empty)"
        acc = groups.setdefault(key, [0] + [0.0] * len(summed))
        acc[0] += 1
        for j, i in enumerate(summed, 1):
            acc[j] += _number(r[i]) or 0.0
    items = list(groups.items())
    if descending is not None:  # order by the first summed column (else by row count)
        items.sort(key=lambda kv: kv[1][1] if summed else kv[1][0], reverse=descending)
    columns = [header[col], "rows"] + [f"sum {header[i]}" for i in summed]
    rows = [[k, str(v[0])] + [_fmt(x) for x in v[1:]] for k, v in items[:limit]]
    note = "" if summed else " (no numeric columns to sum)"
    shown = f"showing {len(rows)} of {len(items)}" if len(items) > limit else f"{len(items)}"
    return f"{shown} groups by {header[col]}{note}\n\n" + _table(columns, rows)


def _sort(header, data, numeric, col, descending, limit) -> str:
    # empty cells stay last in both directions
    filled = [r for r in data if r[col].strip()]
    empty = [r for r in data if not r[col].strip()]
    key = (lambda r: _number(r[col])) if numeric[col] else (lambda r: r[col].strip().casefold())
    rows = (sorted(filled, key=key, reverse=descending) + empty)[:limit]
    order = "descending" if descending else "ascending"
    return (f"sorted by {header[col]} ({order}), showing {len(rows)} of {len(data)} rows\n\n"
            + _table(header, rows))


def _filter(header, data, col, value, limit) -> str:
    if value is None:
        raise ToolError("operation 'filter' needs a value to match")
    hits = [r for r in data if _matches(r[col], value)]
    shown = f", showing {limit}" if len(hits) > limit else ""
    output = f"{len(hits)} of {len(data)} rows where {header[col]} = {value!r}{shown}"
    return output + ("\n\n" + _table(header, hits[:limit]) if hits else "")


def run(arguments: dict, workdir: pathlib.Path) -> dict:
    header, data = _parse(arguments["csv"])
    operation = arguments["operation"]
    limit = arguments.get("limit", 10)
    numeric = _numeric_columns(data, len(header))
    if operation == "describe":
        output = _describe(header, data, numeric)
    elif operation == "head":
        output = f"first {min(limit, len(data))} of {len(data)} rows\n\n" + _table(header, data[:limit])
    elif operation not in NEEDS_COLUMN:
        raise ToolError(f"unknown operation '{operation}'")
    else:
        col = _column(header, arguments.get("column"), operation)
        if operation == "sort":
            output = _sort(header, data, numeric, col, bool(arguments.get("descending")), limit)
        elif operation == "filter":
            output = _filter(header, data, col, arguments.get("value"), limit)
        else:
            output = _group_sum(header, data, numeric, col, arguments.get("descending"), limit)
    return {"output": output, "artifacts": []}
