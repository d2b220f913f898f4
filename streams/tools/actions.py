"""Agora's own actions: tools that need its stores, run in the worker rather than the
sandbox (catalog ``runs_in: worker``). Each is a synchronous function of the request,
its checked arguments and the stores, run in a thread; the tools agent claims it in the
ledger first, like any run, and publishes its outcome as a ToolResult and a notice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from ops.core.errors import Invalid, NotFound
from ops.store.tickets import TicketStore
from streams.domain.tools.catalog import Tool
from streams.tools.sandbox import Run


@dataclass(frozen=True)
class Stores:
    tickets: TicketStore


def _shown(ticket: dict) -> str:
    service = f", {ticket['service']}" if ticket["service"] else ""
    who = f", assigned to {ticket['assignee']}" if ticket["assignee"] else ""
    return (f"INC-{ticket['id']} [{ticket['severity']}{service}] {ticket['title']}: "
            f"{ticket['status']}{who}")


def open_ticket(request: dict, arguments: dict, stores: Stores) -> str:
    ticket, opened = stores.tickets.open(
        request["event_id"], request["channel_id"], request["agent_id"],
        arguments["title"], arguments["severity"], arguments.get("service"),
        arguments.get("incident_id"), arguments.get("message_ids", ()),
        arguments.get("assignee"))
    return f"{'opened' if opened else 'already open'}: {_shown(ticket)}"


def update_ticket(request: dict, arguments: dict, stores: Stores) -> str:
    ticket = stores.tickets.update(arguments["ticket"], status=arguments.get("status"),
                                   assignee=arguments.get("assignee"),
                                   message_ids=arguments.get("message_ids", ()))
    return f"updated: {_shown(ticket)}"


def close_ticket(request: dict, arguments: dict, stores: Stores) -> str:
    ticket = stores.tickets.update(arguments["ticket"],
                                   status=arguments.get("status", "resolved"),
                                   resolution=arguments["resolution"])
    return f"{ticket['status']}: {_shown(ticket)}; resolution: {ticket['resolution']}"


ACTIONS: dict[str, Callable[[dict, dict, Stores], str]] = {
    "streams.tools.actions:open_ticket": open_ticket,
    "streams.tools.actions:update_ticket": update_ticket,
    "streams.tools.actions:close_ticket": close_ticket,
}


async def run(tool: Tool, request: dict, arguments: dict, stores: Stores) -> Run:
    """Run an action within the tool's wall-clock limit. A store outage is raised
    (``Unavailable``: the request waits); a refusal (an unknown ticket) is a FAILED run."""
    action = ACTIONS.get(tool.entrypoint)
    if action is None:
        return Run("FAILED", error=f"{tool.name}: no action {tool.entrypoint!r}")
    started = time.monotonic()
    try:
        output = await asyncio.wait_for(asyncio.to_thread(action, request, arguments, stores),
                                        tool.limits.wall_s)
    except (NotFound, Invalid) as exc:
        return Run("FAILED", error=str(exc), duration_ms=_ms(started))
    except asyncio.TimeoutError:
        return Run("TIMEOUT", error=f"{tool.name} took longer than {tool.limits.wall_s:g} s",
                   duration_ms=_ms(started))
    return Run("OK", output=output, duration_ms=_ms(started))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
