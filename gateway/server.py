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
from gateway.agora.v1 import (agents_pb2, agents_pb2_grpc, analytics_pb2, analytics_pb2_grpc,
                              chat_pb2, chat_pb2_grpc, tools_pb2, tools_pb2_grpc, votes_pb2,
                              votes_pb2_grpc)
from gateway.analytics import AnalyticsService
from gateway.auth import signing_key
from gateway.chat import ChatService
from gateway.guard import Guard
from gateway.ratelimit import RateLimiter
from gateway.tail import Tail
from gateway.tools import ToolService
from gateway.votes import VoteService
from ops import analytics
from ops.config import Settings
from ops.kafka import AsyncProducer
from ops.topics import ensure_topics
from streams.registry.profiles import templates
from streams.tools import catalog

log = structlog.get_logger("agora.gateway")
GRACE_S = 5.0
SERVICES = [pb.DESCRIPTOR.services_by_name[name].full_name for pb, name in (
    (chat_pb2, "ChatService"), (agents_pb2, "AgentService"), (votes_pb2, "VoteService"),
    (tools_pb2, "ToolService"), (analytics_pb2, "AnalyticsService"))]


async def serve(settings: Settings) -> None:
    key = signing_key(settings.gateway_jwt_key.get_secret_value())  # refuses a weak key
    await asyncio.to_thread(ensure_topics, settings)  # the tail follows every partition
    tail = Tail(settings)
    await asyncio.to_thread(tail.start)
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
    limit = settings.gateway_max_request_bytes
    server = grpc.aio.server(
        interceptors=[Guard(key, RateLimiter(settings.gateway_rate_per_s, settings.gateway_burst))],
        options=[("grpc.max_receive_message_length", limit),
                 ("grpc.max_send_message_length", 16 * limit)])
    chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatService(producer, tail, pool), server)
    agents_pb2_grpc.add_AgentServiceServicer_to_server(AgentService(settings), server)
    votes_pb2_grpc.add_VoteServiceServicer_to_server(VoteService(settings, producer, pool), server)
    tools_pb2_grpc.add_ToolServiceServicer_to_server(ToolService(producer), server)
    analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsService(settings), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        [*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(f"{settings.gateway_host}:{settings.gateway_port}")
    await server.start()
    for name in ("", *SERVICES):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gateway.ready", address=f"{settings.gateway_host}:{port}")

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await checker.enter_graceful_shutdown()
    await server.stop(GRACE_S)
    await asyncio.to_thread(tail.stop)
    await asyncio.to_thread(producer.close)  # flushes what is still in flight
    await pool.close()
    log.info("gateway.stopped")
