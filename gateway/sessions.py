"""Sessions: refresh tokens and revoked access tokens, kept in Postgres, and the
AuthService that redeems and revokes them.

A refresh token is 32 random bytes (URL-safe text) shown once; only its SHA-256 is
stored. Redeeming one spends it and issues the next of its family; redeeming a spent
one means a copy leaked, so the whole family is revoked. Revoked access tokens (by
jti) are refused by every gateway: each reloads the deny-list every few seconds, and
the one that revokes refuses the token at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import grpc
import psycopg
import structlog

from gateway.auth import AuthError, Reason, Role, Signer, issue, parse_roles
from gateway.guard import caller
from ops.core.errors import Denied, Unavailable
from schemas.agora.v1 import auth_pb2, auth_pb2_grpc
from schemas.convert import timestamp

log = structlog.get_logger("agora.gateway")
RELOAD_S = 2.0


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """Who a refresh token was issued to, and with what rights."""
    subject: str
    roles: dict[str, Role]
    admin: bool


def _insert(conn: psycopg.Connection, grant: Grant, ttl_s: int, family: uuid.UUID,
            now: datetime) -> tuple[str, datetime]:
    token, expires = secrets.token_urlsafe(32), now + timedelta(seconds=ttl_s)
    conn.execute("INSERT INTO auth_refresh_tokens (token_sha256, family_id, subject, roles, "
                 "admin, issued_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 (_digest(token), family, grant.subject,
                  json.dumps({c: r.name.lower() for c, r in grant.roles.items()}), grant.admin,
                  now, expires))
    return token, expires


class TokenStore:
    """Refresh tokens and the jti deny-list in Postgres (blocking calls)."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, connect_timeout=5)

    def new_refresh(self, grant: Grant, ttl_s: int, now: datetime | None = None
                    ) -> tuple[str, datetime]:
        """A refresh token of a new family, and its expiry."""
        with self._connect() as conn:
            return _insert(conn, grant, ttl_s, uuid.uuid4(), now or datetime.now(timezone.utc))

    def redeem(self, token: str, ttl_s: int, now: datetime | None = None
               ) -> tuple[Grant, str, datetime]:
        """Spend ``token``: its grant and the next refresh token. AuthError when it is
        unknown, expired or revoked; a spent token revokes its family first."""
        now = now or datetime.now(timezone.utc)
        with self._connect() as conn:
            row = conn.execute(
                "SELECT family_id, subject, roles, admin, expires_at, spent_at, revoked_at "
                "FROM auth_refresh_tokens WHERE token_sha256 = %s FOR UPDATE",
                (_digest(token),)).fetchone()
            if row is None:
                raise AuthError(Reason.BAD_SIGNATURE, "unknown refresh token")
            family, subject, roles, admin, expires, spent, revoked = row
            if revoked is not None:
                raise AuthError(Reason.REVOKED, "this refresh token was revoked")
            if spent is not None:
                conn.execute("UPDATE auth_refresh_tokens SET revoked_at = %s "
                             "WHERE family_id = %s AND revoked_at IS NULL", (now, family))
                conn.commit()
                log.warning("gateway.refresh_reused", subject=subject, family=str(family))
                raise AuthError(Reason.REVOKED, "this refresh token was already used: every "
                                                "token of its family is now revoked")
            if expires <= now:
                raise AuthError(Reason.EXPIRED, f"the refresh token expired at {expires:%c}")
            conn.execute("UPDATE auth_refresh_tokens SET spent_at = %s WHERE token_sha256 = %s",
                         (now, _digest(token)))
            grant = Grant(subject, parse_roles(roles), admin)
            nxt, nxt_expires = _insert(conn, grant, ttl_s, family, now)
        return grant, nxt, nxt_expires

    def revoke_family(self, token: str, subject: str | None,
                      now: datetime | None = None) -> int:
        """Revoke the family of ``token`` (only ``subject``'s, unless None); how many
        tokens were still live."""
        with self._connect() as conn:
            row = conn.execute("SELECT family_id, subject FROM auth_refresh_tokens "
                               "WHERE token_sha256 = %s", (_digest(token),)).fetchone()
            if row is None or (subject is not None and row[1] != subject):
                return 0
            done = conn.execute("UPDATE auth_refresh_tokens SET revoked_at = %s WHERE "
                                "family_id = %s AND revoked_at IS NULL",
                                (now or datetime.now(timezone.utc), row[0]))
            return done.rowcount

    def revoke(self, jti: str, expires_at: datetime, reason: str) -> None:
        with self._connect() as conn:
            conn.execute("INSERT INTO auth_revoked_tokens (jti, expires_at, reason) "
                         "VALUES (%s, %s, %s) ON CONFLICT (jti) DO NOTHING",
                         (jti, expires_at, reason))

    def revoked(self) -> set[str]:
        """The jtis revoked and not expired yet."""
        with self._connect() as conn:
            rows = conn.execute("SELECT jti FROM auth_revoked_tokens WHERE expires_at > now()")
            return {jti for (jti,) in rows}


class RevokedTokens:
    """The deny-list as the guard reads it: a set, reloaded in the background."""

    def __init__(self, store: TokenStore):
        self.store = store
        self.jtis: set[str] = set()

    def __contains__(self, jti: object) -> bool:
        return jti in self.jtis

    async def follow(self) -> None:
        while True:
            try:
                self.jtis = await asyncio.to_thread(self.store.revoked)
            except psycopg.Error as exc:  # keeps the last list while Postgres is away
                log.warning("gateway.revocations_unavailable", error=str(exc))
            await asyncio.sleep(RELOAD_S)


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, store: TokenStore, revoked: RevokedTokens, signer: Signer | None, *,
                 access_ttl_s: int, refresh_ttl_s: int, max_lifetime_s: int):
        self.store, self.revoked, self.signer = store, revoked, signer
        self.access_ttl_s, self.refresh_ttl_s = access_ttl_s, refresh_ttl_s
        self.max_lifetime_s = max_lifetime_s

    async def _call(self, method, *args):
        try:
            return await asyncio.to_thread(method, *args)
        except psycopg.Error as exc:
            raise Unavailable(f"token store: {exc}") from exc

    async def Refresh(self, request, context):
        # Outside the guard (no bearer token): refusals are answered here.
        if self.signer is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this gateway has no signing "
                                "key (AGORA_GATEWAY_SIGNING_KEYS)")
        try:
            grant, refresh, refresh_expires = await asyncio.to_thread(
                self.store.redeem, request.refresh_token, self.refresh_ttl_s)
        except AuthError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except psycopg.Error as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"token store: {exc}")
        now = datetime.now(timezone.utc)
        ttl = min(self.access_ttl_s, self.max_lifetime_s)
        access = issue(self.signer, grant.subject,
                       {c: r.name.lower() for c, r in grant.roles.items()}, ttl,
                       admin=grant.admin, now=now)
        return auth_pb2.TokenPair(
            access_token=access, access_expires_at=timestamp(now + timedelta(seconds=ttl)),
            refresh_token=refresh, refresh_expires_at=timestamp(refresh_expires))

    async def Revoke(self, request, context):
        who = caller()
        jti = request.jti or who.jti
        if jti != who.jti and not who.admin:
            raise Denied(f"{who.subject} may revoke only its own token (or be admin)")
        expires = who.expires_at if jti == who.jti else \
            datetime.now(timezone.utc) + timedelta(seconds=self.max_lifetime_s)
        await self._call(self.store.revoke, jti, expires, request.reason[:500])
        self.revoked.jtis.add(jti)  # refused here at once, elsewhere within RELOAD_S
        families = 0
        if request.refresh_token:
            families = await self._call(self.store.revoke_family, request.refresh_token,
                                        None if who.admin else who.subject)
        log.info("gateway.revoked", jti=jti, by=who.subject, refresh_tokens=families)
        return auth_pb2.RevokeResponse(jti=jti, refresh_tokens_revoked=families)
