"""What the tools agent does with a request whose run the ledger already knows.

The ledger (``ops/store/ledger.py``, table ``tool_ledger``) holds each sandboxed run by
request id: ``claimed`` before the sandbox starts it, ``running`` once it does, then
``done`` or ``failed`` with the events it published. A request comes back when a
worker died before committing its offset; this decides, from the row, whether the
tool may run (again).
"""

from __future__ import annotations

from typing import Literal

from streams.domain.tools.catalog import Tool

Next = Literal["run", "publish", "interrupted"]
STATES = ("claimed", "running", "done", "failed")


def next_step(state: str | None, tool: Tool) -> Next:
    """``run`` when nothing ran yet (no row, or claimed but never started), or the tool
    has no external effects or is idempotent (running it again changes nothing more
    outside); ``publish`` the
    stored outcome of a finished run; ``interrupted`` for a run of a tool with external
    effects that was cut off while running: it may have acted, so it is failed with
    that reason rather than run twice."""
    if state in ("done", "failed"):
        return "publish"
    if state == "running" and tool.external_effects and not tool.idempotent:
        return "interrupted"
    return "run"


def interrupted_reason(tool: Tool, worker_id: str) -> str:
    return (f"the run of {tool.name} was interrupted (worker {worker_id} stopped while it "
            f"ran); {tool.name} has external effects, so it is not run a second time: "
            f"check what it did, then request it again")
