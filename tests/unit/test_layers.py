"""The one-way layers of docs/ARCHITECTURE.md, checked on the import graph of the tree.

Each first-party module belongs to the layer of its longest listed prefix. A module may
import its own layer's package and anything below; sibling packages of one layer never
import each other. No first-party import hides inside a function (that is how cycles
were dodged), and a third-party one may only where the line says why (an optional,
heavy dependency loaded when used).
"""

from __future__ import annotations

import ast
from pathlib import Path

from schemas.topics import ALL

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ops", "schemas", "streams", "inference", "gateway")
# Bottom first; packages on one line are siblings that must not import each other.
LAYERS = (
    ("ops.core",),
    ("schemas",),
    ("streams.domain",),
    ("inference", "ops.store"),
    ("streams", "gateway"),
    ("ops.devstack",),
    ("ops.cli",),
)
GENERATED = "_pb2"


def _unit(module: str) -> tuple[int, str]:
    """(layer index, the listed package) of ``module``."""
    best = max((name for layer in LAYERS for name in layer
                if module == name or module.startswith(name + ".")), key=len, default=None)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and the docs"
    return next(i for i, layer in enumerate(LAYERS) if best in layer), best


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if GENERATED in path.name or "models" in path.relative_to(ROOT).parts[:2] and \
                    path.parts[-2] == "1":
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if name.removesuffix(".__init__") in PACKAGES:
                continue  # the top-level packages' __init__ files are empty
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path):
    """(imported module, line, inside a function) for each import of ``path``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, in_function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                for alias in child.names:
                    yield f"{base}.{alias.name}", child.lineno, in_function
            yield from visit(child, inner)

    yield from visit(tree, False)


def _first_party(module: str, known: dict[str, Path]) -> str | None:
    """The first-party module ``module`` names (``a.b.name`` may be a name in ``a.b``)."""
    while module:
        if module in known:
            return module
        module = module.rpartition(".")[0]
    return None


def test_imports_flow_one_way():
    known = _modules()
    wrong = []
    for name, path in sorted(known.items()):
        layer, unit = _unit(name)
        for imported, line, _ in _imports(name, path):
            target = _first_party(imported, known)
            if target is None:
                continue
            their_layer, their_unit = _unit(target)
            if their_layer > layer or (their_layer == layer and their_unit != unit):
                wrong.append(f"{path.relative_to(ROOT)}:{line} {unit} imports {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_hides_in_a_function():
    known = _modules()
    hidden = []
    for name, path in sorted(known.items()):
        lines = path.read_text().splitlines()
        for imported, line, in_function in _imports(name, path):
            if not in_function:
                continue
            said = "#" in lines[line - 1] or lines[line - 2].strip().startswith("#")
            if imported.split(".")[0] in PACKAGES or not said:
                hidden.append(f"{path.relative_to(ROOT)}:{line} {imported}")
    assert not hidden, ("imports inside functions (first-party, or third-party without "
                        "a comment saying why):\n" + "\n".join(hidden))


def test_every_module_has_a_layer():
    for name in _modules():
        _unit(name)


# Clients of servers and runtimes: the domain decides, the layers above do the I/O.
IO_MODULES = ("confluent_kafka", "aiokafka", "faust", "psycopg", "clickhouse_connect", "chdb",
              "qdrant_client", "grpc", "tritonclient", "socket", "subprocess", "ops.core.kafka")


def test_the_domain_does_no_io():
    known = _modules()
    found = [f"{path.relative_to(ROOT)}:{line} {imported}"
             for name, path in sorted(known.items()) if name.startswith("streams.domain")
             for imported, line, _ in _imports(name, path)
             if any(imported == io or imported.startswith(io + ".") for io in IO_MODULES)]
    assert not found, "I/O in streams/domain:\n" + "\n".join(found)


def test_the_architecture_lists_every_topic():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines()
            if line.startswith("| `agora.")}
    assert set(rows) == {t.name for t in ALL}, "docs/ARCHITECTURE.md's topic table is stale"
    for topic in ALL:
        for event in topic.events:
            assert event in rows[topic.name], f"{topic.name} carries {event}"
