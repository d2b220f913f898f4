"""The gateway's IncidentService, called as the guard calls it, on a migrated Postgres
schema of its own and the real Kafka: list, timeline, acknowledge and resolve with
their refusals, the published changes (which the sink applies to the same state), a
change put back when it cannot be published, and the live stream."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from test_gateway_services import refused_async, suffix, who

from gateway.guard import _CALLER
from gateway.incidents import IncidentService, update
from gateway.tail import Tail
from ops.core.errors import Conflict, Denied, NotFound, Unavailable
from ops.core.kafka import AsyncProducer, ensure_topics
from ops.store.postgres import execute
from ops.store.postgres_rows import rows
from schemas import codec
from schemas.agora.v1 import incidents_pb2
from schemas.ids import derived_id
from schemas.topics import ALL, INCIDENTS
from support.samples import roundtrip

pytestmark = pytest.mark.stack
NOW = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)


def detected(room: str, incident: str, message: str, opened: bool, text: str, severity: str,
             seconds: float) -> tuple[str, dict]:
    return roundtrip("IncidentDetected", {
        "event_id": derived_id(message, "incident"), "incident_id": incident,
        "opened": opened, "channel_id": room, "message_id": message,
        "author_id": "human:maya", "text": text, "severity": severity, "service": "api",
        "score": 0.9, "evidence": [{"signal": "words", "value": 1.0, "detail": "down"}],
        "message_at": NOW + timedelta(seconds=seconds),
        "detected_at": NOW + timedelta(seconds=seconds + 0.2), "config_version": "test"})


def store(settings, *events: tuple[str, dict]) -> None:
    """As the Postgres sink writes them."""
    with psycopg.connect(settings.postgres_dsn) as conn, conn.transaction():
        execute(conn, [pair for name, record in events for pair in rows(name, record)])


def test_incidents_are_listed_acknowledged_resolved_and_explained(own_postgres, reader):
    own = own_postgres
    ensure_topics(own, ALL)
    room, other = f"inc-{suffix()}", f"inc-{suffix()}"
    first, later, elsewhere = (str(uuid.uuid4()) for _ in range(3))
    opening, joining = str(uuid.uuid4()), str(uuid.uuid4())
    store(own, detected(room, first, opening, True, "API down since the deploy", "SEV2", 0),
          detected(room, first, joining, False, "everything 502s", "SEV1", 30),
          detected(room, later, str(uuid.uuid4()), True, "disk almost full", "SEV3", 60),
          detected(other, elsewhere, str(uuid.uuid4()), True, "login fails", "SEV2", 90))
    with psycopg.connect(own.postgres_dsn) as conn:  # the decision on the opening message
        conn.execute("INSERT INTO relevance_decisions (event_id, message_id, channel_id, "
                     "thread_id, thread_depth, decided_at, selected, config_version) VALUES "
                     "(%s, %s, %s, %s, 0, %s, %s, 'v')",
                     (str(uuid.uuid4()), opening, room, opening, NOW + timedelta(seconds=1),
                      ["nox"]))
        conn.execute("INSERT INTO tickets (request_id, incident_id, channel_id, title, "
                     "severity, opened_by, created_at) VALUES (%s, %s, %s, 'API down', "
                     "'SEV1', 'nox', %s)", (str(uuid.uuid4()), first, room,
                                            NOW + timedelta(seconds=2)))
    maya, lea = who("human:maya", room, role="member"), who("human:lea", room, role="member")
    viewer, stranger = who("human:vi", room, role="viewer"), who("human:eve", other)
    changes = reader(INCIDENTS.name)

    async def main():
        async with AsyncConnectionPool(own.postgres_dsn, min_size=0, max_size=2) as pool:
            producer = AsyncProducer(own)
            service = IncidentService(producer, None, pool)

            async def as_(caller, method, request):
                _CALLER.set(caller)
                return await method(request, None)

            listed = await as_(maya, service.ListIncidents,
                               incidents_pb2.ListIncidentsRequest(page_size=1))
            rest = await as_(maya, service.ListIncidents, incidents_pb2.ListIncidentsRequest(
                page_token=listed.next_page_token))
            ack = await as_(maya, service.Acknowledge,
                            incidents_pb2.ChangeIncidentRequest(incident_id=first))
            refusals = [
                await refused_async(Conflict, service.Acknowledge,
                                    incidents_pb2.ChangeIncidentRequest(incident_id=first), lea),
                await refused_async(Denied, service.Resolve,
                                    incidents_pb2.ChangeIncidentRequest(incident_id=first),
                                    viewer),
                await refused_async(Denied, service.GetIncident,
                                    incidents_pb2.GetIncidentRequest(incident_id=first),
                                    stranger),
                await refused_async(NotFound, service.Resolve,
                                    incidents_pb2.ChangeIncidentRequest(
                                        incident_id=str(uuid.uuid4())), maya)]
            resolved = await as_(lea, service.Resolve, incidents_pb2.ChangeIncidentRequest(
                incident_id=first, note="pool size raised to 50"))
            refusals.append(await refused_async(
                Conflict, service.Resolve, incidents_pb2.ChangeIncidentRequest(
                    incident_id=first), maya))
            # Resolved without an acknowledgement: it counts as acknowledged then.
            direct = await as_(maya, service.Resolve,
                               incidents_pb2.ChangeIncidentRequest(incident_id=later))
            detail = await as_(viewer, service.GetIncident,
                               incidents_pb2.GetIncidentRequest(incident_id=first))
            open_now = await as_(maya, service.ListIncidents,
                                 incidents_pb2.ListIncidentsRequest(channel_id=room))
            everything = await as_(maya, service.ListIncidents, incidents_pb2.ListIncidentsRequest(
                channel_id=room, include_resolved=True))
            await asyncio.to_thread(producer.close)
            return listed, rest, ack, refusals, resolved, direct, detail, open_now, everything

    listed, rest, ack, refusals, resolved, direct, detail, open_now, everything = \
        asyncio.run(main())
    # maya sees her channel only, newest first, a page at a time.
    assert [i.incident_id for i in listed.incidents] == [later] and listed.next_page_token
    assert [i.incident_id for i in rest.incidents] == [first] and not rest.next_page_token
    assert ack.status == incidents_pb2.INCIDENT_STATUS_ACKNOWLEDGED
    assert ack.acknowledged_by == "human:maya" and ack.ticket.startswith("INC-")
    assert ack.severity == incidents_pb2.INCIDENT_SEVERITY_SEV1 and ack.messages == 2
    assert "acknowledged by human:maya" in str(refusals[0])
    assert "resolved by human:lea" in str(refusals[-1])
    assert resolved.status == incidents_pb2.INCIDENT_STATUS_RESOLVED
    assert resolved.resolution == "pool size raised to 50"
    assert resolved.acknowledged_by == "human:maya"  # the first acknowledgement stands
    assert resolved.time_to_resolve.ToTimedelta() >= resolved.time_to_acknowledge.ToTimedelta()
    assert direct.acknowledged_by == direct.resolved_by == "human:maya"
    assert direct.acknowledged_at == direct.resolved_at
    assert not open_now.incidents and len(everything.incidents) == 2
    # The timeline, from one call.
    kinds = [e.kind for e in detail.timeline]
    assert kinds == ["opened", "decision", "ticket", "joined", "acknowledged", "resolved"]
    assert detail.timeline[1].summary == "chose nox"
    assert detail.timeline[-1].summary == "pool size raised to 50"
    assert [e.time.ToDatetime() for e in detail.timeline] == sorted(
        e.time.ToDatetime() for e in detail.timeline)
    with psycopg.connect(own.postgres_dsn) as conn:
        assert conn.execute("SELECT status, resolution FROM tickets WHERE incident_id = %s",
                            (first,)).fetchone() == ("resolved", "pool size raised to 50")
        state = conn.execute("SELECT * FROM incidents ORDER BY incident_id").fetchall()
    # Three changes published, once each, which the sink applies without changing a thing.
    published = changes.wait(lambda name, r: name == "IncidentChanged"
                             and r["incident_id"] in (first, later), count=3)
    assert sorted((r["incident_id"] == first, r["change"]) for r in published) == [
        (False, "RESOLVED"), (True, "ACKNOWLEDGED"), (True, "RESOLVED")]
    store(own, *[("IncidentChanged", r) for r in published])
    with psycopg.connect(own.postgres_dsn) as conn:
        assert conn.execute("SELECT * FROM incidents ORDER BY incident_id").fetchall() == state
        assert conn.execute("SELECT count(*) FROM incident_changes").fetchone()[0] == 3
    assert update("IncidentChanged", published[0]).kind in ("acknowledged", "resolved")


def test_a_change_that_cannot_be_published_is_put_back(own_postgres, monkeypatch):
    own = own_postgres
    room, incident = f"inc-{suffix()}", str(uuid.uuid4())
    store(own, detected(room, incident, str(uuid.uuid4()), True, "site down", "SEV1", 0))
    # A producer on a port nobody listens on: delivery fails after its timeout.
    dead = own.model_copy(update={"broker": "127.0.0.1:9"})
    monkeypatch.setattr(AsyncProducer, "DELIVERY_TIMEOUT_MS", 1500)

    async def main():
        async with AsyncConnectionPool(own.postgres_dsn, min_size=0, max_size=2) as pool:
            producer = AsyncProducer(dead)
            try:
                service = IncidentService(producer, None, pool)
                await refused_async(Unavailable, service.Acknowledge,
                                    incidents_pb2.ChangeIncidentRequest(incident_id=incident),
                                    who("human:maya", room, role="member"))
            finally:
                await asyncio.to_thread(producer.close)

    asyncio.run(main())
    with psycopg.connect(own.postgres_dsn) as conn:
        assert conn.execute("SELECT status, acknowledged_by FROM incidents").fetchone() == (
            "open", None)


def test_stream_incidents_follows_a_channel(settings):
    ensure_topics(settings, ALL)
    room, incident = f"inc-{suffix()}", str(uuid.uuid4())
    tail = Tail(settings)
    tail.start()
    try:
        async def main():
            producer = AsyncProducer(settings)
            service = IncidentService(producer, tail, None)
            _CALLER.set(who("human:maya", room, role="viewer"))
            subscribed = asyncio.Event()

            class Context:
                async def send_initial_metadata(self, _):
                    subscribed.set()

            async def follow():
                seen = []
                async for found in service.StreamIncidents(
                        incidents_pb2.StreamIncidentsRequest(channel_id=room), Context()):
                    seen.append(found)
                    if len(seen) == 2:
                        return seen

            task = asyncio.create_task(follow())
            await subscribed.wait()
            _, opened = detected(room, incident, str(uuid.uuid4()), True, "db down", "SEV1", 0)
            change = roundtrip("IncidentChanged", {
                "event_id": derived_id(incident, "ACKNOWLEDGED"), "incident_id": incident,
                "channel_id": room, "change": "ACKNOWLEDGED", "actor_id": "human:maya",
                "severity": "SEV1", "opened_at": NOW, "changed_at": NOW})[1]
            for name, record in (("IncidentDetected", opened), ("IncidentChanged", change)):
                await producer.send(INCIDENTS.name, room, codec.encode(name, record))
            seen = await asyncio.wait_for(task, 60)
            await asyncio.to_thread(producer.close)
            return seen

        seen = asyncio.run(main())
    finally:
        tail.stop()
    assert [(u.kind, u.severity, u.incident_id) for u in seen] == [
        ("opened", incidents_pb2.INCIDENT_SEVERITY_SEV1, incident),
        ("acknowledged", incidents_pb2.INCIDENT_SEVERITY_SEV1, incident)]
