"""Every call to the gateway passes here: who is calling, may they, and how it ended.

``Guard`` is the server interceptor. It wraps each of our handlers so that, before the
handler runs, the bearer token is verified (UNAUTHENTICATED) and the caller's rate is
checked (RESOURCE_EXHAUSTED); the caller is then in a context variable for the
handler (``caller()``). Handlers report refusals by raising the exceptions below (or
``InvalidField``), which the wrapper turns into status codes with their message, so
the services hold no gRPC plumbing. Health and reflection stay open, as load
balancers and grpcurl expect. Request sizes are bounded by the server's
``grpc.max_receive_message_length`` (RESOURCE_EXHAUSTED before any handler runs).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from datetime import datetime, timezone

import grpc
import structlog
from confluent_kafka import KafkaException
from prometheus_client import Counter, Histogram

from gateway.auth import AuthError, Caller, from_authorization, verify
from gateway.ratelimit import RateLimiter
from gateway.validation import InvalidField
from ops.kafka import MissingTopic

log = structlog.get_logger("agora.gateway")
REQUESTS = Counter("agora_gateway_requests_total", "Gateway calls by method and status",
                   ["method", "code"])
LATENCY = Histogram("agora_gateway_request_seconds", "Gateway call duration (streams: "
                    "until the stream ends)", ["method"],
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 300))
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
VERIFIED_TOKENS = 10_000

_CALLER: ContextVar[Caller] = ContextVar("agora_gateway_caller")


class Denied(Exception):
    """PERMISSION_DENIED: the caller may not do this (outside its channels...)."""


class NotFound(Exception):
    """NOT_FOUND: the agent, vote, message... does not exist."""


class Conflict(Exception):
    """FAILED_PRECONDITION: the request is valid but the state forbids it."""


class AlreadyExists(Exception):
    """ALREADY_EXISTS: what the call would create exists already, differently."""


class Unavailable(Exception):
    """UNAVAILABLE: a backend (Kafka, Postgres, ClickHouse) cannot answer now; retry."""


_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidField, grpc.StatusCode.INVALID_ARGUMENT),
    (Denied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    # Reads of Kafka (a stream's catch-up, the registry) failing on their own.
    (KafkaException, grpc.StatusCode.UNAVAILABLE),
    (MissingTopic, grpc.StatusCode.UNAVAILABLE),
)


def caller() -> Caller:
    """The authenticated caller of the current call."""
    return _CALLER.get()


def require_channel(channel_id: str) -> None:
    """Denied unless the caller's token covers ``channel_id``."""
    who = caller()
    if not who.may_access(channel_id):
        raise Denied(f"{who.subject} has no access to channel {channel_id!r}")


class Guard(grpc.aio.ServerInterceptor):
    def __init__(self, key: bytes, limiter: RateLimiter):
        self.key = key
        self.limiter = limiter
        # Token -> its caller: a client sends the same token with every call, and
        # checking the signature is most of the guard's cost. Expiry is checked anew.
        self.verified: OrderedDict[str, Caller] = OrderedDict()
        self.wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, details):
        if details.method.startswith(OPEN_PREFIXES):
            return await continuation(details)
        # A method's handler never changes: wrap it once, not on every call.
        if (wrapped := self.wrapped.get(details.method)) is None:
            handler = await continuation(details)
            if handler is None:
                return None  # UNIMPLEMENTED
            wrapped = self.wrapped[details.method] = self._wrap(details.method, handler)
        return wrapped

    def _wrap(self, path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        method = path.rsplit("/", 1)[-1]
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        raise TypeError(f"{path}: only unary and server-streaming calls exist")

    async def _admit(self, context: grpc.aio.ServicerContext) -> Caller:
        metadata = dict(context.invocation_metadata() or ())
        try:
            who = self._verify(from_authorization(metadata.get("authorization")))
        except AuthError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        wait = self.limiter.take(who.subject)
        if wait:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"rate limit for {who.subject}: retry in {wait:.2f} s")
        return who

    def _verify(self, token: str) -> Caller:
        who = self.verified.get(token)
        if who is not None:
            self.verified.move_to_end(token)  # least recently used go first
        if who is None or who.expires_at <= datetime.now(timezone.utc):
            who = verify(self.key, token)  # raises AuthError, expired ones included
            self.verified[token] = who
            while len(self.verified) > VERIFIED_TOKENS:
                self.verified.popitem(last=False)
        return who

    def _unary(self, method: str, inner: Callable[..., Awaitable]):
        metrics = _Metrics(method)

        async def behavior(request, context):
            with _Outcome(metrics, context) as outcome:
                _CALLER.set(await self._admit(context))
                outcome.caller_known = True
                try:
                    return await inner(request, context)
                except _REFUSALS as exc:
                    await _refuse(context, exc)
        return behavior

    def _stream(self, method: str, inner: Callable[..., AsyncIterator]):
        metrics = _Metrics(method)

        async def behavior(request, context):
            with _Outcome(metrics, context) as outcome:
                _CALLER.set(await self._admit(context))
                outcome.caller_known = True
                try:
                    async for response in inner(request, context):
                        yield response
                except _REFUSALS as exc:
                    await _refuse(context, exc)
        return behavior


_REFUSALS = tuple(kind for kind, _ in _CODES)


async def _refuse(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    code = next(code for kind, code in _CODES if isinstance(exc, kind))
    await context.abort(code, f"Kafka: {exc}" if isinstance(exc, KafkaException) else str(exc))


class _Metrics:
    """One method's metric children, looked up once rather than on every call."""

    def __init__(self, method: str):
        self.method = method
        self.latency = LATENCY.labels(method)
        self._requests: dict[str, Counter] = {}

    def count(self, code: str) -> None:
        if (counter := self._requests.get(code)) is None:
            counter = self._requests[code] = REQUESTS.labels(self.method, code)
        counter.inc()


class _Outcome:
    """Counts the call by its final status and logs refusals of known callers."""

    def __init__(self, metrics: _Metrics, context: grpc.aio.ServicerContext):
        self.metrics, self.method, self.context = metrics, metrics.method, context
        self.caller_known = False

    def __enter__(self) -> _Outcome:
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            code = "OK"
        elif isinstance(exc, grpc.aio.AbortError) and self.context.code() is not None:
            code = self.context.code().name
        elif not issubclass(kind, Exception):
            code = "CANCELLED"  # the client went away (streams end this way)
        else:
            code = "INTERNAL"
            log.error("gateway.internal_error", method=self.method, error=repr(exc))
        self.metrics.count(code)
        self.metrics.latency.observe(time.perf_counter() - self.started)
        if code not in ("OK", "CANCELLED") and self.caller_known:
            log.info("gateway.refused", method=self.method, code=code,
                     caller=caller().subject, detail=self.context.details())
