"""What the gateway costs: PostMessage (RS256 token check, rate limit, validation, Kafka
produce acknowledged by the broker) vs a bare grpc.aio echo service, side by side.

Both servers run in processes of their own on this machine, both over TLS with the
same certificate (the local stack's), and get the same bytes (a serialized
PostMessageRequest) from the same grpc.aio client, CONCURRENCY calls in flight for
SECONDS each. The gateway's rate limit is lifted for the run.

    .venv/bin/python bench/gateway.py [SECONDS [CONCURRENCY]]
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
import uuid

import grpc

from common import local_stack
from gateway import auth, tls
from gateway.server import signer
from ops.core.net import free_port
from ops.devstack.process import start_agora, stop
from schemas.agora.v1 import chat_pb2

POST = "/agora.v1.ChatService/PostMessage"
ECHO = "/bench.Echo/Echo"


def _echo_server(port: int, pem: dict, ready) -> None:
    async def main() -> None:
        async def echo(request: bytes, context) -> bytes:
            return request

        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})])
        server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials(
            [(pem["key"].read_bytes(), pem["cert"].read_bytes())]))
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


async def drive(address: str, credentials, method: str, payload, seconds: float,
                concurrency: int, metadata=()) -> tuple[float, float, float]:
    """(calls/s, p50 ms, p99 ms) of ``concurrency`` callers for ``seconds``."""
    async with grpc.aio.secure_channel(address, credentials) as channel:
        call = channel.unary_unary(method)
        latencies: list[float] = []
        await call(payload(), metadata=metadata)  # connect outside the timing
        stop_at = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                await call(payload(), metadata=metadata)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return (len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000,
            latencies[int(len(latencies) * 0.99)] * 1000)


def main(seconds: float = 10, concurrency: int = 32) -> None:
    channel = f"bench-{uuid.uuid4().hex[:6]}"

    def post() -> bytes:
        return chat_pb2.PostMessageRequest(
            channel_id=channel, text="The API server returns 502 since the last deploy.",
            idempotency_key=uuid.uuid4().hex).SerializeToString()

    with local_stack() as settings:
        pem = tls.local_ca(settings.stack_dir / "gateway")
        credentials = grpc.ssl_channel_credentials(pem["ca"].read_bytes())
        echo_port = free_port()
        ready = multiprocessing.Event()
        echo = multiprocessing.Process(target=_echo_server, args=(echo_port, pem, ready),
                                       daemon=True)
        echo.start()
        ready.wait(30)
        try:
            echo_rps, echo_p50, echo_p99 = asyncio.run(drive(
                f"127.0.0.1:{echo_port}", credentials, ECHO, post, seconds, concurrency))
        finally:
            echo.terminate()
            echo.join()
        print(f"echo:    {echo_rps:8,.0f} calls/s  p50 {echo_p50:6.2f} ms  p99 "
              f"{echo_p99:6.2f} ms ({concurrency} in flight, {seconds:g} s, TLS)", flush=True)

        port = free_port()
        gateway = start_agora(settings.stack_dir, ["gateway", "serve"], "gateway-bench",
                              lambda log: "gateway.ready" in log, timeout_s=60,
                              AGORA_GATEWAY_PORT=str(port), AGORA_GATEWAY_TLS_CERT=str(pem["cert"]),
                              AGORA_GATEWAY_TLS_KEY=str(pem["key"]),
                              AGORA_GATEWAY_RATE_PER_S="1000000", AGORA_GATEWAY_BURST="1000000")
        try:
            token = auth.issue(signer(settings), "human:bench", [channel],
                               settings.gateway_token_max_s)
            bearer = (("authorization", f"Bearer {token}"),)
            ours, p50, p99 = asyncio.run(drive(f"127.0.0.1:{port}", credentials, POST, post,
                                               seconds, concurrency, bearer))
        finally:
            stop(gateway, grace_s=10)
    print(f"gateway: {ours:8,.0f} calls/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms "
          f"(PostMessage over TLS, RS256 token, each acknowledged by the broker)", flush=True)
    print(f"RATIO gateway_post_per_s {ours / echo_rps:.3f} target 0.5")


if __name__ == "__main__":
    main(*(float(a) if i == 0 else int(a) for i, a in enumerate(sys.argv[1:3])))
