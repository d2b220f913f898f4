"""The gateway process: the agora.v1 services behind the ``Guard`` interceptor, plus the
standard health and reflection services, on one grpc.aio server.

``serve`` binds ``AGORA_GATEWAY_HOST:AGORA_GATEWAY_PORT`` (port 0: a free one) and
logs ``gateway.ready`` with the address once the tail is reading, so a client that
waits for that line misses no event. SIGTERM and SIGINT drain calls for a few
seconds, then stop.
"""

from __future__ import annotations

import asyncio
import signal

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from psycopg_pool import AsyncConnectionPool

from gateway.agents import AgentService
from gateway.analytics import AnalyticsService
from gateway.auth import KeyRing, Signer, signing_key
from gateway.chat import ChatService
from gateway.guard import Guard
from gateway.incidents import IncidentService
from gateway.knowledge import KnowledgeService
from gateway.ratelimit import RateLimiter
from gateway.sessions import AuthService, RevokedTokens, TokenStore
from gateway.tail import Tail
from gateway.tls import server_credentials
from gateway.tools import ToolService
from gateway.votes import VoteService
from ops.core.config import Settings
from ops.core.kafka import AsyncProducer, ensure_topics
from ops.store import analytics
from schemas.agora.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    analytics_pb2,
    analytics_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    incidents_pb2,
    incidents_pb2_grpc,
    knowledge_pb2,
    knowledge_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
    votes_pb2,
    votes_pb2_grpc,
)
from schemas.topics import ALL
from streams.domain.registry import templates
from streams.domain.tools import catalog

log = structlog.get_logger("agora.gateway")
GRACE_S = 5.0
SERVICES = [pb.DESCRIPTOR.services_by_name[name].full_name for pb, name in (
    (chat_pb2, "ChatService"), (agents_pb2, "AgentService"), (votes_pb2, "VoteService"),
    (tools_pb2, "ToolService"), (analytics_pb2, "AnalyticsService"),
    (auth_pb2, "AuthService"), (knowledge_pb2, "KnowledgeService"),
    (incidents_pb2, "IncidentService"))]
# Authenticated by the refresh token it carries, not by a bearer token.
REFRESH = f"/{auth_pb2.DESCRIPTOR.services_by_name['AuthService'].full_name}/Refresh"


def key_ring(settings: Settings) -> KeyRing:
    """The keys that verify tokens; ValueError when none are configured."""
    secret = settings.gateway_jwt_key.get_secret_value()
    return KeyRing(settings.gateway_jwks, signing_key(secret) if secret else None)


def signer(settings: Settings) -> Signer | None:
    """The key new tokens are signed with, if this process has one."""
    if settings.gateway_signing_keys:
        return Signer.from_file(settings.gateway_signing_keys)
    secret = settings.gateway_jwt_key.get_secret_value()
    return Signer.hs256(secret) if secret else None


async def serve(settings: Settings) -> None:
    keys = key_ring(settings)  # refuses a weak or missing key
    credentials = server_credentials(settings)  # refuses to serve plaintext unless told
    await asyncio.to_thread(ensure_topics, settings, ALL)  # the tail follows every partition
    tail = Tail(settings)
    await asyncio.to_thread(tail.start)
    agents = AgentService(settings)
    await agents.start()  # the registry, read to its end
    producer = AsyncProducer(settings)
    # The templates, tool catalog and analytics queries are files read once (cached):
    # read them now rather than on the event loop during a first call.
    await asyncio.to_thread(lambda: (templates(), catalog.load(), analytics.load()))
    # Postgres serves History and vote lookups; opened lazily, so the gateway starts
    # (and posts) while the database is down. Autocommit: reads only, and no rollback
    # round trip each time a connection goes back to the pool.
    pool = AsyncConnectionPool(settings.postgres_dsn, min_size=0, max_size=4, open=False,
                               kwargs={"connect_timeout": 5, "autocommit": True})
    await pool.open(wait=False)
    store = TokenStore(settings.postgres_dsn)
    revoked = RevokedTokens(store)
    following = asyncio.get_running_loop().create_task(revoked.follow())
    limit, failures = settings.gateway_max_request_bytes, settings.gateway_auth_failures_per_min
    guard = Guard(keys, RateLimiter(settings.gateway_rate_per_s, settings.gateway_burst),
                  max_lifetime_s=settings.gateway_token_max_s, revoked=revoked,
                  failures=RateLimiter(failures / 60, failures),
                  max_streams=settings.gateway_max_streams, open_methods=(REFRESH,))
    server = grpc.aio.server(
        interceptors=[guard],
        options=[("grpc.max_receive_message_length", limit),
                 ("grpc.max_send_message_length", 16 * limit)])
    chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatService(producer, tail, pool), server)
    agents_pb2_grpc.add_AgentServiceServicer_to_server(agents, server)
    votes_pb2_grpc.add_VoteServiceServicer_to_server(VoteService(settings, producer, pool), server)
    tools_pb2_grpc.add_ToolServiceServicer_to_server(ToolService(producer), server)
    analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsService(settings), server)
    incidents_pb2_grpc.add_IncidentServiceServicer_to_server(
        IncidentService(producer, tail, pool), server)
    knowledge = KnowledgeService(settings, producer)
    knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server(knowledge, server)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthService(
        store, revoked, signer(settings), access_ttl_s=settings.gateway_token_ttl_s,
        refresh_ttl_s=settings.gateway_refresh_ttl_s,
        max_lifetime_s=settings.gateway_token_max_s), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        [*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    bind = f"{settings.gateway_host}:{settings.gateway_port}"
    port = server.add_secure_port(bind, credentials) if credentials else \
        server.add_insecure_port(bind)
    await server.start()
    for name in ("", *SERVICES):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gateway.ready", address=f"{settings.gateway_host}:{port}",
             tls=credentials is not None)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await checker.enter_graceful_shutdown()
    await server.stop(GRACE_S)
    await asyncio.to_thread(tail.stop)
    await agents.stop()
    await knowledge.close()
    await asyncio.to_thread(producer.close)  # flushes what is still in flight
    following.cancel()
    await pool.close()
    log.info("gateway.stopped")
