"""Every call to the gateway passes here: who is calling, may they, and how it ended.

``Guard`` is the server interceptor. It wraps each of our handlers so that, before the
handler runs, the bearer token is verified (UNAUTHENTICATED; a peer address that keeps
failing is refused outright, RESOURCE_EXHAUSTED), revoked tokens and removed keys are
refused, and the caller's rate and open streams are checked (RESOURCE_EXHAUSTED); the
caller is then in a context variable for the handler (``caller()``), whose role per
channel ``require_channel`` checks. Handlers report refusals by raising Agora's errors
(``ops.core.errors``), which the wrapper turns into status codes (``STATUS``) with their
message, so
the services hold no gRPC plumbing. Health and reflection stay open, as load
balancers and grpcurl expect. Request sizes are bounded by the server's
``grpc.max_receive_message_length`` (RESOURCE_EXHAUSTED before any handler runs).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from contextvars import ContextVar
from datetime import datetime, timezone

import grpc
import structlog
from confluent_kafka import KafkaException
from prometheus_client import Counter, Histogram

from gateway.auth import AuthError, Caller, KeyRing, Reason, Role, from_authorization, verify
from gateway.ratelimit import RateLimiter
from ops.core.errors import (
    AlreadyExists,
    Conflict,
    Denied,
    Invalid,
    NotFound,
    Unauthenticated,
    Unavailable,
)

log = structlog.get_logger("agora.gateway")
REQUESTS = Counter("agora_gateway_requests_total", "Gateway calls by method and status",
                   ["method", "code"])
LATENCY = Histogram("agora_gateway_request_seconds", "Gateway call duration (streams: "
                    "until the stream ends)", ["method"],
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 300))
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
VERIFIED_TOKENS = 10_000

_CALLER: ContextVar[Caller] = ContextVar("agora_gateway_caller")


# The one table from Agora's errors (ops.core.errors) to gRPC status codes.
STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (Invalid, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (Denied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    # Reads of Kafka (a stream's catch-up, the registry) failing on their own.
    (KafkaException, grpc.StatusCode.UNAVAILABLE),
)


def _address(peer: str | None) -> str:
    """The address of a gRPC peer string ('ipv4:127.0.0.1:5123'), without the port."""
    kind, _, rest = (peer or "unknown").partition(":")
    return rest.rsplit(":", 1)[0] if kind in ("ipv4", "ipv6") else kind


def caller() -> Caller:
    """The authenticated caller of the current call."""
    return _CALLER.get()


def require_channel(channel_id: str, need: Role = Role.VIEWER) -> None:
    """Denied unless the caller's token gives it ``need`` (or more) in ``channel_id``."""
    who = caller()
    if not who.may(channel_id, need):
        have = who.role_in(channel_id)
        raise Denied(f"{who.subject} is {have.name.lower() if have else 'not a member'} in "
                     f"channel {channel_id!r}; this needs {need.name.lower()}")


class Guard(grpc.aio.ServerInterceptor):
    def __init__(self, keys: KeyRing, limiter: RateLimiter, *, max_lifetime_s: int,
                 revoked: Container[str] = frozenset(), failures: RateLimiter | None = None,
                 max_streams: int = 8, open_methods: tuple[str, ...] = ()):
        self.keys, self.max_lifetime_s, self.revoked = keys, max_lifetime_s, revoked
        self.limiter = limiter
        # Failed authentications per peer address: a peer that keeps failing is refused
        # before its token is even looked at.
        self.failures = failures or RateLimiter(0.5, 30)
        self.max_streams = max_streams
        self.streams: dict[str, int] = {}  # open streams per caller
        self.open_methods = (*OPEN_PREFIXES, *open_methods)
        # Token -> its caller: a client sends the same token with every call, and
        # checking the signature is most of the guard's cost. Expiry and revocation are
        # checked anew; a change of the keys (a kid removed, or given other key material)
        # empties it.
        self.verified: OrderedDict[str, Caller] = OrderedDict()
        self.keys_version = keys.version
        self.wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, details):
        if details.method.startswith(self.open_methods):
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
        if handler.stream_unary:  # the same wrapper: its request is the message iterator
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        raise TypeError(f"{path}: only unary, server- and client-streaming calls exist")

    async def _admit(self, context: grpc.aio.ServicerContext) -> Caller:
        metadata = dict(context.invocation_metadata() or ())
        try:
            who = self._verify(from_authorization(metadata.get("authorization")))
        except AuthError as exc:
            peer = _address(context.peer())
            if wait := self.failures.take(peer):
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"too many failed authentications from {peer}: retry in "
                                    f"{wait:.0f} s")
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
        if who is not None and who.jti in self.revoked:
            raise AuthError(Reason.REVOKED, f"token {who.jti} was revoked")
        if who is not None and (self.keys.get(who.kid) is None or
                                self.keys.version != self.keys_version):
            self.verified.clear()  # the keys changed since: everyone is verified anew
            self.keys_version = self.keys.version
            who = None
        if who is None or who.expires_at <= datetime.now(timezone.utc):
            # raises AuthError, expired and revoked ones included
            who = verify(self.keys, token, max_lifetime_s=self.max_lifetime_s,
                         revoked=self.revoked)
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
                who = await self._admit(context)
                _CALLER.set(who)
                outcome.caller_known = True
                if self.streams.get(who.subject, 0) >= self.max_streams:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                        f"{who.subject} has {self.max_streams} streams open "
                                        "already; close one first")
                self.streams[who.subject] = self.streams.get(who.subject, 0) + 1
                try:
                    async for response in inner(request, context):
                        yield response
                except _REFUSALS as exc:
                    await _refuse(context, exc)
                finally:
                    self.streams[who.subject] -= 1
                    if not self.streams[who.subject]:
                        del self.streams[who.subject]
        return behavior


_REFUSALS = tuple(kind for kind, _ in STATUS)


async def _refuse(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    code = next(code for kind, code in STATUS if isinstance(exc, kind))
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
