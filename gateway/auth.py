"""Bearer tokens of the gateway: HS256 JWTs naming the caller and its channels.

A token carries ``sub`` (the caller's identity, which becomes the author of what it
posts), ``channels`` (the channel ids it may use, or ``"*"`` for all), ``iat``,
``exp``, ``jti``, and the fixed ``iss``/``aud`` so that a token signed with the same
key for another purpose is refused. Operators issue tokens with ``agora token issue``;
the gateway's interceptor verifies them. Plain functions: no gRPC here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum

import jwt

from gateway import validation

ALGORITHM = "HS256"
ISSUER = "agora"
AUDIENCE = "agora-gateway"
ALL_CHANNELS = "*"
MIN_KEY_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
CLAIMS = ("sub", "channels", "iat", "exp", "iss", "aud", "jti")


class Reason(StrEnum):
    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad signature"
    EXPIRED = "expired"
    WRONG_AUDIENCE = "wrong audience"
    WRONG_ISSUER = "wrong issuer"
    MISSING_CLAIMS = "missing claims"


class AuthError(Exception):
    """A token that does not authenticate its bearer; ``reason`` says why, briefly."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Caller:
    subject: str
    channels: frozenset[str]
    expires_at: datetime

    def may_access(self, channel_id: str) -> bool:
        return ALL_CHANNELS in self.channels or channel_id in self.channels


def signing_key(key: str | bytes) -> bytes:
    """``key`` as bytes; ValueError when it is too short to sign with."""
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"the gateway's signing key must be at least {MIN_KEY_BYTES} bytes "
                         f"(it has {len(raw)}); make one with `openssl rand -hex 32`")
    return raw


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def issue(key: str | bytes, subject: str, channels: list[str], ttl_s: int,
          now: datetime | None = None) -> str:
    """A token for ``subject`` on ``channels`` (``"*"``: all), valid for ``ttl_s`` seconds.
    ValueError (InvalidField for a bad subject or channel) on bad input."""
    secret = signing_key(key)
    validation.identifier(subject, "subject")
    if not channels:
        raise ValueError("a token needs at least one channel ('*' for all)")
    for i, channel in enumerate(channels):
        if channel != ALL_CHANNELS:
            validation.channel_id(channel, f"channels[{i}]")
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, not {ttl_s}")
    issued = int(_now(now).timestamp())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "channels": sorted(set(channels)),
              "iat": issued, "exp": issued + ttl_s, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def from_authorization(value: str | None) -> str:
    """The token of an ``authorization: Bearer <token>`` header value."""
    if not value or value.isspace():
        raise AuthError(Reason.MISSING, "no authorization header; send 'Bearer <token>'")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(Reason.MALFORMED, "the authorization header is not 'Bearer <token>'")
    return token.strip()


def verify(key: str | bytes, token: str | None, now: datetime | None = None) -> Caller:
    """The caller a token authenticates; AuthError says why it does not."""
    secret = signing_key(key)
    if not token:
        raise AuthError(Reason.MISSING, "no bearer token")
    try:
        # Expiry is checked below against ``now``, which PyJWT cannot be given.
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], audience=AUDIENCE,
                            issuer=ISSUER, options={"require": list(CLAIMS), "verify_exp": False,
                                                    "verify_iat": False, "verify_nbf": False})
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(Reason.MISSING_CLAIMS, f"the token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidAudienceError:
        raise AuthError(Reason.WRONG_AUDIENCE, f"the token is not for {AUDIENCE!r}") from None
    except jwt.InvalidIssuerError:
        raise AuthError(Reason.WRONG_ISSUER, f"the token was not issued by {ISSUER!r}") from None
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
        raise AuthError(Reason.BAD_SIGNATURE, "the token is not signed with the gateway's "
                        f"key ({ALGORITHM})") from None
    except jwt.InvalidTokenError as exc:  # DecodeError and anything a newer PyJWT adds
        raise AuthError(Reason.MALFORMED, f"not a valid JWT: {exc}") from None
    subject, channels, exp = claims["sub"], claims["channels"], claims["exp"]
    if not isinstance(subject, str) or not subject:
        raise AuthError(Reason.MALFORMED, "the 'sub' claim must be a non-empty string")
    if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
        raise AuthError(Reason.MALFORMED, "the 'channels' claim must be a list of channel ids")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise AuthError(Reason.MALFORMED, "the 'exp' claim must be a number")
    expires_at = datetime.fromtimestamp(exp, timezone.utc)
    if _now(now) >= expires_at:
        raise AuthError(Reason.EXPIRED, f"the token expired at {expires_at.isoformat()}")
    return Caller(subject, frozenset(channels), expires_at)
