"""A small Python client of the agora.v1 API (blocking; grpc's own channel underneath).

    with Client("127.0.0.1:50051", token, tls.channel_credentials(settings)) as agora:
        message = agora.post("general", "the API returns 502 since the deploy")
        for event in agora.stream("general"):
            ...

Every stub of the package is an attribute (``agora.agents.ListAgents(...)``); the
bearer token goes with every call, over TLS unless ``credentials`` is None (a
gateway configured for plaintext). Errors are ``grpc.RpcError`` with the server's
status code and message.
"""

from __future__ import annotations

import time
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import grpc

from schemas.agora.v1 import (
    agents_pb2_grpc,
    analytics_pb2_grpc,
    auth_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    incidents_pb2_grpc,
    knowledge_pb2,
    knowledge_pb2_grpc,
    tools_pb2_grpc,
    votes_pb2_grpc,
)
from schemas.convert import timestamp


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
              grpc.StreamUnaryClientInterceptor):
    """Adds the bearer token to every call's metadata."""

    def __init__(self, token: str):
        self.metadata = (("authorization", f"Bearer {token}"),)

    def _with_token(self, details):
        return _Details(details.method, details.timeout,
                        (*(details.metadata or ()), *self.metadata), details.credentials,
                        details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._with_token(details), request_iterator)


class _Details(namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                       "wait_for_ready", "compression")),
               grpc.ClientCallDetails):
    pass


class Client:
    def __init__(self, address: str, token: str,
                 credentials: grpc.ChannelCredentials | None):
        self._raw = grpc.secure_channel(address, credentials) if credentials else \
            grpc.insecure_channel(address)
        self.channel = grpc.intercept_channel(self._raw, _Bearer(token))
        self.chat = chat_pb2_grpc.ChatServiceStub(self.channel)
        self.agents = agents_pb2_grpc.AgentServiceStub(self.channel)
        self.votes = votes_pb2_grpc.VoteServiceStub(self.channel)
        self.tools = tools_pb2_grpc.ToolServiceStub(self.channel)
        self.analytics = analytics_pb2_grpc.AnalyticsServiceStub(self.channel)
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(self.channel)
        self.incidents = incidents_pb2_grpc.IncidentServiceStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._raw.close()

    def post(self, channel_id: str, text: str, reply_to: str = "",
             mentions: list[str] | None = None, idempotency_key: str | None = None,
             timeout_s: float = 30) -> chat_pb2.ChatMessage:
        """Post as the token's subject; a retry with the same key returns the same message."""
        return self.chat.PostMessage(chat_pb2.PostMessageRequest(
            channel_id=channel_id, text=text, reply_to=reply_to, mentions=mentions or [],
            idempotency_key=idempotency_key or str(uuid.uuid4())), timeout=timeout_s)

    def stream(self, channel_id: str, cursor: str | None = None,
               since: datetime | None = None) -> Iterator[chat_pb2.ChannelEvent]:
        """The channel's events from now, after ``cursor``, or from ``since``; returns
        once subscribed (``.cancel()`` ends it)."""
        request = chat_pb2.StreamChannelRequest(channel_id=channel_id)
        if cursor:
            request.cursor = cursor
        elif since is not None:
            request.start_time.CopyFrom(timestamp(since))
        call = self.chat.StreamChannel(request)
        call.initial_metadata()  # sent once the gateway holds the live feed: nothing is missed
        return call

    def add_document(self, data: bytes | Iterable[bytes], source: str, channel_id: str = "",
                     title: str = "", media_type: str = "",
                     timeout_s: float = 120) -> knowledge_pb2.Document:
        """Add a document (or a new version) to a channel, or to the workspace when
        ``channel_id`` is empty; ``data`` whole or as pieces, sent PIECE bytes a message."""
        pieces = [data] if isinstance(data, (bytes, bytearray)) else data

        def requests() -> Iterator[knowledge_pb2.AddDocumentRequest]:
            yield knowledge_pb2.AddDocumentRequest(
                channel_id=channel_id, workspace=not channel_id, source=source, title=title,
                media_type=media_type)
            for piece in pieces:
                for start in range(0, len(piece), PIECE):
                    yield knowledge_pb2.AddDocumentRequest(data=piece[start:start + PIECE])

        return self.knowledge.AddDocument(requests(), timeout=timeout_s)

    def ingested(self, document: knowledge_pb2.Document, timeout_s: float | None = None,
                 interval_s: float = 0.2,
                 progress: Callable[[knowledge_pb2.Document], None] = lambda doc: None
                 ) -> knowledge_pb2.Document:
        """``document`` once its ingestion is over (ACTIVE or FAILED), polling GetDocument
        every ``interval_s`` and passing each INGESTING state to ``progress``;
        TimeoutError after ``timeout_s`` (None: no limit)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while document.state == knowledge_pb2.DOCUMENT_STATE_INGESTING:
            progress(document)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{document.source} still ingesting after {timeout_s} s")
            time.sleep(interval_s)
            document = self.knowledge.GetDocument(knowledge_pb2.GetDocumentRequest(
                document_id=document.document_id), timeout=30)
        return document


PIECE = 128 * 1024  # well under the gateway's request limit
