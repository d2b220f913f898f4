"""IncidentService: the incidents the workers detect, and what people do about them.

Reads come from the Postgres state the sink keeps (``ops.store.incidents``). An
acknowledgement or resolution changes that state first, conditionally on what the
caller's request saw, then publishes ``IncidentChanged`` on ``agora.incidents``; if
publishing fails the row is put back and the caller told to retry. The change's event
id derives from the incident and the change, so a retry after an unclear answer
cannot record it twice. StreamIncidents follows the channel through the process's
``Tail``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from google.protobuf.duration_pb2 import Duration
from psycopg_pool import AsyncConnectionPool

from gateway import cursor as cursors
from gateway import validation
from gateway.auth import ALL_CHANNELS, Role
from gateway.guard import caller, require_channel
from gateway.publish import send
from gateway.tail import Tail
from gateway.votes import postgres_errors
from ops.core.errors import Conflict, NotFound, Unavailable
from ops.core.kafka import AsyncProducer
from ops.store import incidents as store
from schemas import codec
from schemas.agora.v1 import incidents_pb2, incidents_pb2_grpc
from schemas.codec import epoch_ms, from_epoch_ms
from schemas.convert import timestamp
from schemas.ids import derived_id
from schemas.topics import INCIDENTS

MAX_NOTE = 2000
_SEVERITY = {"SEV1": incidents_pb2.INCIDENT_SEVERITY_SEV1,
             "SEV2": incidents_pb2.INCIDENT_SEVERITY_SEV2,
             "SEV3": incidents_pb2.INCIDENT_SEVERITY_SEV3}
_UNSPECIFIED = incidents_pb2.INCIDENT_SEVERITY_UNSPECIFIED
_STATUS = {"open": incidents_pb2.INCIDENT_STATUS_OPEN,
           "acknowledged": incidents_pb2.INCIDENT_STATUS_ACKNOWLEDGED,
           "resolved": incidents_pb2.INCIDENT_STATUS_RESOLVED}


def _since(start: datetime, end: datetime | None) -> Duration | None:
    if end is None:
        return None
    duration = Duration()
    duration.FromTimedelta(end - start)
    return duration


def incident(row: dict) -> incidents_pb2.Incident:
    optional = {name: timestamp(row[name]) for name in ("acknowledged_at", "resolved_at")
                if row[name] is not None}
    for name, end in (("time_to_acknowledge", row["acknowledged_at"]),
                      ("time_to_resolve", row["resolved_at"])):
        if (duration := _since(row["opened_at"], end)) is not None:
            optional[name] = duration
    return incidents_pb2.Incident(
        incident_id=row["incident_id"], channel_id=row["channel_id"], title=row["title"],
        severity=_SEVERITY.get(row["severity"], _UNSPECIFIED), service=row["service"] or "",
        status=_STATUS[row["status"]], opened_by=row["opened_by"],
        opened_message_id=row["opened_message_id"], opened_at=timestamp(row["opened_at"]),
        messages=row["messages"], acknowledged_by=row["acknowledged_by"] or "",
        resolved_by=row["resolved_by"] or "", resolution=row["resolution"] or "",
        ticket=f"INC-{row['ticket']}" if row["ticket"] is not None else "", **optional)


def update(name: str, record: dict) -> incidents_pb2.IncidentUpdate | None:
    """The stream's form of an agora.incidents event; None for any other event."""
    if name == "IncidentDetected":
        return incidents_pb2.IncidentUpdate(
            kind="opened" if record["opened"] else "joined", incident_id=record["incident_id"],
            channel_id=record["channel_id"],
            severity=_SEVERITY.get(record["severity"], _UNSPECIFIED),
            service=record.get("service") or "", actor_id=record["author_id"],
            text=record["text"], message_id=record["message_id"],
            time=timestamp(record["message_at"]))
    if name == "IncidentChanged":
        return incidents_pb2.IncidentUpdate(
            kind=record["change"].lower(), incident_id=record["incident_id"],
            channel_id=record["channel_id"],
            severity=_SEVERITY.get(record["severity"], _UNSPECIFIED),
            actor_id=record["actor_id"], text=record.get("note") or "",
            time=timestamp(record["changed_at"]))
    return None


def _now() -> datetime:
    """Now, to the millisecond as the event carries it, so that row and event agree."""
    return from_epoch_ms(epoch_ms(datetime.now(timezone.utc)))


class IncidentService(incidents_pb2_grpc.IncidentServiceServicer):
    def __init__(self, producer: AsyncProducer, tail: Tail, pool: AsyncConnectionPool):
        self.producer = producer
        self.tail = tail
        self.pool = pool

    async def _incident(self, conn, incident_id: str) -> dict:
        row = await store.get(conn, validation.identifier(incident_id, "incident_id"))
        if row is None:
            raise NotFound(f"no incident {incident_id!r} (one detected a moment ago may not "
                           "be stored yet)")
        return row

    async def ListIncidents(self, request, context):
        who = caller()
        if request.channel_id:
            channels = [validation.channel_id(request.channel_id)]
            require_channel(channels[0])
        else:  # every channel the caller sees
            channels = None if who.admin or ALL_CHANNELS in who.roles else sorted(who.roles)
        size = validation.page_size(request.page_size)
        after = None
        if request.page_token:
            try:
                ms, incident_id = cursors.from_b64json(request.page_token)
                after = (from_epoch_ms(int(ms)), str(incident_id))
            except (ValueError, TypeError):
                raise validation.InvalidField("page_token",
                                              "not a token from a previous page") from None
        async with postgres_errors(), self.pool.connection() as conn:
            rows = await store.page(conn, channels, request.include_resolved, after, size + 1)
        page, more = rows[:size], len(rows) > size
        token = cursors.b64json([epoch_ms(page[-1]["opened_at"]), page[-1]["incident_id"]]) \
            if more else ""
        return incidents_pb2.ListIncidentsResponse(incidents=[incident(r) for r in page],
                                                   next_page_token=token)

    async def GetIncident(self, request, context):
        async with postgres_errors(), self.pool.connection() as conn:
            row = await self._incident(conn, request.incident_id)
            require_channel(row["channel_id"])
            entries = await store.timeline(conn, row["incident_id"])
        return incidents_pb2.IncidentDetail(incident=incident(row), timeline=[
            incidents_pb2.TimelineEntry(time=timestamp(e["time"]), kind=e["kind"],
                                        actor_id=e["actor_id"], summary=e["summary"],
                                        ref_id=e["ref_id"]) for e in entries])

    async def Acknowledge(self, request, context):
        return await self._change(request, resolved=False)

    async def Resolve(self, request, context):
        return await self._change(request, resolved=True)

    async def _change(self, request, resolved: bool) -> incidents_pb2.Incident:
        note = request.note.strip()
        if len(note) > MAX_NOTE:
            raise validation.InvalidField("note", f"at most {MAX_NOTE} characters")
        actor, change = caller().subject, "RESOLVED" if resolved else "ACKNOWLEDGED"
        async with postgres_errors(), self.pool.connection() as conn:
            seen = await self._incident(conn, request.incident_id)
            require_channel(seen["channel_id"], Role.MEMBER)
            _refuse(seen, resolved)
            at = _now()
            changed = await store.change(conn, seen, resolved, actor, at, note or None)
            if changed is None:  # someone else changed it meanwhile
                _refuse(await self._incident(conn, request.incident_id), resolved)
                raise Conflict(f"incident {seen['incident_id']} changed meanwhile: try again")
            record = {"event_id": derived_id(seen["incident_id"], change),
                      "incident_id": seen["incident_id"], "channel_id": seen["channel_id"],
                      "change": change, "actor_id": actor, "note": note or None,
                      "severity": seen["severity"], "opened_at": seen["opened_at"],
                      "changed_at": at}
            try:
                await send(self.producer, INCIDENTS.name, seen["channel_id"],
                           codec.encode("IncidentChanged", record))
            except Unavailable:
                await store.undo(conn, seen, changed)
                raise
            if resolved:
                await store.resolve_ticket(conn, seen["incident_id"], note or None, at)
        return incident(changed)

    async def StreamIncidents(self, request, context):
        channel = validation.channel_id(request.channel_id)
        require_channel(channel)
        async for item, _ in self.tail.follow(
                channel, None, lambda: context.send_initial_metadata(())):
            if (found := update(item.name, item.record)) is not None:
                yield found


def _refuse(row: dict, resolved: bool) -> None:
    """Conflict when the incident is past the change asked for."""
    if row["status"] == "resolved":
        raise Conflict(f"incident {row['incident_id']} was resolved by {row['resolved_by']} "
                       f"at {row['resolved_at']:%Y-%m-%d %H:%M:%S} UTC")
    if row["status"] == "acknowledged" and not resolved:
        raise Conflict(f"incident {row['incident_id']} was acknowledged by "
                       f"{row['acknowledged_by']} at {row['acknowledged_at']:%Y-%m-%d %H:%M:%S} "
                       "UTC")
