"""The seeds' scenario end to end on the real stack, through the gateway: "@nox Serveur
down" is posted, the incident detected, NOX opens its ticket and pages on call; the
worker is SIGKILLed while the page is on the wire and restarted, and still one ticket
and one page exist; then people acknowledge (the CLI) and resolve it, and its timeline
tells the story. A module of its own: no other worker may take the channel's work."""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import psycopg
import pytest
from test_incident_actions import Receiver
from test_knowledge import client

from conftest import run_agora
from gateway import auth
from gateway.registry import Registry
from gateway.server import signer
from ops.core.kafka import ensure_topics
from ops.devstack.process import start_worker, stop
from ops.store import migrate
from ops.store.oncall import OncallStore
from schemas.agora.v1 import incidents_pb2
from schemas.ids import derived_id
from schemas.topics import ALL, INCIDENTS, TOOL_RESULTS
from support.accounting import start_sink
from support.kafka import start_at_ends

pytestmark = pytest.mark.stack


def wait_for(check, timeout_s: float = 60, what: str = "it"):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s} s")
        time.sleep(0.3)
    return found


def test_serveur_down_from_detection_to_resolution(settings, reader):
    ensure_topics(settings, ALL)
    migrate.postgres(settings)
    room = f"jamono-{uuid.uuid4().hex[:6]}"
    nox = f"nox-{room}"
    Registry(settings).create("devops-oncall", room, nox)
    rota = OncallStore(settings.postgres_dsn)
    rota.add(room, "human:maya", f"{room}-pager", datetime.now(timezone.utc) - timedelta(hours=1))
    rota.close()
    group = f"agora-incident-{uuid.uuid4().hex[:6]}"
    start_at_ends(settings, group, [t.name for t in ALL])
    receiver = Receiver()
    receiver.mode = "hold"
    env = {"AGORA_APP_ID": group, "AGORA_NOTIFY_WEBHOOK_URL": receiver.url,
           "AGORA_NOTIFY_TIMEOUT_S": "30", "AGORA_NOTIFY_ATTEMPTS": "1"}
    incidents, results = reader(INCIDENTS.name), reader(TOOL_RESULTS.name)
    sink = start_sink(settings, f"incident-{room}")
    worker = start_worker(settings, f"incident-{room}", **env)
    maya = client(settings, "human:maya", f"{room}:member")
    try:
        message = maya.post(room, f"@{nox} Serveur down", mentions=[nox])
        [incident] = incidents.wait(lambda n, r: r.get("message_id") == message.message_id)
        assert incident["opened"] and incident["severity"] == "SEV1"
        # NOX's page is on the wire: the worker dies before the webhook answers.
        assert receiver.arrived.wait(90), "the webhook was never called"
        os.killpg(worker.pgid, signal.SIGKILL)
        receiver.released.set()
        worker = start_worker(settings, f"incident-{room}-again", **env)
        asked = {tool: derived_id(incident["incident_id"], "first-response", tool)
                 for tool in ("ticket.create", "notify")}
        # The ticket's stored result may come twice (published before the kill, and
        # again for the replayed request): wait for a result of each tool.
        def each_tool() -> dict | None:
            results.poll(0.5)
            by_tool = {r["tool"]: r for _, r in results.records
                       if r["request_id"] in asked.values()}
            return by_tool if len(by_tool) == 2 else None

        found = wait_for(each_tool, timeout_s=120, what="result of each first-response tool")
        # The ticket was opened once; the interrupted page is failed, not sent again.
        assert found["ticket.create"]["status"] == "OK", found["ticket.create"]
        assert found["notify"]["status"] == "FAILED" and "interrupted" in \
            found["notify"]["error"], found["notify"]
        time.sleep(2)
        assert len([p for p in receiver.posts
                    if p.get("incident_id") == incident["incident_id"]]) == 1
        with psycopg.connect(settings.postgres_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM tickets WHERE incident_id = %s",
                                (incident["incident_id"],)).fetchone()[0] == 1

        # People take it from there, through the gateway.
        listed = wait_for(lambda: maya.incidents.ListIncidents(
            incidents_pb2.ListIncidentsRequest(channel_id=room)).incidents, what="incident")
        assert [i.incident_id for i in listed] == [incident["incident_id"]]
        assert listed[0].ticket.startswith("INC-")
        token = auth.issue(signer(settings), "human:lea", [f"{room}:member"], 600)
        acked = run_agora(settings.stack_dir, "incident", "ack", incident["incident_id"],
                          AGORA_GATEWAY_TOKEN=token)
        assert acked.returncode == 0, acked.stderr
        assert "ACKNOWLEDGED" in acked.stdout and listed[0].ticket in acked.stdout
        resolved = maya.incidents.Resolve(incidents_pb2.ChangeIncidentRequest(
            incident_id=incident["incident_id"], note="pool size raised"))
        assert resolved.acknowledged_by == "human:lea" and resolved.resolved_by == "human:maya"
        assert resolved.time_to_resolve.ToTimedelta() > timedelta(0)
        with pytest.raises(grpc.RpcError) as again:
            maya.incidents.Resolve(incidents_pb2.ChangeIncidentRequest(
                incident_id=incident["incident_id"]))
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        shown = run_agora(settings.stack_dir, "incident", "show", incident["incident_id"],
                          AGORA_GATEWAY_TOKEN=token)
        assert shown.returncode == 0, shown.stderr
        detail = maya.incidents.GetIncident(incidents_pb2.GetIncidentRequest(
            incident_id=incident["incident_id"]))
        kinds = [e.kind for e in detail.timeline]
        for kind in ("opened", "decision", "action", "ticket", "acknowledged", "resolved"):
            assert kind in kinds, (kind, shown.stdout)
        assert kinds.index("opened") < kinds.index("acknowledged") < kinds.index("resolved")
        assert any("notify FAILED" in e.summary for e in detail.timeline), shown.stdout
        with psycopg.connect(settings.postgres_dsn) as conn:
            assert conn.execute("SELECT status FROM tickets WHERE incident_id = %s",
                                (incident["incident_id"],)).fetchone() == ("resolved",)
    finally:
        maya.close()
        stop(worker, grace_s=15)
        stop(sink)
        receiver.close()
