"""Predefined analytics queries: one ``.sql`` file each beside this module.

A file starts with a comment line saying what it answers, then one line per
parameter, ``-- param: NAME ClickHouseType = default``; the SQL refers to them with
ClickHouse's server-side binding, ``{NAME:Type}``, so values are never spliced into
the text. ``agora analytics NAME --param NAME=VALUE`` runs one; the gateway will too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from ops.core.errors import Invalid

QUERIES = Path(__file__).resolve().parent
_PARAM = re.compile(r"^--\s*param:\s*(\w+)\s+(\S+)\s*=\s*(.+)$")


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # ClickHouse type: UInt32, Int64, Float64, String, DateTime64(3)...
    default: object

    def coerce(self, text: str) -> object:
        """The typed value of ``text``; ValueError names the parameter and its type."""
        try:
            if re.match(r"U?Int\d+$", self.type):
                value = int(text)
                if self.type.startswith("U") and value < 0:
                    raise ValueError("must not be negative")
                return value
            if self.type.startswith("Float"):
                return float(text)
            if self.type.startswith("DateTime"):
                return datetime.fromisoformat(text)
            return text
        except ValueError as exc:
            raise ValueError(f"parameter {self.name} ({self.type}): {text!r} is invalid: "
                             f"{exc}") from None


class UnknownParameter(Invalid):
    """A value given for a parameter the query does not declare (``name``)."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    params: tuple[Param, ...]
    sql: str

    def bind(self, given: Mapping[str, object],
             coerce: Callable[[Param, object], object] = Param.coerce) -> dict[str, object]:
        """Every parameter's value: given ones through ``coerce`` (by default from the
        command line's text), the others at their default."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:  # the first only, cut short: the gateway echoes it to its caller
            raise UnknownParameter(unknown[0], f"{self.name} has no parameter "
                                   f"{unknown[0][:40]}; parameters: {', '.join(known) or 'none'}")
        return {name: coerce(p, given[name]) if name in given else p.default
                for name, p in known.items()}


def parse(name: str, text: str) -> Query:
    lines = text.splitlines()
    if not lines or not lines[0].startswith("--"):
        raise ValueError(f"{name}: the first line must be a comment saying what it answers")
    params = []
    for line in lines[1:]:
        match = _PARAM.match(line.strip())
        if match:
            pname, ptype, default = match.groups()
            params.append(Param(pname, ptype, ast.literal_eval(default)))
    for used in re.findall(r"\{(\w+):", text):
        if used not in {p.name for p in params}:
            raise ValueError(f"{name}: {{{used}:...}} is used but not declared")
    return Query(name, lines[0].lstrip("- ").strip(), tuple(params), text)


@lru_cache(maxsize=1)
def load() -> dict[str, Query]:
    return {path.stem: parse(path.stem, path.read_text())
            for path in sorted(QUERIES.glob("*.sql"))}


def run(client, name: str, given: dict[str, str]) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of a predefined query through a clickhouse-connect client."""
    queries = load()
    if name not in queries:
        raise KeyError(f"unknown query {name!r}; queries: {', '.join(queries)}")
    query = queries[name]
    result = client.query(query.sql, parameters=query.bind(given))
    return list(result.column_names), [tuple(row) for row in result.result_rows]
