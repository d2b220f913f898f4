"""Bearer tokens of the gateway: signed JWTs naming the caller and its roles.

A token carries ``sub`` (the caller's identity, which becomes the author of what it
posts), ``roles`` (channel id, or ``"*"`` for every channel, to ``viewer``, ``member``
or ``admin``), ``admin`` (a workspace administrator), ``iat``, ``exp``, optionally
``nbf``, a ``jti`` (what revocation names), and the fixed ``iss``/``aud`` so that a
token signed with the same key for another purpose is refused.

Tokens are signed with RS256 or ES256. The keys that verify them come from a JWKS
(a file or a URL), each named by its ``kid``: a new key is added to rotate, and tokens
signed with an old key verify until that key is removed. HS256 with a shared secret
is accepted only when one is configured, for development. A token's header must name
a known ``kid`` whose key is of the algorithm the header claims (no ``none``, no HS256
with an RSA key's bytes). ``nbf`` and ``iat`` may be at most ``LEEWAY_S`` in the future,
and no token may live longer than the configured maximum. Plain functions: no gRPC
here.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
import uuid
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway import validation
from ops.core.errors import Unauthenticated

log = structlog.get_logger("agora.gateway")
ALGORITHMS = ("RS256", "ES256")
DEV_ALGORITHM = "HS256"
DEV_KID = "hs256-dev"
ISSUER = "agora"
AUDIENCE = "agora-gateway"
ALL_CHANNELS = "*"
MIN_KEY_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
LEEWAY_S = 30  # clock skew allowed on iat and nbf
RELOAD_S = 5.0  # a JWKS file is re-read this often (and on an unknown kid, at most this often)
RELOAD_URL_S = 300.0  # a JWKS URL, this often
CLAIMS = ("sub", "roles", "iat", "exp", "iss", "aud", "jti")


class Role(IntEnum):
    """What a caller may do in a channel; each role includes the ones below it."""
    VIEWER = 1  # read: history, streams, votes, agents
    MEMBER = 2  # post, request tools, start votes, cast ballots
    ADMIN = 3  # create, change, pause agents; grant tools and vote rights


class Reason(StrEnum):
    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad signature"
    BAD_ALGORITHM = "bad algorithm"
    UNKNOWN_KEY = "unknown key"
    EXPIRED = "expired"
    NOT_YET_VALID = "not yet valid"
    TOO_LONG = "lifetime too long"
    REVOKED = "revoked"
    WRONG_AUDIENCE = "wrong audience"
    WRONG_ISSUER = "wrong issuer"
    MISSING_CLAIMS = "missing claims"


class AuthError(Unauthenticated):
    """A token that does not authenticate its bearer; ``reason`` says why, briefly."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Caller:
    subject: str
    roles: Mapping[str, Role]
    expires_at: datetime
    admin: bool = False
    jti: str = ""
    kid: str = ""

    def role_in(self, channel_id: str) -> Role | None:
        if self.admin:
            return Role.ADMIN
        found = [r for c, r in self.roles.items() if c in (channel_id, ALL_CHANNELS)]
        return max(found, default=None)

    def may(self, channel_id: str, need: Role = Role.VIEWER) -> bool:
        role = self.role_in(channel_id)
        return role is not None and role >= need

    def may_access(self, channel_id: str) -> bool:
        return self.may(channel_id, Role.VIEWER)


def parse_roles(values: Mapping[str, str] | list[str]) -> dict[str, Role]:
    """``{"general": "member"}`` or ``["general:admin", "*:viewer", "ops"]`` (member when
    no role is given) as channel -> Role. ValueError (InvalidField) on bad input."""
    pairs = values.items() if isinstance(values, Mapping) else \
        [(v.rpartition(":")[0], v.rpartition(":")[2]) if ":" in v else (v, "member")
         for v in values]
    roles: dict[str, Role] = {}
    for i, (channel, name) in enumerate(pairs):
        if channel != ALL_CHANNELS:
            validation.channel_id(channel, f"roles[{i}]")
        try:
            role = Role[str(name).upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r} for {channel!r}: viewer, member or "
                             "admin") from None
        roles[channel] = max(role, roles.get(channel, role))
    return roles


def signing_key(key: str | bytes) -> bytes:
    """An HS256 secret as bytes; ValueError when it is too short to sign with."""
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"the gateway's HS256 key must be at least {MIN_KEY_BYTES} bytes "
                         f"(it has {len(raw)}); make one with `openssl rand -hex 32`")
    return raw


# --- keys ---------------------------------------------------------------------------------

def _algorithm(jwk: Mapping) -> str:
    return jwk.get("alg") or {"RSA": "RS256", "EC": "ES256"}.get(jwk.get("kty", ""), "")


def _key_of(jwk: Mapping):
    kind = _algorithm(jwk)
    if kind == "RS256":
        return RSAAlgorithm.from_jwk(json.dumps(jwk))
    if kind == "ES256":
        return ECAlgorithm.from_jwk(json.dumps(jwk))
    raise ValueError(f"key {jwk.get('kid')!r}: algorithm {kind or '?'} is not one of "
                     f"{', '.join(ALGORITHMS)}")


def new_private_jwk(algorithm: str = "RS256", kid: str | None = None) -> dict:
    """A fresh private key as a JWK (RS256: RSA 2048, ES256: P-256)."""
    if algorithm == "RS256":
        jwk = RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048), as_dict=True)
    elif algorithm == "ES256":
        jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
    else:
        raise ValueError(f"algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    return {**jwk, "kid": kid or uuid.uuid4().hex[:16], "alg": algorithm, "use": "sig"}


def public_jwks(private: Mapping) -> dict:
    """The public half of a private JWKS (what verifiers are given)."""
    keys = []
    for jwk in private["keys"]:
        kind = RSAAlgorithm if _algorithm(jwk) == "RS256" else ECAlgorithm
        public = kind.to_jwk(_key_of(jwk).public_key(), as_dict=True)
        keys.append({**public, "kid": jwk["kid"], "alg": _algorithm(jwk), "use": "sig"})
    return {"keys": keys}


@dataclass(frozen=True)
class Signer:
    """The key new tokens are signed with."""
    kid: str
    algorithm: str
    key: Any  # a private key object of cryptography's, or HS256 bytes

    @classmethod
    def from_jwks(cls, private: Mapping) -> Signer:
        """The last key of a private JWKS (the newest, after a rotation)."""
        if not private.get("keys"):
            raise ValueError("the signing JWKS has no key")
        jwk = private["keys"][-1]
        return cls(jwk["kid"], _algorithm(jwk), _key_of(jwk))

    @classmethod
    def from_file(cls, path: Path | str) -> Signer:
        return cls.from_jwks(json.loads(Path(path).read_text()))

    @classmethod
    def hs256(cls, secret: str | bytes) -> Signer:
        return cls(DEV_KID, DEV_ALGORITHM, signing_key(secret))


@dataclass
class KeyRing:
    """The keys that verify tokens, by kid: a JWKS file or http(s) URL, re-read
    periodically (a removed key stops verifying) and when a token names a kid not seen
    yet (at most every RELOAD_S), plus the HS256 secret when one is configured for
    development. ``version`` changes whenever the keys do (a re-read that finds the
    same keys keeps them): what was verified with earlier keys must be verified again."""
    source: str = ""
    hs256_secret: bytes | None = None
    keys: dict[str, tuple[str, object]] = field(default_factory=dict)
    version: int = 0
    _loaded_at: float = -RELOAD_S
    _jwks: list = field(default_factory=list, repr=False)  # as last read

    def __post_init__(self) -> None:
        if self.source:
            self.reload()
        if not self.source and self.hs256_secret is None:
            raise ValueError("no keys to verify tokens: set AGORA_GATEWAY_JWKS (or, for "
                             "development only, AGORA_GATEWAY_JWT_KEY)")

    def reload(self) -> None:
        self._loaded_at = time.monotonic()  # a failed read is retried after RELOAD_S, not per call
        if self.source.startswith(("http://", "https://")):
            with urllib.request.urlopen(self.source, timeout=5) as answer:  # noqa: S310
                data = json.load(answer)
        else:
            data = json.loads(Path(self.source).read_text())
        jwks = data.get("keys", [])
        if jwks == self._jwks:
            return
        keys = {}
        for jwk in jwks:
            if "kid" not in jwk:
                raise ValueError(f"{self.source}: every key needs a kid")
            keys[jwk["kid"]] = (_algorithm(jwk), _key_of(jwk))
        self.keys, self._jwks = keys, jwks
        self.version += 1

    def get(self, kid: str) -> tuple[str, object] | None:
        if kid == DEV_KID and self.hs256_secret is not None:
            return DEV_ALGORITHM, self.hs256_secret
        age = time.monotonic() - self._loaded_at
        remote = self.source.startswith(("http://", "https://"))
        if self.source and (age >= (RELOAD_URL_S if remote else RELOAD_S) or
                            (kid not in self.keys and age >= RELOAD_S)):
            try:
                self.reload()  # a rotation added or removed a key since
            except (OSError, ValueError) as exc:  # the last good keys stay
                if not self.keys:
                    raise
                log.warning("gateway.jwks_unreadable", source=self.source, error=str(exc))
        return self.keys.get(kid)


# --- tokens -------------------------------------------------------------------------------

def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def issue(signer: Signer, subject: str, roles: Mapping[str, str] | list[str], ttl_s: int, *,
          admin: bool = False, now: datetime | None = None) -> str:
    """A token for ``subject`` with ``roles`` (see parse_roles), valid for ``ttl_s``
    seconds. ValueError (InvalidField for a bad subject or channel) on bad input."""
    validation.identifier(subject, "subject")
    parsed = parse_roles(roles)
    if not parsed and not admin:
        raise ValueError("a token needs at least one channel role ('*' for all) or admin")
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, not {ttl_s}")
    issued = int(_now(now).timestamp())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject,
              "roles": {c: r.name.lower() for c, r in sorted(parsed.items())},
              "admin": admin, "iat": issued, "nbf": issued, "exp": issued + ttl_s,
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, signer.key, algorithm=signer.algorithm,
                      headers={"kid": signer.kid})


def from_authorization(value: str | None) -> str:
    """The token of an ``authorization: Bearer <token>`` header value."""
    if not value or value.isspace():
        raise AuthError(Reason.MISSING, "no authorization header; send 'Bearer <token>'")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(Reason.MALFORMED, "the authorization header is not 'Bearer <token>'")
    return token.strip()


def _header(token: str, keys: KeyRing) -> tuple[str, str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise AuthError(Reason.MALFORMED, f"not a valid JWT: {exc}") from None
    algorithm, kid = header.get("alg"), header.get("kid")
    if algorithm not in (*ALGORITHMS, DEV_ALGORITHM):
        raise AuthError(Reason.BAD_ALGORITHM, f"algorithm {algorithm!r} is not accepted")
    if not isinstance(kid, str) or not kid:
        raise AuthError(Reason.UNKNOWN_KEY, "the token's header names no key (kid)")
    try:
        found = keys.get(kid)
    except (OSError, ValueError) as exc:
        raise AuthError(Reason.UNKNOWN_KEY, f"the keys could not be read: {exc}") from None
    if found is None:
        raise AuthError(Reason.UNKNOWN_KEY, f"no key {kid[:40]!r} verifies tokens here")
    if found[0] != algorithm:  # e.g. HS256 over the bytes of an RSA public key
        raise AuthError(Reason.BAD_ALGORITHM, f"key {kid[:40]!r} is for {found[0]}, the "
                                              f"token claims {algorithm}")
    return kid, *found


def _time(claims: dict, name: str) -> float:
    value = claims[name]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or \
            not math.isfinite(value):
        raise AuthError(Reason.MALFORMED, f"the {name!r} claim must be a number")
    return float(value)


def verify(keys: KeyRing, token: str | None, *, max_lifetime_s: int,
           now: datetime | None = None, revoked: Container[str] = ()) -> Caller:
    """The caller a token authenticates; AuthError says why it does not."""
    if not token:
        raise AuthError(Reason.MISSING, "no bearer token")
    kid, algorithm, key = _header(token, keys)
    try:
        # Times are checked below against ``now``, which PyJWT cannot be given.
        claims = jwt.decode(token, key, algorithms=[algorithm], audience=AUDIENCE,
                            issuer=ISSUER, options={"require": list(CLAIMS), "verify_exp": False,
                                                    "verify_iat": False, "verify_nbf": False})
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(Reason.MISSING_CLAIMS, f"the token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidAudienceError:
        raise AuthError(Reason.WRONG_AUDIENCE, f"the token is not for {AUDIENCE!r}") from None
    except jwt.InvalidIssuerError:
        raise AuthError(Reason.WRONG_ISSUER, f"the token was not issued by {ISSUER!r}") from None
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
        raise AuthError(Reason.BAD_SIGNATURE, "the token's signature does not verify") from None
    except jwt.InvalidTokenError as exc:  # DecodeError and anything a newer PyJWT adds
        raise AuthError(Reason.MALFORMED, f"not a valid JWT: {exc}") from None
    at = _now(now).timestamp()
    issued, expires = _time(claims, "iat"), _time(claims, "exp")
    not_before = _time(claims, "nbf") if "nbf" in claims else issued
    if max(issued, not_before) > at + LEEWAY_S:
        raise AuthError(Reason.NOT_YET_VALID, "the token is not valid before "
                        f"{datetime.fromtimestamp(max(issued, not_before), timezone.utc).isoformat()}")
    if expires - issued > max_lifetime_s:
        raise AuthError(Reason.TOO_LONG, f"the token lives {expires - issued:.0f} s, over the "
                                         f"maximum of {max_lifetime_s} s")
    expires_at = datetime.fromtimestamp(expires, timezone.utc)
    if at >= expires:
        raise AuthError(Reason.EXPIRED, f"the token expired at {expires_at.isoformat()}")
    subject, jti = claims["sub"], claims["jti"]
    if not isinstance(subject, str) or not subject:
        raise AuthError(Reason.MALFORMED, "the 'sub' claim must be a non-empty string")
    if not isinstance(jti, str) or not jti:
        raise AuthError(Reason.MALFORMED, "the 'jti' claim must be a non-empty string")
    if jti in revoked:
        raise AuthError(Reason.REVOKED, f"token {jti} was revoked")
    raw = claims["roles"]
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise AuthError(Reason.MALFORMED, "the 'roles' claim must map channels to roles")
    try:
        roles = parse_roles(raw)
    except ValueError as exc:
        raise AuthError(Reason.MALFORMED, f"the 'roles' claim: {exc}") from None
    return Caller(subject, roles, expires_at, admin=claims.get("admin") is True, jti=jti,
                  kid=kid)
