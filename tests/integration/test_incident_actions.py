"""The notify action on the real stack: the on-call rota in Postgres, the alert in the
on-call channel, and a real webhook receiver on 127.0.0.1 (ok, failing, too slow)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from conftest import run_agora
from gateway.registry import Registry
from ops.core.kafka import ensure_topics
from ops.devstack import smoke
from ops.devstack.process import start_worker, stop
from ops.store.ledger import ToolLedger
from ops.store.oncall import OncallStore
from schemas.ids import derived_id
from schemas.topics import (
    ALL,
    CHAT_MESSAGES,
    DEADLETTER,
    INCIDENTS,
    TOOL_REQUESTS,
    TOOL_RESULTS,
)
from streams.domain.tools.records import new_request
from support.kafka import publish_events

pytestmark = pytest.mark.stack
ATTEMPTS = 3


class Receiver:
    """A webhook on 127.0.0.1: records each POST and answers as ``mode`` says."""

    def __init__(self):
        self.posts: list[dict] = []
        # ok | fail (500) | slow (answers after the notify timeout) | hold (answers once
        # released, so that the test can kill the poster meanwhile)
        self.mode = "ok"
        self.arrived, self.released = threading.Event(), threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(json.loads(body))
                receiver.arrived.set()
                if receiver.mode == "slow":
                    time.sleep(2)
                elif receiver.mode == "hold":
                    receiver.released.wait(60)
                self.send_response(500 if receiver.mode == "fail" else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def oncall(settings):
    """NOX on call in a channel whose rota pages two people in an alert channel, and a
    worker whose notify action posts to a receiver of ours."""
    ensure_topics(settings, ALL)
    room = f"prod-{uuid.uuid4().hex[:6]}"
    Registry(settings).create("devops-oncall", room, f"nox-{room}")
    rota = OncallStore(settings.postgres_dsn)
    now = datetime.now(timezone.utc)
    rota.add(room, "human:maya", f"{room}-pager", now - timedelta(hours=1))
    rota.add(room, "human:lea", f"{room}-pager", now - timedelta(hours=1), now + timedelta(hours=8))
    rota.add(room, "human:tom", f"{room}-pager", now - timedelta(days=2), now - timedelta(days=1))
    rota.close()
    receiver = Receiver()
    worker = start_worker(settings, f"notify-{room}", AGORA_NOTIFY_WEBHOOK_URL=receiver.url,
                          AGORA_NOTIFY_TIMEOUT_S="0.5", AGORA_NOTIFY_ATTEMPTS=str(ATTEMPTS))
    yield {"room": room, "nox": f"nox-{room}", "receiver": receiver}
    stop(worker, grace_s=15)
    receiver.close()


def alert(settings, oncall, message: str) -> dict:
    req = new_request(oncall["nox"], oncall["room"], "notify",
                      {"message": message, "severity": "SEV1", "ticket": "INC-7"},
                      "the test needs it")
    publish_events(settings, TOOL_REQUESTS.name, [("ToolRequest", oncall["room"], req)])
    return req


def result_of(reader, req: dict) -> dict:
    [found] = reader.wait(lambda n, r: n == "ToolResult" and r["request_id"] == req["event_id"],
                          timeout_s=60)
    return found


def test_nox_pages_the_people_on_call_and_the_webhook_once(settings, oncall, reader):
    results, chat = reader(TOOL_RESULTS.name), reader(CHAT_MESSAGES.name)
    oncall["receiver"].mode = "ok"
    before = len(oncall["receiver"].posts)
    req = alert(settings, oncall, "API returns 502 for everyone since the deploy")
    result = result_of(results, req)
    assert result["status"] == "OK" and "webhook answered 200" in result["output"]
    assert "human:lea, human:maya" in result["output"]  # human:tom's shift is over
    [page] = chat.wait(lambda n, r: r["channel_id"] == f"{oncall['room']}-pager"
                       and r["metadata"].get("tool_request_id") == req["event_id"])
    assert page["author_kind"] == "SYSTEM" and "@human:maya" in page["text"]
    assert page["metadata"]["severity"] == "SEV1" and page["metadata"]["ticket"] == "INC-7"
    [posted] = oncall["receiver"].posts[before:]
    assert posted["request_id"] == req["event_id"] and posted["oncall"] == ["human:lea",
                                                                          "human:maya"]


@pytest.mark.parametrize("mode, why", [("fail", "answered 500"), ("slow", "timed out")])
def test_a_webhook_that_fails_is_retried_then_dead_lettered(settings, oncall, reader, mode,
                                                           why):
    results, letters = reader(TOOL_RESULTS.name), reader(DEADLETTER.name)
    oncall["receiver"].mode = mode
    before = len(oncall["receiver"].posts)
    req = alert(settings, oncall, f"checkout down ({mode})")
    result = result_of(results, req)
    assert result["status"] == "FAILED" and f"after {ATTEMPTS} attempts" in result["error"]
    assert why in result["error"]
    assert len(oncall["receiver"].posts) - before == ATTEMPTS
    [letter] = letters.wait(lambda n, r: r["stage"] == "tools"
                            and r["source_topic"] == TOOL_REQUESTS.name
                            and req["event_id"].encode() in (r["value"] or b""))
    assert "webhook" in letter["reason"] and letter["error_type"] == "ActionFailed"


def test_an_interrupted_alert_is_never_sent_twice(settings, oncall, reader):
    results = reader(TOOL_RESULTS.name)
    oncall["receiver"].mode = "ok"
    before = len(oncall["receiver"].posts)
    req = new_request(oncall["nox"], oncall["room"], "notify",
                      {"message": "Serveur down", "severity": "SEV1"}, "the test needs it")
    ledger = ToolLedger(settings.postgres_dsn)
    try:  # as a worker killed while posting leaves it
        ledger.claim(req["event_id"], "notify", "worker-gone")
        ledger.running(req["event_id"])
    finally:
        ledger.close()
    publish_events(settings, TOOL_REQUESTS.name, [("ToolRequest", oncall["room"], req)])
    result = result_of(results, req)
    assert result["status"] == "FAILED" and "interrupted" in result["error"]
    time.sleep(1)
    assert len(oncall["receiver"].posts) == before


def test_the_cli_keeps_the_rota(settings):
    room = f"web-{uuid.uuid4().hex[:6]}"
    added = run_agora(settings.stack_dir, "oncall", "add", room, "human:sam",
                      "--from", "2026-01-01T08:00Z", "--until", "2026-01-01T20:00")
    assert added.returncode == 0, added.stderr
    assert f"alerts in #{room}-oncall" in added.stdout
    backwards = run_agora(settings.stack_dir, "oncall", "add", room, "human:sam",
                          "--from", "2026-01-02T08:00Z", "--until", "2026-01-01T20:00Z")
    assert backwards.returncode != 0 and "--until must come after --from" in backwards.stderr
    listed = run_agora(settings.stack_dir, "oncall", "list", room)
    assert listed.returncode == 0 and "human:sam" in listed.stdout
    assert "2026-01-01 08:00 -> 2026-01-01 20:00" in listed.stdout
    rota = OncallStore(settings.postgres_dsn)
    try:
        assert rota.now(room, datetime(2026, 1, 1, 12, tzinfo=timezone.utc)) == \
            (f"{room}-oncall", ["human:sam"])
        assert rota.now(room, datetime(2026, 1, 1, 21, tzinfo=timezone.utc)) == (None, [])
    finally:
        rota.close()


def test_serveur_down_opens_the_incidents_ticket_and_pages_on_call_once(settings, oncall,
                                                                        reader):
    """The seeds' scenario: "@nox Serveur down" -> the incident is detected -> NOX opens
    its ticket and pages the people on call, without waiting for the model."""
    incidents, results = reader(INCIDENTS.name), reader(TOOL_RESULTS.name)
    chat = reader(CHAT_MESSAGES.name)
    oncall["receiver"].mode = "ok"
    before = len(oncall["receiver"].posts)
    message = {**smoke.chat_message(oncall["room"], f"@{oncall['nox']} Serveur down",
                                    author_id="human:maya"), "mentions": [oncall["nox"]]}
    publish_events(settings, CHAT_MESSAGES.name, [("ChatMessage", oncall["room"], message)])
    [incident] = incidents.wait(lambda n, r: r.get("message_id") == message["event_id"])
    assert incident["opened"] and incident["severity"] == "SEV1"
    asked = {derived_id(incident["incident_id"], "first-response", tool)
             for tool in ("ticket.create", "notify")}
    found = results.wait(lambda n, r: r["request_id"] in asked, count=2, timeout_s=90)
    by_tool = {r["tool"]: r for r in found}
    assert {r["agent_id"] for r in found} == {oncall["nox"]}
    assert by_tool["ticket.create"]["status"] == "OK", by_tool["ticket.create"]
    assert by_tool["ticket.create"]["output"].startswith("opened: INC-")
    assert by_tool["notify"]["status"] == "OK", by_tool["notify"]
    with psycopg.connect(settings.postgres_dsn) as conn:
        [(severity, linked)] = conn.execute(
            "SELECT severity, message_ids FROM tickets WHERE incident_id = %s",
            (incident["incident_id"],)).fetchall()
    assert severity == "SEV1" and linked == [message["event_id"]]
    chat.wait(lambda n, r: r["channel_id"] == f"{oncall['room']}-pager"
              and r["metadata"].get("incident_id") == incident["incident_id"])
    [posted] = [p for p in oncall["receiver"].posts[before:]
                if p.get("incident_id") == incident["incident_id"]]
    assert posted["severity"] == "SEV1" and "human:maya" in posted["oncall"]
