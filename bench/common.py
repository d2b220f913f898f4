"""What the benches share: a local stack to measure against."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops import stack  # noqa: E402
from ops.config import Settings  # noqa: E402


@contextmanager
def local_stack() -> Iterator[Settings]:
    """The running local stack, or one of our own in a temporary directory."""
    settings = Settings()
    if all(s.state == "up" for s in stack.status(settings.stack_dir)):
        yield settings
        return
    own = Path(tempfile.mkdtemp(prefix="agora-bench-"))
    print(f"starting a local stack in {own}", flush=True)
    stack.up(own, progress=lambda line: print("  " + line, flush=True))
    try:
        yield Settings(stack_dir=own)
    finally:
        stack.down(own, progress=lambda line: None)
