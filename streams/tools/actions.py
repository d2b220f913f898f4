"""Agora's own actions: tools that need its stores or the network, run in the worker
rather than the sandbox (catalog ``runs_in: worker``). The tools agent claims each in
the ledger first, like any run, and publishes its outcome as a ToolResult and a notice,
with the events the action adds (the on-call alert).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from ops.core.config import Settings
from ops.core.errors import Invalid, NotFound, Unavailable
from ops.core.retry import Retry, after, retrying
from ops.store.oncall import OncallStore
from ops.store.tickets import TicketStore
from schemas.events import Event, ToolRequest, ToolStatus
from schemas.ids import derived_id
from streams.domain.notices import system_message
from streams.domain.tools.catalog import Tool

ALERTS = "agora.oncall"  # the author of on-call alerts


@dataclass(frozen=True)
class Stores:
    settings: Settings
    tickets: TicketStore
    oncall: OncallStore


@dataclass(frozen=True)
class Outcome:
    status: ToolStatus  # OK, FAILED or TIMEOUT
    output: str = ""
    error: str | None = None
    duration_ms: int = 0
    events: list[tuple[str, Event]] = field(default_factory=list)  # published with it
    dead_letter: str | None = None  # the request is dead-lettered with this reason too


class WebhookFailed(Exception):
    """The webhook did not take the alert (a timeout, a refused connection, not 2xx)."""


def _shown(ticket: dict) -> str:
    service = f", {ticket['service']}" if ticket["service"] else ""
    who = f", assigned to {ticket['assignee']}" if ticket["assignee"] else ""
    return (f"INC-{ticket['id']} [{ticket['severity']}{service}] {ticket['title']}: "
            f"{ticket['status']}{who}")


async def open_ticket(request: ToolRequest, arguments: dict, stores: Stores) -> Outcome:
    ticket, opened = await asyncio.to_thread(
        stores.tickets.open, request["event_id"], request["channel_id"], request["agent_id"],
        arguments["title"], arguments["severity"], arguments.get("service"),
        arguments.get("incident_id"), arguments.get("message_ids", ()),
        arguments.get("assignee"))
    return Outcome("OK", f"{'opened' if opened else 'already open'}: {_shown(ticket)}")


async def update_ticket(request: ToolRequest, arguments: dict, stores: Stores) -> Outcome:
    ticket = await asyncio.to_thread(
        stores.tickets.update, arguments["ticket"], status=arguments.get("status"),
        assignee=arguments.get("assignee"), message_ids=arguments.get("message_ids", ()))
    return Outcome("OK", f"updated: {_shown(ticket)}")


async def close_ticket(request: ToolRequest, arguments: dict, stores: Stores) -> Outcome:
    ticket = await asyncio.to_thread(
        stores.tickets.update, arguments["ticket"], status=arguments.get("status", "resolved"),
        resolution=arguments["resolution"])
    return Outcome("OK", f"{ticket['status']}: {_shown(ticket)}; "
                         f"resolution: {ticket['resolution']}")


async def notify(request: ToolRequest, arguments: dict, stores: Stores) -> Outcome:
    """Alert the people on call for the request's channel: an alert in their notify
    channel that mentions them, and the configured webhook (retried with backoff)."""
    now = datetime.now(timezone.utc)
    channel = request["channel_id"]
    where, people = await asyncio.to_thread(stores.oncall.now, channel, now)
    severity = arguments.get("severity", "SEV2")
    text = (f"[{severity}] {arguments['message']} (from #{channel}, by "
            f"{request['agent_id']})" + (f" {' '.join('@' + p for p in people)}"
                                         if people else " Nobody is on call for it."))
    alert = system_message(
        derived_id(request["event_id"], "alert"), where or channel, ALERTS, text, now,
        {"kind": "oncall_alert", "tool_request_id": request["event_id"], "severity": severity,
         "oncall": ",".join(people), **{k: arguments[k] for k in ("incident_id", "ticket")
                                        if k in arguments}})
    shown = f"alerted {', '.join(people) or 'nobody on call'} in #{where or channel}"
    url = stores.settings.notify_webhook_url
    if not url:
        return Outcome("OK", shown, events=[("ChatMessage", alert)])
    body = json.dumps({"request_id": request["event_id"], "channel_id": channel,
                       "agent_id": request["agent_id"], "severity": severity,
                       "message": arguments["message"], "oncall": people,
                       **{k: arguments[k] for k in ("incident_id", "ticket") if k in arguments}
                       }).encode()
    attempts = stores.settings.notify_attempts
    try:
        answer = await retrying(
            lambda: asyncio.to_thread(_post, url, body, stores.settings.notify_timeout_s),
            Retry(stop=after(attempts)), (WebhookFailed,), "tools.webhook_retry",
            request=request["event_id"])
    except WebhookFailed as exc:
        reason = f"the webhook did not take the alert after {attempts} attempts: {exc}"
        return Outcome("FAILED", shown, error=reason, events=[("ChatMessage", alert)],
                       dead_letter=reason)
    return Outcome("OK", f"{shown}; webhook answered {answer}",
                   events=[("ChatMessage", alert)])


def _post(url: str, body: bytes, timeout_s: float) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        raise WebhookFailed(f"{url} answered {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise WebhookFailed(f"{url}: {getattr(exc, 'reason', exc)}") from None


ACTIONS: dict[str, Callable[[ToolRequest, dict, Stores], Awaitable[Outcome]]] = {
    "streams.tools.actions:open_ticket": open_ticket,
    "streams.tools.actions:update_ticket": update_ticket,
    "streams.tools.actions:close_ticket": close_ticket,
    "streams.tools.actions:notify": notify,
}


async def run(tool: Tool, request: ToolRequest, arguments: dict, stores: Stores) -> Outcome:
    """Run an action. A store outage waits (the actions that write stores are
    idempotent); a refusal (an unknown ticket) is a FAILED outcome."""
    action = ACTIONS.get(tool.entrypoint)
    if action is None:
        return Outcome("FAILED", error=f"{tool.name}: no action {tool.entrypoint!r}")
    started = time.monotonic()
    try:
        outcome = await retrying(lambda: action(request, arguments, stores), Retry(),
                                 (Unavailable,), "tools.action_retry", tool=tool.name)
    except (NotFound, Invalid) as exc:
        outcome = Outcome("FAILED", error=str(exc))
    return replace(outcome, duration_ms=int((time.monotonic() - started) * 1000))
