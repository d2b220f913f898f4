"""Backward-compatibility check between two Avro schemas.

``check_backward(reader, writer)`` answers: can data written with ``writer``
(the old, released schema) be read with ``reader`` (the new schema)? It follows
the resolution rules of the Avro specification:

- records: every reader field absent from the writer (by name or by one of the
  reader field's aliases) needs a default; writer-only fields are skipped;
- enums: writer symbols missing from the reader need a reader enum default;
- unions: every writer branch must resolve to some reader branch (the first
  one that matches, as a reader would pick it); a non-union writer must match
  a branch of a union reader;
- arrays and maps resolve their items and values;
- primitives must be equal or promotable (int -> long/float/double,
  long -> float/double, float -> double, string <-> bytes);
- named types (record, enum, fixed) must have the same unqualified name, or
  the writer's name must be one of the reader's aliases; fixed sizes must be
  equal;
- logical types are checked as their underlying type.

It returns human-readable incompatibilities, empty when compatible.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["check_backward"]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def check_backward(reader: Any, writer: Any) -> list[str]:
    """Incompatibilities met when ``reader`` (new) reads data written with ``writer`` (old).

    Both schemas may be JSON text or the parsed JSON (dict, list or str).
    """
    reader, writer = _load(reader), _load(writer)
    r_names: dict[str, dict] = {}
    w_names: dict[str, dict] = {}
    _collect(reader, "", r_names)
    _collect(writer, "", w_names)
    checker = _Checker(r_names, w_names)
    checker.check(reader, "", writer, "", _root_path(reader))
    return checker.problems


def _load(schema: Any) -> Any:
    if isinstance(schema, str) and schema.lstrip().startswith(("{", "[", '"')):
        return json.loads(schema)
    return schema


def _root_path(schema: Any) -> str:
    return schema.get("name", "") if isinstance(schema, dict) else ""


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _namespace_of(fullname: str) -> str:
    return fullname.rpartition(".")[0]


def _collect(node: Any, ns: str, names: dict[str, dict]) -> None:
    """Index the named types defined in ``node`` by full name."""
    if isinstance(node, list):
        for branch in node:
            _collect(branch, ns, names)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in NAMED:
            full = _fullname(node["name"], node.get("namespace", ns))
            names[full] = node
            for field in node.get("fields", ()):
                _collect(field["type"], _namespace_of(full), names)
        elif kind == "array":
            _collect(node["items"], ns, names)
        elif kind == "map":
            _collect(node["values"], ns, names)
        elif isinstance(kind, (dict, list)):
            _collect(kind, ns, names)


class _Checker:
    def __init__(self, r_names: dict[str, dict], w_names: dict[str, dict]):
        self.r_names = r_names
        self.w_names = w_names
        self.problems: list[str] = []
        # Pairs of named types already checked (or being checked): stops
        # recursive types from looping and reports each pair once.
        self.seen: set[tuple[str, str]] = set()

    def check(self, r: Any, rns: str, w: Any, wns: str, path: str) -> None:
        r, rns = self._resolve(r, rns, self.r_names, "reader", path)
        w, wns = self._resolve(w, wns, self.w_names, "writer", path)
        if r is None or w is None:
            return
        if isinstance(w, list):
            for branch in w:
                self.check(r, rns, branch, wns, path)
            return
        if isinstance(r, list):
            for branch in r:
                rb, bns = self._resolve(branch, rns, self.r_names, "reader", path)
                if rb is not None and _matches(rb, bns, w, wns):
                    self.check(rb, bns, w, wns, path)
                    return
            self._fail(path, f"writer type {_show(w)} matches no branch of reader union {_show(r)}")
            return

        rk, wk = _kind(r), _kind(w)
        if rk in PRIMITIVES or wk in PRIMITIVES:
            if not (rk == wk or rk in PROMOTIONS.get(wk, ())):
                self._fail(path, f"writer type {_show(w)} cannot be read as {_show(r)}")
            return
        if rk != wk:
            self._fail(path, f"writer type {_show(w)} cannot be read as {_show(r)}")
            return
        if rk == "array":
            self.check(r["items"], rns, w["items"], wns, f"{path}[]")
        elif rk == "map":
            self.check(r["values"], rns, w["values"], wns, f"{path}{{}}")
        else:
            self._check_named(r, rns, w, wns, path)

    def _check_named(self, r: dict, rns: str, w: dict, wns: str, path: str) -> None:
        r_full = _fullname(r["name"], r.get("namespace", rns))
        w_full = _fullname(w["name"], w.get("namespace", wns))
        if not _same_name(r, r_full, w_full):
            self._fail(path, f"writer {w['type']} {w_full} cannot be read as {r['type']} {r_full} (names differ)")
            return
        if (r_full, w_full) in self.seen:
            return
        self.seen.add((r_full, w_full))
        kind = _kind(r)
        if kind == "fixed":
            if r["size"] != w["size"]:
                self._fail(path, f"fixed {r_full} changed size from {w['size']} to {r['size']}")
        elif kind == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                self._fail(
                    path,
                    f"enum {r_full} lost symbols {', '.join(missing)} and has no default "
                    "to read them as",
                )
        else:
            self._check_record(r, _namespace_of(r_full), w, _namespace_of(w_full), path)

    def _check_record(self, r: dict, rns: str, w: dict, wns: str, path: str) -> None:
        w_fields = {f["name"]: f for f in w["fields"]}
        for rf in r["fields"]:
            names = [rf["name"], *rf.get("aliases", ())]
            wf = next((w_fields[n] for n in names if n in w_fields), None)
            field_path = f"{path}.{rf['name']}" if path else rf["name"]
            if wf is not None:
                self.check(rf["type"], rns, wf["type"], wns, field_path)
            elif "default" not in rf:
                self._fail(field_path, "new field is missing from the writer schema and has no default")

    def _resolve(self, node: Any, ns: str, names: dict[str, dict], side: str, path: str):
        """Strip wrappers and logical types; follow named references. Returns (node, namespace)."""
        while isinstance(node, dict) and node.get("type") not in NAMED | {"array", "map"}:
            node = node["type"]  # {"type": "long", "logicalType": ...} or {"type": <schema>}
        if isinstance(node, str) and node not in PRIMITIVES:
            full = _fullname(node, ns)
            if full not in names:
                self._fail(path, f"{side} schema references unknown type {node}")
                return None, ns
            return names[full], _namespace_of(full)
        return node, ns

    def _fail(self, path: str, problem: str) -> None:
        self.problems.append(f"{path}: {problem}" if path else problem)


def _kind(node: Any) -> str:
    kind = node if isinstance(node, str) else node["type"]
    return "record" if kind == "error" else kind


def _same_name(reader: dict, r_full: str, w_full: str) -> bool:
    accepted = {_short(r_full), *(_short(a) for a in reader.get("aliases", ()))}
    return _short(w_full) in accepted


def _matches(r: Any, rns: str, w: Any, wns: str) -> bool:
    """Shallow match used to pick the reader union branch for a writer type."""
    rk, wk = _kind(r), _kind(w)
    if rk in PRIMITIVES or wk in PRIMITIVES:
        return rk == wk or rk in PROMOTIONS.get(wk, ())
    if rk != wk:
        return False
    if rk in ("array", "map"):
        return True
    return _same_name(r, _fullname(r["name"], r.get("namespace", rns)), _fullname(w["name"], w.get("namespace", wns)))


def _show(node: Any) -> str:
    if isinstance(node, list):
        return "[" + ", ".join(_show(b) for b in node) + "]"
    if isinstance(node, str):
        return node
    kind = _kind(node)
    if kind == "array":
        return "array"
    if kind == "map":
        return "map"
    return f"{kind} {node['name']}"
