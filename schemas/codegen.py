"""Generate the gateway's Python code from its protos: ``python -m schemas.codegen``.

The ``.proto`` files live in ``schemas/proto/agora/v1/`` so that their import paths
(``agora/v1/chat.proto``) follow the ``agora.v1`` package, as protoc and every other
language's toolchain expect. protoc derives Python imports from those paths
(``from agora.v1 import tools_pb2``), which would need a top-level ``agora`` package;
the generated modules belong to ``schemas.agora.v1`` instead, so those import lines
are rewritten. Putting the protos under ``schemas/agora/v1/`` would avoid the rewrite
but would publish ``schemas/agora/v1/chat.proto`` as the API's file names (what
reflection serves and clients import), a Python layout leaking into the contract.

The generated files are committed, so the gateway needs no protoc at run time;
``tests/unit/test_gateway_logic.py`` regenerates them and fails when they differ, so they
are never edited by hand and never go stale.
"""

from __future__ import annotations

import re
import tempfile
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent / "proto"
PACKAGE_DIR = Path("agora") / "v1"  # of the protos under PROTO_ROOT and of the output
OUTPUT_ROOT = Path(__file__).resolve().parent  # generated modules: schemas/agora/v1/
GENERATED = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")

_OWN_IMPORT = re.compile(r"^from agora\.v1 import ", re.MULTILINE)
_UNRESOLVED = re.compile(r"^\s*(from|import) agora\b", re.MULTILINE)


class CodegenError(RuntimeError):
    """protoc failed, or produced an import this module does not know how to fix."""


def protos() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def _protoc(*args: str) -> None:
    """Run the protoc bundled with grpcio-tools (its well-known types on the path)."""
    well_known = files("grpc_tools") / "_proto"
    argv = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", *args, *map(str, protos())]
    if protoc.main(argv) != 0:
        raise CodegenError(f"protoc failed (its errors are above): {' '.join(argv[1:])}")


def descriptor_set(path: Path) -> None:
    """Write the protos' FileDescriptorSet, with comments, to ``path``."""
    _protoc("--include_source_info", f"--descriptor_set_out={path}")


def generate(output_root: Path = OUTPUT_ROOT) -> list[Path]:
    """Write ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` for every proto into
    ``output_root/agora/v1/``, removing generated files whose proto is gone; returns
    the files written."""
    target = output_root / PACKAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # protoc writes into a scratch directory: a failed run leaves the target as it was.
        _protoc(f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}")
        fresh = {}
        for path in sorted((Path(tmp) / PACKAGE_DIR).iterdir()):
            text = _OWN_IMPORT.sub("from schemas.agora.v1 import ", path.read_text())
            if _UNRESOLVED.search(text):
                raise CodegenError(f"{path.name}: an import of agora.v1 was not rewritten")
            fresh[path.name] = text
    for pattern in GENERATED:
        for stale in target.glob(pattern):
            if stale.name not in fresh:
                stale.unlink()
    for name, text in fresh.items():
        (target / name).write_text(text)
    return [target / name for name in fresh]


if __name__ == "__main__":
    for written in generate():
        print(written)
