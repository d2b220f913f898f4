"""Agora's one error hierarchy. Each kind says what a caller can do about it, and the
gateway answers each with one gRPC status (``gateway.guard.STATUS``)."""

from __future__ import annotations


class AgoraError(Exception):
    """Base of the errors Agora raises on purpose."""


class Invalid(AgoraError, ValueError):
    """The input is wrong (a record, a field, arguments): sending it again won't help."""


class Unauthenticated(AgoraError):
    """The caller's credentials are missing, malformed, expired or revoked."""


class Denied(AgoraError):
    """The caller may not do this (outside its channels, its role, its permissions)."""


class NotFound(AgoraError, KeyError):
    """The agent, vote, message, topic... does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AlreadyExists(AgoraError):
    """What the call would create exists already, differently."""


class Conflict(AgoraError):
    """The request is valid, but the current state forbids it."""


class Unavailable(AgoraError):
    """A server or store (Kafka, Postgres, ClickHouse, Triton) cannot answer now: retry."""
