"""Fixtures: the real local stack, started once per test session and stopped at the end."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from ops import stack
from ops.config import Settings
from ops.stack.process import survivors


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings resolved against a real stack of our own, on free loopback ports."""
    stack_dir = Path(tempfile.mkdtemp(prefix="agora-test-stack-"))
    try:
        stack.up(stack_dir, progress=lambda line: print(line, flush=True))
        tracked = stack.processes(stack_dir)
        yield Settings(stack_dir=stack_dir)
    finally:
        stack.down(stack_dir, progress=lambda line: None)
        shutil.rmtree(stack_dir, ignore_errors=True)
    left = survivors(tracked)
    assert not left, f"stack processes survived the test session: {left}"
