"""The gRPC gateway as a client meets it: a real `agora gateway serve` process on the
local stack, called over loopback with bearer tokens."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import metric, run_agora
from gateway import auth, tls
from gateway.client import Client
from gateway.registry import Registry
from gateway.sessions import Grant, TokenStore
from ops.core.kafka import ensure_topics
from ops.core.net import free_port
from ops.devstack.process import start_agora, stop, wait_until
from ops.store import migrate
from schemas.agora.v1 import auth_pb2, chat_pb2, chat_pb2_grpc, tools_pb2
from schemas.topics import ALL

pytestmark = pytest.mark.stack
RATE_PER_S, BURST = 20, 150
# The module's gateway: RS256 keys and a TLS certificate of its own.
PKI = Path(tempfile.mkdtemp(prefix="agora-test-gateway-"))
PEM = tls.local_ca(PKI / "tls")
PRIVATE = {"keys": [auth.new_private_jwk()]}
(PKI / "signing-keys.json").write_text(json.dumps(PRIVATE))
(PKI / "jwks.json").write_text(json.dumps(auth.public_jwks(PRIVATE)))
SIGNER = auth.Signer.from_jwks(PRIVATE)
CREDENTIALS = grpc.ssl_channel_credentials(PEM["ca"].read_bytes())


def connect(address: str, bearer: str) -> Client:
    return Client(address, bearer, CREDENTIALS)


@pytest.fixture(scope="module")
def gateway(settings):
    """The gateway's address; one process for the module, stopped after it."""
    ensure_topics(settings, ALL)
    migrate.postgres(settings)  # History and reply_to read the sink's tables
    port, metrics = free_port(), free_port()
    proc = start_agora(settings.stack_dir, ["gateway", "serve"], "gateway",
                       lambda log: "gateway.ready" in log, timeout_s=60,
                       AGORA_GATEWAY_JWKS=str(PKI / "jwks.json"),
                       AGORA_GATEWAY_SIGNING_KEYS=str(PKI / "signing-keys.json"),
                       AGORA_GATEWAY_TLS_CERT=str(PEM["cert"]),
                       AGORA_GATEWAY_TLS_KEY=str(PEM["key"]), AGORA_GATEWAY_JWT_KEY="",
                       AGORA_GATEWAY_PLAINTEXT="0", AGORA_GATEWAY_PORT=str(port),
                       AGORA_GATEWAY_RATE_PER_S=str(RATE_PER_S),
                       AGORA_GATEWAY_BURST=str(BURST), AGORA_METRICS_PORT=str(metrics))
    try:
        yield f"127.0.0.1:{port}", metrics
    finally:
        stop(proc, grace_s=10)


def token(subject: str, *channels: str, ttl_s: int = 600, now: datetime | None = None,
          role: str = "admin") -> str:
    return auth.issue(SIGNER, subject, [f"{c}:{role}" for c in channels], ttl_s, now=now)


def new_channel() -> str:
    return f"gw-{uuid.uuid4().hex[:8]}"


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def test_health_and_reflection_need_no_token(gateway):
    address, _ = gateway
    with grpc.secure_channel(address, CREDENTIALS) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "agora.v1.ChatService", "agora.v1.AnalyticsService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
                health_pb2.HealthCheckResponse.SERVING
        [answer] = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in answer.list_services_response.service}
        assert {"agora.v1.ChatService", "agora.v1.AgentService", "agora.v1.VoteService",
                "agora.v1.ToolService", "agora.v1.AnalyticsService",
                "grpc.health.v1.Health"} <= names


def test_refusals_give_the_right_status_and_change_nothing(gateway, settings):
    address, metrics = gateway
    channel, other = new_channel(), new_channel()
    with connect(address, token("human:watcher", channel, other)) as watcher:
        events = watcher.stream(channel)
        first = watcher.post(channel, "before the refusals")
        assert next(events).message.message_id == first.message_id

        # Unauthenticated: no token, a bad signature, an expired token.
        with grpc.secure_channel(address, CREDENTIALS) as bare:
            stub = chat_pb2_grpc.ChatServiceStub(bare)
            code, detail = code_of(lambda: stub.PostMessage(chat_pb2.PostMessageRequest(
                channel_id=channel, text="hi", idempotency_key="k1")))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "missing" in detail
        impostor = auth.Signer.from_jwks({"keys": [auth.new_private_jwk(kid=SIGNER.kid)]})
        forged = auth.issue(impostor, "human:eve", ["*:admin"], 600)
        expired = token("human:late", channel, now=datetime.now(timezone.utc) - timedelta(hours=2))
        for bad, reason in ((forged, "bad signature"), (expired, "expired"),
                            ("not-a-jwt", "malformed")):
            with connect(address, bad) as client:
                code, detail = code_of(lambda: client.post(channel, "hi"))
                assert (code, reason in detail) == (grpc.StatusCode.UNAUTHENTICATED, True), detail

        with connect(address, token("human:alice", channel)) as alice:
            # Outside one's channels.
            code, detail = code_of(lambda: alice.post(other, "hi"))
            assert code == grpc.StatusCode.PERMISSION_DENIED and other in detail
            code, _ = code_of(lambda: next(alice.stream(other)))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            # Malformed input names its field.
            for request, field in (
                    (dict(channel_id=channel, text="   ", idempotency_key="k"), "text"),
                    (dict(channel_id="bad channel!", text="hi", idempotency_key="k"),
                     "channel_id"),
                    (dict(channel_id=channel, text="hi", idempotency_key=""),
                     "idempotency_key"),
                    (dict(channel_id=channel, text="hi", idempotency_key="k",
                          mentions=["no such agent!"]), "mentions[0]"),
                    (dict(channel_id=channel, text="hi", idempotency_key="k",
                          reply_to=str(uuid.uuid4())), "reply_to")):
                code, detail = code_of(lambda: alice.chat.PostMessage(
                    chat_pb2.PostMessageRequest(**request)))
                assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
                assert detail.startswith(field), detail
            # Oversized: refused before any handler runs.
            code, _ = code_of(lambda: alice.post(channel, "x" * 300_000))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            code, detail = code_of(lambda: alice.post(channel, "y" * 16_001))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("text")

        # The rate limit, per caller: a burst past it is refused, others still pass.
        with connect(address, token("human:flood", channel)) as flood:
            refused = 0
            for i in range(BURST + 30):  # blank posts: each one counts, none is posted
                try:
                    flood.post(channel, " ")
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        continue
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
                    assert "retry in" in exc.details()
                    refused += 1
            assert refused >= 20
        last = watcher.post(channel, "after the refusals")
        # Nothing any refused call tried reached the channel.
        assert next(events).message.message_id == last.message_id
        events.cancel()
    assert metric(metrics, "agora_gateway_requests_total", method="PostMessage",
                  code="PERMISSION_DENIED") >= 1


def test_a_retried_post_is_one_message(gateway):
    address, _ = gateway
    channel = new_channel()
    with connect(address, token("human:retry", channel)) as client:
        events = client.stream(channel)
        first = client.post(channel, "only once", idempotency_key="order-42")
        again = client.post(channel, "only once", idempotency_key="order-42")
        assert again.message_id == first.message_id
        code, _ = code_of(lambda: client.post(channel, "something else",
                                              idempotency_key="order-42"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        marker = client.post(channel, "marker")
        got = [next(events).message.message_id for _ in range(2)]
        assert got == [first.message_id, marker.message_id]
        events.cancel()


def test_a_posted_message_is_answered_on_the_stream(gateway, settings, workers):
    address, _ = gateway
    channel = new_channel()
    Registry(settings).create("developer-backend", channel)
    workers("gateway")
    with connect(address, token("human:alice", channel)) as client:
        events = client.stream(channel)
        question = client.post(channel, "The API server returns 502 since the last deploy; "
                                         "which backend logs should I check?",
                               mentions=["developer-backend"])
        seen, decision, reply, chunks = [], None, None, []
        deadline = time.monotonic() + 180
        for event in events:
            seen.append(event)
            kind = event.WhichOneof("event")
            if kind == "relevance" and event.relevance.message_id == question.message_id:
                decision = event.relevance
            if kind == "reply_chunk" and event.reply_chunk.reply_to == question.message_id:
                chunks.append(event.reply_chunk)
            if kind == "message" and event.message.reply_to == question.message_id:
                reply = event.message
                break
            assert time.monotonic() < deadline, "no reply on the stream"
        # Chunks are a live preview, sent without waiting: the last ones may trail the
        # reply on the stream. Whatever was sent before the marker is posted is there
        # by the time the marker is.
        marker = client.post(channel, "marker")
        for event in events:
            if event.WhichOneof("event") == "reply_chunk" and \
                    event.reply_chunk.reply_to == question.message_id:
                chunks.append(event.reply_chunk)
            if event.WhichOneof("event") == "message" and \
                    event.message.message_id == marker.message_id:
                break
        events.cancel()
    assert seen[0].message.message_id == question.message_id
    assert decision is not None and "developer-backend" in decision.selected
    assert reply.author_id == "developer-backend" and reply.text
    assert reply.author_kind == chat_pb2.AUTHOR_KIND_AGENT
    # The reply streamed token by token before it arrived whole.
    assert len(chunks) > 1 and {c.message_id for c in chunks} == {reply.message_id}
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert all(c.agent_id == "developer-backend" and c.text for c in chunks)
    assert "".join(c.text for c in chunks) == reply.text  # no restart: Triton stayed up
    assert int(reply.metadata["first_token_ms"]) > 0


def test_a_resumed_stream_misses_and_repeats_nothing(gateway):
    address, _ = gateway
    channel = new_channel()
    with connect(address, token("human:resume", channel)) as client:
        whole = client.stream(channel)
        interrupted = client.stream(channel)
        posted = [client.post(channel, f"message {i}").message_id for i in range(12)]
        assert [next(whole).message.message_id for _ in posted] == posted
        head = [next(interrupted) for _ in range(5)]
        interrupted.cancel()  # the client goes away after 5 events
        more = [client.post(channel, f"while away {i}").message_id for i in range(4)]
        resumed = client.stream(channel, cursor=head[-1].cursor)
        rest = [next(resumed).message.message_id for _ in range(len(posted) - 5 + len(more))]
        assert [e.message.message_id for e in head] + rest == posted + more
        # From a time: everything posted since then.
        since = client.stream(channel, since=datetime.now(timezone.utc) - timedelta(minutes=5))
        assert [next(since).message.message_id for _ in posted + more] == posted + more
        for stream in (whole, resumed, since):
            stream.cancel()
        code, detail = code_of(lambda: next(client.stream(channel, cursor="c1.garbage")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("cursor")


def test_a_hundred_subscribers_get_the_same_events(gateway):
    address, _ = gateway
    channel = new_channel()
    count, posts = 100, 5
    # One caller each: a caller may hold AGORA_GATEWAY_MAX_STREAMS streams at once.
    bearers = [(("authorization", f"Bearer {token(f'human:crowd-{i}', channel)}"),)
               for i in range(count)]

    async def run() -> list[list[str]]:
        async with grpc.aio.secure_channel(address, CREDENTIALS) as chan:
            stub = chat_pb2_grpc.ChatServiceStub(chan)
            ready = asyncio.Event()
            started = []

            async def subscribe(bearer) -> list[str]:
                call = stub.StreamChannel(chat_pb2.StreamChannelRequest(channel_id=channel),
                                          metadata=bearer)
                await call.initial_metadata()  # subscribed at the gateway
                started.append(call)
                if len(started) == count:
                    ready.set()
                got = []
                async for event in call:
                    got.append(event.message.message_id)
                    if len(got) == posts:
                        call.cancel()
                        return got
                return got

            tasks = [asyncio.create_task(subscribe(bearer)) for bearer in bearers]
            await asyncio.wait_for(ready.wait(), 60)
            sent = []
            for i in range(posts):
                reply = await stub.PostMessage(chat_pb2.PostMessageRequest(
                    channel_id=channel, text=f"to all {i}", idempotency_key=f"all-{i}"),
                    metadata=bearers[0])
                sent.append(reply.message_id)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
            return [sent, *results]

    sent, *received = asyncio.run(run())
    assert len(received) == count
    assert all(got == sent for got in received)


def test_history_pages_through_what_the_sink_stored(gateway, settings):
    address, _ = gateway
    sink = start_agora(settings.stack_dir, ["sink", "postgres", "--batch-wait-s", "0.2"],
                       "sink-gateway", lambda log: "sink.ready" in log, timeout_s=60)
    channel = new_channel()
    try:
        with connect(address, token("human:hist", channel)) as client:
            posted = [client.post(channel, f"history {i}").message_id for i in range(7)]
            pages: list[list[str]] = []

            def read_all() -> bool:
                pages.clear()
                page_token = ""
                while True:
                    page = client.chat.History(chat_pb2.HistoryRequest(
                        channel_id=channel, page_size=3, page_token=page_token))
                    pages.append([m.message_id for m in page.messages])
                    page_token = page.next_page_token
                    if not page_token:
                        return sum(len(p) for p in pages) == len(posted)

            wait_until(read_all, timeout_s=60, what="the sink to store the posts", interval_s=0.5)
            assert [len(p) for p in pages] == [3, 3, 1]
            assert [i for p in pages for i in p] == list(reversed(posted))  # newest first
            # A reply continues its parent's thread, found in Postgres.
            reply = client.post(channel, "a reply", reply_to=posted[0])
            assert (reply.thread_id, reply.thread_depth) == (posted[0], 1)
            code, detail = code_of(lambda: client.chat.History(chat_pb2.HistoryRequest(
                channel_id=channel, page_token="%%%")))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("page_token")
    finally:
        stop(sink, grace_s=10)


def test_the_other_services_answer_through_the_gateway(gateway, settings):
    address, _ = gateway
    channel = new_channel()
    with connect(address, token("human:ops", channel)) as client:
        tools = client.tools.ListTools(tools_pb2.ListToolsRequest()).tools
        assert {"calculator", "shell"} <= {t.name for t in tools}


def test_the_cli_posts_and_tails_through_the_stacks_gateway(settings):
    """`agora token issue`, `agora post` and `agora tail` against the gateway that
    `agora stack up` started (its address and key come from the stack's state)."""
    channel = new_channel()
    migrate.postgres(settings)  # refresh tokens live in Postgres
    issued = run_agora(settings.stack_dir, "token", "issue", "human:cli", "-c",
                       f"{channel}:admin", "--refresh")
    assert issued.returncode == 0, issued.stderr
    _, refresh = issued.stdout.split()
    # The refresh token gets the next pair from the stack's gateway (and is spent).
    renewed = run_agora(settings.stack_dir, "token", "refresh", refresh)
    assert renewed.returncode == 0, renewed.stderr
    bearer, next_refresh = renewed.stdout.split()
    assert next_refresh != refresh
    spent = run_agora(settings.stack_dir, "token", "refresh", refresh)
    assert spent.returncode == 2 and spent.stderr.startswith("UNAUTHENTICATED")
    tail = subprocess.Popen(
        [str(Path(sys.executable).parent / "agora"), "tail", channel, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("AGORA_")},
             "AGORA_STACK_DIR": str(settings.stack_dir), "AGORA_GATEWAY_TOKEN": bearer})
    try:
        while not tail.stderr.readline().startswith("following"):  # subscribed
            assert tail.poll() is None, tail.stderr.read()
        posted = run_agora(settings.stack_dir, "post", channel, "hello from the CLI",
                           AGORA_GATEWAY_TOKEN=bearer)
        assert posted.returncode == 0, posted.stderr
        event = json.loads(tail.stdout.readline())
        assert event["message"]["messageId"] == posted.stdout.strip()
        assert event["message"]["authorId"] == "human:cli" and event["cursor"]
        denied = run_agora(settings.stack_dir, "post", "elsewhere", "hi",
                           AGORA_GATEWAY_TOKEN=bearer)
        assert denied.returncode == 2 and denied.stderr.startswith("PERMISSION_DENIED")

        # With a token, `agora agents` and `agora vote` go through the gateway too.
        def cli(*args: str) -> str:
            done = run_agora(settings.stack_dir, *args, AGORA_GATEWAY_TOKEN=bearer)
            assert done.returncode == 0, done.stderr
            return done.stdout
        agent = f"cli-analyst-{channel}"
        assert cli("agents", "create", "-t", "analyst-data", "-c", channel, "--id", agent
                   ).startswith(f"{agent} saved")
        assert f"{agent} is PAUSED" in cli("agents", "pause", agent, "--reason", "cli")
        listed = cli("agents", "list")
        assert agent in listed and "developer-backend" not in listed  # only its channels
        vote_id = cli("vote", "start", "Ship it?", "-c", channel, "--voter", "human:cli").strip()
        ballot_id = cli("vote", "cast", vote_id, "yes", "-c", channel).strip()
        kinds = []
        while len(kinds) < 2:  # the vote and the ballot, on the same stream
            event = json.loads(tail.stdout.readline())
            kinds.append(next(iter(event.get("voteUpdate", {"other": 0}))))
        assert kinds == ["opened", "ballotCast"], kinds
        assert ballot_id
        outside = run_agora(settings.stack_dir, "agents", "pause", "developer-backend",
                            AGORA_GATEWAY_TOKEN=bearer)
        assert outside.returncode == 2 and outside.stderr.startswith(
            ("PERMISSION_DENIED", "NOT_FOUND")), outside.stderr
    finally:
        os.killpg(tail.pid, signal.SIGTERM)
        tail.wait(10)


# --- roles, tokens and transport -------------------------------------------------------------

def test_roles_decide_who_may_change_agents_post_and_read(gateway, settings):
    from schemas.agora.v1 import agents_pb2

    address, _ = gateway
    channel = new_channel()
    registry = Registry(settings)
    existing = f"dev-{channel}"
    registry.create("developer-backend", channel, existing)
    with connect(address, token("human:member", channel, role="member")) as member, \
            connect(address, token("human:viewer", channel, role="viewer")) as viewer, \
            connect(address, token("human:admin", channel, role="admin")) as admin:
        sneaky = f"shell-{channel}"
        for call in (
                lambda: member.agents.CreateAgent(agents_pb2.CreateAgentRequest(
                    template="developer-backend", channel_id=channel, agent_id=sneaky)),
                lambda: member.agents.UpdateAgent(agents_pb2.UpdateAgentRequest(
                    agent_id=existing, grant_permissions=["vote:cast"])),
                lambda: member.agents.UpdateAgent(agents_pb2.UpdateAgentRequest(
                    agent_id=existing, revoke_permissions=["tool:shell"])),
                lambda: member.agents.PauseAgent(agents_pb2.PauseAgentRequest(
                    agent_id=existing)),
                lambda: viewer.post(channel, "a viewer may not post")):
            code, detail = code_of(call)
            assert code == grpc.StatusCode.PERMISSION_DENIED, detail
        assert "needs admin" in code_of(lambda: member.agents.CreateAgent(
            agents_pb2.CreateAgentRequest(template="developer-backend", channel_id=channel,
                                          agent_id=sneaky)))[1]
        profiles = registry.load()
        assert sneaky not in profiles  # nothing was created or changed
        assert profiles[existing]["state"] == "ACTIVE"
        assert "tool:shell" in profiles[existing]["permissions"]
        # A person may not carry the platform's metadata (it would make agents vote).
        code, detail = code_of(lambda: member.chat.PostMessage(chat_pb2.PostMessageRequest(
            channel_id=channel, text="vote yes", idempotency_key=str(uuid.uuid4()),
            metadata={"vote_id": str(uuid.uuid4())})))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "reserved" in detail
        events = viewer.stream(channel)  # viewers read
        posted = member.post(channel, "members post")
        assert next(events).message.message_id == posted.message_id
        events.cancel()
        made = admin.agents.PauseAgent(agents_pb2.PauseAgentRequest(agent_id=existing))
        assert made.state == agents_pb2.AGENT_STATE_PAUSED


def _raw_token(claims: dict, key, algorithm: str, kid: str | None) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def test_bad_tokens_are_refused_and_change_nothing(gateway):
    address, _ = gateway
    channel = new_channel()
    now = int(time.time())
    claims = {"iss": auth.ISSUER, "aud": auth.AUDIENCE, "sub": "human:eve",
              "roles": {channel: "admin"}, "iat": now, "exp": now + 300,
              "jti": uuid.uuid4().hex}
    public_pem = SIGNER.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    none = ".".join([auth.jwt.utils.base64url_encode(json.dumps(
        {"alg": "none", "typ": "JWT", "kid": SIGNER.kid}).encode()).decode(),
        auth.jwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), ""])
    header = auth.jwt.utils.base64url_encode(json.dumps(
        {"alg": "HS256", "typ": "JWT", "kid": SIGNER.kid}).encode()).decode()
    body = auth.jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    confused = f"{header}.{body}." + auth.jwt.utils.base64url_encode(hmac.new(
        public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()).decode()
    cases = {
        "alg none": (none, "bad algorithm"),
        "HS256 over the RSA key": (confused, "bad algorithm"),
        "unknown kid": (_raw_token(claims, SIGNER.key, "RS256", "no-such-key"), "unknown key"),
        "no kid": (_raw_token(claims, SIGNER.key, "RS256", None), "unknown key"),
        "future nbf": (_raw_token({**claims, "nbf": now + 3600}, SIGNER.key, "RS256",
                                  SIGNER.kid), "not yet valid"),
        "future iat": (_raw_token({**claims, "iat": now + 3600, "exp": now + 3700},
                                  SIGNER.key, "RS256", SIGNER.kid), "not yet valid"),
        "100-year token": (_raw_token({**claims, "exp": now + 100 * 365 * 86400},
                                      SIGNER.key, "RS256", SIGNER.kid), "lifetime too long"),
    }
    with connect(address, token("human:watcher", channel)) as watcher:
        events = watcher.stream(channel)
        first = watcher.post(channel, "before the bad tokens")
        assert next(events).message.message_id == first.message_id
        for name, (bad, reason) in cases.items():
            with connect(address, bad) as client:
                code, detail = code_of(lambda: client.post(channel, f"as eve: {name}"))
                assert code == grpc.StatusCode.UNAUTHENTICATED and reason in detail, (name, detail)
        last = watcher.post(channel, "after the bad tokens")
        assert next(events).message.message_id == last.message_id  # nothing in between


def test_a_revoked_token_and_a_reused_refresh_token_are_refused(gateway, settings):
    address, _ = gateway
    channel = new_channel()
    store = TokenStore(settings.postgres_dsn)
    first, _ = store.new_refresh(Grant("human:ren", auth.parse_roles([channel]), False), 3600)
    with connect(address, "") as anonymous:
        pair = anonymous.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=first))
    with connect(address, pair.access_token) as ren:
        assert ren.post(channel, "refreshed").author_id == "human:ren"
        # The spent token again: a leaked copy. The whole family goes.
        code, detail = code_of(lambda: ren.auth.Refresh(
            auth_pb2.RefreshRequest(refresh_token=first)))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "already used" in detail
        code, detail = code_of(lambda: ren.auth.Refresh(
            auth_pb2.RefreshRequest(refresh_token=pair.refresh_token)))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in detail
        # Revoking the access token (its jti) refuses it at once.
        revoked = ren.auth.Revoke(auth_pb2.RevokeRequest(reason="laptop lost"))
        code, detail = code_of(lambda: ren.post(channel, "after revocation"))
        assert code == grpc.StatusCode.UNAUTHENTICATED and revoked.jti in detail


def test_a_plaintext_client_cannot_talk_to_the_tls_gateway(gateway):
    address, _ = gateway
    with Client(address, token("human:plain", new_channel()), None) as plain:
        code, _ = code_of(lambda: plain.post("general", "in the clear"))
        assert code == grpc.StatusCode.UNAVAILABLE


def test_a_caller_holds_a_bounded_number_of_streams(gateway, settings):
    address, _ = gateway
    channel = new_channel()
    with connect(address, token("human:hoarder", channel)) as hoarder:
        held = [hoarder.stream(channel) for _ in range(settings.gateway_max_streams)]
        for stream in held:
            stream.initial_metadata()
        code, detail = code_of(lambda: next(hoarder.stream(channel)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "streams open" in detail
        held[0].cancel()
        time.sleep(0.5)
        again = hoarder.stream(channel)
        again.initial_metadata()  # one closed, one more may open
        again.cancel()
        for stream in held[1:]:
            stream.cancel()


def test_key_rotation_keeps_old_tokens_until_their_key_is_removed(gateway):
    address, _ = gateway
    channel = new_channel()
    old = token("human:old", channel)
    newer = auth.new_private_jwk("ES256")
    rotated = {"keys": [*PRIVATE["keys"], newer]}
    (PKI / "jwks.json").write_text(json.dumps(auth.public_jwks(rotated)))
    fresh = auth.issue(auth.Signer.from_jwks(rotated), "human:new", [channel], 300)
    try:
        _rotate_and_remove(address, channel, old, fresh, newer)
    finally:  # the module's key verifies again for the tests after this one
        (PKI / "jwks.json").write_text(json.dumps(auth.public_jwks(PRIVATE)))


def _rotate_and_remove(address: str, channel: str, old: str, fresh: str, newer: dict) -> None:
    with connect(address, old) as by_old, connect(address, fresh) as by_new:
        wait_until(lambda: _accepted(by_new, channel), timeout_s=30, interval_s=1.0,
                   what="the new key accepted")
        assert by_old.post(channel, "old key, still valid").author_id == "human:old"
        (PKI / "jwks.json").write_text(json.dumps(auth.public_jwks({"keys": [newer]})))
        wait_until(lambda: not _accepted(by_old, channel), timeout_s=30,
                   interval_s=1.0, what="the removed key refused")
        code, detail = code_of(lambda: by_old.post(channel, "old key, removed"))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "unknown key" in detail
        assert by_new.post(channel, "new key").author_id == "human:new"


def _accepted(client: Client, channel: str) -> bool:
    try:
        client.tools.ListTools(tools_pb2.ListToolsRequest())
        return True
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
        return False


def test_a_peer_that_keeps_failing_authentication_is_refused(gateway, settings):
    """Last in the module: the loopback peer stays limited for a while."""
    address, _ = gateway
    codes = []
    with connect(address, "not-a-jwt") as guesser:
        for _ in range(settings.gateway_auth_failures_per_min + 5):
            codes.append(code_of(lambda: guesser.post("general", "guess"))[0])
    assert grpc.StatusCode.UNAUTHENTICATED in codes  # refused for its token first, then
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED  # without a look at it


def test_client_certificates_are_required_when_a_client_ca_is_set(settings, tmp_path):
    """Mutual TLS: a second gateway that requires certificates signed by a client CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "clients")])
    ca = tls._certificate("clients", ca_key.public_key(), ca_name, ca_key, 1, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = tls._certificate("human:mtls", key.public_key(), ca_name, ca_key, 1, ca=False,
                            client=True)
    (tmp_path / "clients.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "me.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "me-key.pem").write_bytes(tls._pem_key(key))
    port = free_port()
    proc = start_agora(settings.stack_dir, ["gateway", "serve"], "gateway-mtls",
                       lambda log: "gateway.ready" in log, timeout_s=60,
                       AGORA_GATEWAY_JWKS=str(PKI / "jwks.json"),
                       AGORA_GATEWAY_TLS_CERT=str(PEM["cert"]),
                       AGORA_GATEWAY_TLS_KEY=str(PEM["key"]),
                       AGORA_GATEWAY_TLS_CLIENT_CA=str(tmp_path / "clients.pem"),
                       AGORA_GATEWAY_JWT_KEY="", AGORA_GATEWAY_PORT=str(port))
    address, bearer = f"127.0.0.1:{port}", token("human:mtls", new_channel())
    try:
        with Client(address, bearer, CREDENTIALS) as anonymous:
            code, _ = code_of(lambda: anonymous.tools.ListTools(tools_pb2.ListToolsRequest()))
            assert code == grpc.StatusCode.UNAVAILABLE  # the handshake fails
        with_cert = grpc.ssl_channel_credentials(
            PEM["ca"].read_bytes(), (tmp_path / "me-key.pem").read_bytes(),
            (tmp_path / "me.pem").read_bytes())
        with Client(address, bearer, with_cert) as known:
            assert known.tools.ListTools(tools_pb2.ListToolsRequest()).tools
    finally:
        stop(proc, grace_s=10)
