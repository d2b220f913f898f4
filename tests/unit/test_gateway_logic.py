"""The gateway's pure parts: tokens, rate limit, field checks, cursors, and the protos
with their committed generated code. No servers needed."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
import pytest
from google.protobuf import descriptor_pb2
from typer.testing import CliRunner

from gateway import auth, cursor, validation
from gateway.auth import AuthError, Reason, Role
from gateway.describe import Transcript
from gateway.guard import Guard
from gateway.ratelimit import RateLimiter
from gateway.validation import InvalidField
from schemas import codec, codegen
from schemas.agora.v1 import (
    agents_pb2,
    analytics_pb2,
    chat_pb2,
    incidents_pb2,
    tools_pb2,
    votes_pb2,
)
from support.clock import Clock

KEY = "k" * 64  # an HS256 development secret
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
PRIVATE = {"keys": [auth.new_private_jwk("RS256", kid="rsa-1"),
                    auth.new_private_jwk("ES256", kid="ec-1")]}
RSA, EC = auth.Signer.from_jwks({"keys": PRIVATE["keys"][:1]}), auth.Signer.from_jwks(PRIVATE)
MAX_S = 900


@pytest.fixture(scope="module")
def ring(tmp_path_factory) -> auth.KeyRing:
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps(auth.public_jwks(PRIVATE)))
    return auth.KeyRing(str(path), auth.signing_key(KEY))


def _token(signer: auth.Signer = RSA, drop: str | None = None, alg: str | None = None,
           kid: str | None = "", **claims) -> str:
    """A token with the claims ``issue`` writes, changed by ``claims``, less ``drop``."""
    base = {"iss": auth.ISSUER, "aud": auth.AUDIENCE, "sub": "human:alice",
            "roles": {"general": "member"}, "iat": int(NOW.timestamp()),
            "exp": int(NOW.timestamp()) + 60, "jti": "j1"}
    base.update(claims)
    base.pop(drop, None)
    kid = signer.kid if kid == "" else kid
    return jwt.encode(base, signer.key, algorithm=alg or signer.algorithm,
                      headers={"kid": kid} if kid else None)


def _verify(ring, token, now: datetime = NOW, revoked=()) -> auth.Caller:
    return auth.verify(ring, token, max_lifetime_s=MAX_S, now=now, revoked=revoked)


def _reason(ring, token, now: datetime = NOW, revoked=()) -> Reason:
    with pytest.raises(AuthError) as caught:
        _verify(ring, token, now, revoked)
    message = str(caught.value)
    assert message.startswith(f"{caught.value.reason}: ") and message != f"{caught.value.reason}: "
    return caught.value.reason


# --- tokens ------------------------------------------------------------------------------

@pytest.mark.parametrize("signer", [RSA, EC, auth.Signer.hs256(KEY)], ids=["RS256", "ES256",
                                                                           "HS256-dev"])
def test_token_round_trip(ring, signer):
    token = auth.issue(signer, "human:alice", ["general", "ops:admin", "general:viewer"], 600,
                       now=NOW)
    caller = _verify(ring, token, now=NOW + timedelta(seconds=10))
    assert caller.subject == "human:alice" and caller.kid == signer.kid
    assert caller.roles == {"general": Role.MEMBER, "ops": Role.ADMIN}  # the highest kept
    assert caller.expires_at == NOW + timedelta(minutes=10) and not caller.admin
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(auth.CLAIMS) <= set(claims) and claims["nbf"] == claims["iat"]
    assert jwt.get_unverified_header(token)["kid"] == signer.kid
    again = auth.issue(signer, "human:alice", ["general"], 60, now=NOW)
    assert jwt.decode(again, options={"verify_signature": False})["jti"] != claims["jti"]


def test_roles_rank_viewer_member_admin(ring):
    caller = _verify(ring, auth.issue(RSA, "svc:bot", ["general", "*:viewer"], 60, now=NOW))
    assert caller.may("general", Role.MEMBER) and not caller.may("general", Role.ADMIN)
    assert caller.may("anything", Role.VIEWER) and not caller.may("anything", Role.MEMBER)
    admin = _verify(ring, auth.issue(RSA, "ops:root", [], 60, admin=True, now=NOW))
    assert admin.admin and admin.may("anything", Role.ADMIN)
    with pytest.raises(ValueError, match="unknown role"):
        auth.issue(RSA, "human:alice", ["general:owner"], 60)


def test_expiry_uses_the_given_now(ring):
    token = auth.issue(RSA, "human:alice", ["general"], 60, now=NOW)
    assert _verify(ring, token, now=NOW + timedelta(seconds=59)).subject == "human:alice"
    assert _reason(ring, token, now=NOW + timedelta(seconds=60)) is Reason.EXPIRED
    assert _reason(ring, token, now=NOW + timedelta(days=1)) is Reason.EXPIRED


def test_not_before_and_issued_at_in_the_future_are_refused_beyond_the_leeway(ring):
    at = int(NOW.timestamp())
    assert _verify(ring, _token(nbf=at + auth.LEEWAY_S)).subject
    assert _reason(ring, _token(nbf=at + auth.LEEWAY_S + 1)) is Reason.NOT_YET_VALID
    assert _reason(ring, _token(iat=at + 600, exp=at + 700)) is Reason.NOT_YET_VALID
    later = NOW + timedelta(seconds=600)
    assert _verify(ring, _token(iat=at + 600, exp=at + 700), now=later).subject


def test_a_lifetime_over_the_maximum_is_refused(ring):
    at = int(NOW.timestamp())
    assert _verify(ring, _token(exp=at + MAX_S)).subject
    assert _reason(ring, _token(exp=at + MAX_S + 1)) is Reason.TOO_LONG
    assert _reason(ring, _token(exp=at + 100 * 365 * 86400)) is Reason.TOO_LONG


def test_a_revoked_jti_is_refused(ring):
    assert _reason(ring, _token(jti="gone"), revoked={"gone"}) is Reason.REVOKED
    assert _verify(ring, _token(jti="kept"), revoked={"gone"}).jti == "kept"


def test_missing_token():
    for header in (None, "", "   "):
        with pytest.raises(AuthError) as caught:
            auth.from_authorization(header)
        assert caught.value.reason is Reason.MISSING


def test_missing_token_verifies_as_missing(ring):
    assert _reason(ring, None) is Reason.MISSING
    assert _reason(ring, "") is Reason.MISSING


def test_authorization_header():
    assert auth.from_authorization("Bearer abc.def.ghi") == "abc.def.ghi"
    assert auth.from_authorization("  bearer   abc.def.ghi ") == "abc.def.ghi"
    for header in ("Basic dXNlcjpwdw==", "Bearer", "Bearer   ", "abc.def.ghi"):
        with pytest.raises(AuthError) as caught:
            auth.from_authorization(header)
        assert caught.value.reason is Reason.MALFORMED, header


@pytest.mark.parametrize("token", ["abc", "a.b.c", "not a token at all", "eyJhbGciOi.x.y"])
def test_malformed_token(ring, token):
    assert _reason(ring, token) is Reason.MALFORMED


@pytest.mark.parametrize("claims", [{"roles": "general"}, {"roles": {"general": 1}},
                                    {"roles": {"no spaces": "member"}},
                                    {"roles": {"general": "owner"}}, {"sub": ""},
                                    {"exp": "soon"}, {"jti": 7}])
def test_malformed_claims(ring, claims):
    assert _reason(ring, _token(**claims)) is Reason.MALFORMED


def test_bad_signature(ring):
    impostor = auth.Signer.from_jwks({"keys": [auth.new_private_jwk(kid=RSA.kid)]})
    assert _reason(ring, _token(impostor)) is Reason.BAD_SIGNATURE
    header, payload, signature = auth.issue(RSA, "human:alice", ["general"], 60, now=NOW).split(".")
    forged = auth.issue(RSA, "human:alice", ["*:admin"], 60, now=NOW).split(".")[1]
    assert _reason(ring, f"{header}.{forged}.{signature}") is Reason.BAD_SIGNATURE


def test_algorithm_confusion_and_none_are_refused(ring):
    from cryptography.hazmat.primitives import serialization

    public = RSA.key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    body = jwt.utils.base64url_encode(json.dumps(
        {"iss": auth.ISSUER, "aud": auth.AUDIENCE, "sub": "human:eve", "roles": {"*": "admin"},
         "iat": int(NOW.timestamp()), "exp": int(NOW.timestamp()) + 60, "jti": "x"}).encode())

    def signed(alg: str, secret: bytes | None) -> str:
        head = jwt.utils.base64url_encode(json.dumps({"alg": alg, "kid": RSA.kid}).encode())
        mac = b"" if secret is None else jwt.utils.base64url_encode(
            hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
        return (head + b"." + body + b"." + mac).decode()

    assert _reason(ring, signed("HS256", public)) is Reason.BAD_ALGORITHM
    assert _reason(ring, signed("none", None)) is Reason.BAD_ALGORITHM
    assert _reason(ring, _token(auth.Signer.hs256(KEY), kid=RSA.kid)) is Reason.BAD_ALGORITHM
    assert _reason(ring, _token(RSA, alg="RS512")) is Reason.BAD_ALGORITHM


def test_unknown_or_missing_key_ids_are_refused(ring):
    assert _reason(ring, _token(kid="no-such-key")) is Reason.UNKNOWN_KEY
    assert _reason(ring, _token(kid=None)) is Reason.UNKNOWN_KEY


def test_hs256_only_when_a_development_secret_is_configured(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(auth.public_jwks(PRIVATE)))
    without = auth.KeyRing(str(path))
    token = auth.issue(auth.Signer.hs256(KEY), "human:alice", ["general"], 60, now=NOW)
    assert _reason(without, token) is Reason.UNKNOWN_KEY
    with pytest.raises(ValueError, match="no keys"):
        auth.KeyRing()


def test_rotation_keeps_old_keys_until_they_are_removed(tmp_path, monkeypatch):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(auth.public_jwks({"keys": PRIVATE["keys"][:1]})))
    keys = auth.KeyRing(str(path))
    old = auth.issue(RSA, "human:alice", ["general"], 60, now=NOW)
    new = auth.issue(EC, "human:alice", ["general"], 60, now=NOW)
    assert _reason(keys, new) is Reason.UNKNOWN_KEY
    path.write_text(json.dumps(auth.public_jwks(PRIVATE)))  # rotated: a key added
    monkeypatch.setattr(auth, "RELOAD_S", 0.0)
    assert _verify(keys, new).kid == EC.kid and _verify(keys, old).kid == RSA.kid
    path.write_text(json.dumps(auth.public_jwks({"keys": PRIVATE["keys"][1:]})))  # removed
    assert _reason(keys, old) is Reason.UNKNOWN_KEY
    assert _verify(keys, new).subject == "human:alice"


def test_the_guard_verifies_its_remembered_callers_again_when_the_keys_change(
        tmp_path, monkeypatch):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(auth.public_jwks({"keys": PRIVATE["keys"][:1]})))
    keys = auth.KeyRing(str(path))
    guard = Guard(keys, RateLimiter(100, 100), max_lifetime_s=MAX_S)
    token = auth.issue(RSA, "human:alice", ["general"], 60)
    assert guard._verify(token).subject == "human:alice"
    monkeypatch.setattr(auth, "RELOAD_S", 0.0)
    before = keys.version
    assert guard._verify(token).subject == "human:alice"  # re-read, the same keys: kept
    assert keys.version == before
    # The kid now names other key material: what the old key signed verifies no more.
    path.write_text(json.dumps(auth.public_jwks(
        {"keys": [auth.new_private_jwk("RS256", kid=RSA.kid)]})))
    with pytest.raises(AuthError) as caught:
        guard._verify(token)
    assert caught.value.reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize("claim", auth.CLAIMS)
def test_missing_claims(ring, claim):
    with pytest.raises(AuthError) as caught:
        _verify(ring, _token(drop=claim))
    assert caught.value.reason is Reason.MISSING_CLAIMS and repr(claim) in str(caught.value)


def test_short_hs256_keys_are_refused():
    for short in ("k" * 31, b"k" * 31, ""):
        with pytest.raises(ValueError, match="at least 32 bytes"):
            auth.Signer.hs256(short)
    assert auth.signing_key("é" * 16) == ("é" * 16).encode()  # bytes, not characters


def test_issue_checks_its_input():
    with pytest.raises(ValueError, match="at least one channel"):
        auth.issue(RSA, "human:alice", [], 60)
    with pytest.raises(InvalidField, match=r"^roles\[1\]"):
        auth.issue(RSA, "human:alice", ["general", "no spaces"], 60)
    with pytest.raises(InvalidField, match="^subject"):
        auth.issue(RSA, "alice@example.com", ["general"], 60)
    with pytest.raises(ValueError, match="ttl_s"):
        auth.issue(RSA, "human:alice", ["general"], 0)


# --- rate limit --------------------------------------------------------------------------

def test_bucket_allows_a_burst_then_says_how_long_to_wait():
    clock = Clock(1000.0)
    limiter = RateLimiter(rate_per_s=2, burst=3, clock=clock)
    assert [limiter.take("alice") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("alice") == pytest.approx(0.5)
    clock.now += 0.2
    assert limiter.take("alice") == pytest.approx(0.3)  # a refused request spends nothing
    assert limiter.take("bob") == 0  # buckets are per caller
    clock.now += 0.3
    assert limiter.take("alice") == 0
    assert limiter.take("alice") == pytest.approx(0.5)


def test_bucket_refills_up_to_the_burst_only():
    clock = Clock(1000.0)
    limiter = RateLimiter(rate_per_s=10, burst=5, clock=clock)
    for _ in range(5):
        limiter.take("alice")
    clock.now += 0.25  # 2.5 tokens back
    assert [limiter.take("alice") for _ in range(3)][:2] == [0, 0]
    clock.now += 3600
    assert [limiter.take("alice") for _ in range(6)] == [0] * 5 + [pytest.approx(0.1)]


def test_limits_must_be_positive():
    for rate_per_s, burst, max_callers in ((0, 1, 1), (1, 0, 1), (1, 1, 0)):
        with pytest.raises(ValueError):
            RateLimiter(rate_per_s=rate_per_s, burst=burst, max_callers=max_callers)


def test_idle_callers_are_forgotten_losslessly():
    clock = Clock(1000.0)
    limiter = RateLimiter(rate_per_s=1, burst=2, clock=clock)
    limiter.take("alice")
    limiter.take("alice")
    clock.now += 1
    limiter.take("bob")
    assert len(limiter) == 2  # alice is refilling: still tracked
    clock.now += 1  # alice's bucket is full again: the same as a fresh one
    limiter.take("carol")
    assert len(limiter) == 2
    assert [limiter.take("alice") for _ in range(3)] == [0, 0, pytest.approx(1)]


def test_memory_is_bounded_by_least_recent_eviction():
    clock = Clock(1000.0)
    limiter = RateLimiter(rate_per_s=1, burst=1, max_callers=2, clock=clock)
    limiter.take("alice")
    limiter.take("bob")
    limiter.take("alice")  # refused, but alice is now the most recent
    limiter.take("carol")  # bob, least recently seen, is forgotten
    assert len(limiter) == 2
    assert limiter.take("alice") == pytest.approx(1)  # still tracked, still empty
    assert limiter.take("bob") == 0  # forgotten: a fresh bucket


# --- field checks -------------------------------------------------------------------------

def _invalid(check, *args) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        check(*args)
    assert str(caught.value) == f"{caught.value.field}: {caught.value.reason}"
    return caught.value


@pytest.mark.parametrize("good", ["general", "c-general", "human:maya", "agora.tools", "a",
                                  "Team_42", "x" * 128])
def test_ids_accepted(good):
    assert validation.channel_id(good) == good
    assert validation.agent_id(good) == good


@pytest.mark.parametrize("bad", ["", " general", "gen eral", "-general", "a@w1", "a|b", "a/b",
                                 "*", "générale", "x" * 129, "quote'", "new\nline"])
def test_ids_refused(bad):
    assert _invalid(validation.channel_id, bad).field == "channel_id"
    assert _invalid(validation.agent_id, bad, "mentions[3]").field == "mentions[3]"


def test_text_uses_the_relevance_limit():
    from streams.domain.relevance.messages import MAX_TEXT, InvalidMessage, validate

    assert validation.text("hello") == "hello"
    assert validation.text("x" * MAX_TEXT) == "x" * MAX_TEXT
    for bad in ("", "  \n\t", "x" * (MAX_TEXT + 1)):
        assert _invalid(validation.text, bad).field == "text"
        with pytest.raises(InvalidMessage):  # what the gateway refuses, relevance would too
            validate({"text": bad})
    assert str(MAX_TEXT) in _invalid(validation.text, "x" * (MAX_TEXT + 1)).reason


def test_idempotency_key():
    for good in ("550e8400-e29b-41d4-a716-446655440000", "k", "client:retry.7_x", "k" * 128):
        assert validation.idempotency_key(good) == good
    assert "required" in _invalid(validation.idempotency_key, "").reason
    for bad in ("k" * 129, "has space", "ключ", "a/b"):
        assert _invalid(validation.idempotency_key, bad).field == "idempotency_key"


def test_page_size():
    assert validation.page_size(0) == validation.DEFAULT_PAGE_SIZE == 50
    assert validation.page_size(7) == 7
    assert validation.page_size(10_000) == validation.MAX_PAGE_SIZE == 500
    assert _invalid(validation.page_size, -1).field == "page_size"


def test_mentions():
    assert validation.mentions(["b", "a", "b"]) == ["b", "a"]
    assert _invalid(validation.mentions, ["ok", "not ok"]).field == "mentions[1]"
    too_many = [f"a{i}" for i in range(validation.MAX_MENTIONS + 1)]
    assert _invalid(validation.mentions, too_many).field == "mentions"


def test_metadata():
    assert validation.metadata({"client": "cli", "trace_id": "t1"}) == {"client": "cli",
                                                                       "trace_id": "t1"}
    assert _invalid(validation.metadata, {"": "x"}).field == "metadata"
    assert _invalid(validation.metadata, {"k" * 65: "x"}).field == "metadata"
    assert _invalid(validation.metadata, {"note": "x" * 1025}).field == "metadata[note]"
    many = {f"k{i}": "v" for i in range(validation.MAX_METADATA_ENTRIES + 1)}
    assert _invalid(validation.metadata, many).field == "metadata"


@pytest.mark.parametrize("key", ["vote_id", "kind", "options", "tool_request_id"])
def test_metadata_the_platform_reads_is_refused_from_people(key):
    from streams.domain.relevance.messages import InvalidMessage, validate

    error = _invalid(validation.metadata, {key: "x", "client": "cli"})
    assert error.field == f"metadata[{key}]" and "reserved" in error.reason
    person = {"text": "vote yes", "author_kind": "HUMAN", "metadata": {key: "x"}}
    with pytest.raises(InvalidMessage, match="reserved"):  # a raw producer's copy too
        validate(person)
    validate({**person, "author_kind": "SYSTEM"})  # the platform's own notices


# --- cursors ------------------------------------------------------------------------------

def test_cursor_round_trip():
    offsets = {("agora.chat.messages", 2): 41, ("agora.votes", 0): 7, ("agora.votes", 3): 0,
               ("agora.vote.results", 1): 12}
    text = cursor.encode("general", offsets)
    assert text.startswith("c1.") and "=" not in text
    assert cursor.decode(text, "general") == offsets
    assert cursor.encode("general", dict(reversed(offsets.items()))) == text  # deterministic


def test_cursor_of_another_channel():
    text = cursor.encode("general", {("agora.chat.messages", 0): 1})
    assert "another channel" in _invalid(cursor.decode, text, "random").reason


@pytest.mark.parametrize("payload", [
    b'{"c":"general","o":{"agora.nope":{"0":1}}}',
    b'{"c":"general","o":{"agora.votes":{"0":-1}}}',
    b'{"c":"general","o":{"agora.votes":{"x":1}}}',
    b'{"c":"general","o":{"agora.votes":{"0":true}}}',
    b'{"c":"general","o":{"agora.votes":{"0":1.5}}}',
    b'{"c":"general","o":[]}',
    b'["general"]',
    b"not json",
])
def test_cursor_refused(payload):
    import base64

    forged = "c1." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    assert _invalid(cursor.decode, forged, "general").reason == "is not a cursor from StreamChannel"


def test_cursor_garbage_and_size():
    for text in ("", "abc", "c1.***", "c2.e30", "c1.e30="):
        assert _invalid(cursor.decode, text, "general").field == "cursor"
    huge = "c1." + "A" * cursor.MAX_LENGTH
    assert "at most" in _invalid(cursor.decode, huge, "general").reason


def test_history_page_tokens():
    from gateway.chat import _after_token, _page_token

    assert _after_token(_page_token(NOW, "m-1")) == (NOW, "m-1")
    for bad in ("", "***", cursor.b64json({"a": 1}), cursor.b64json(["soon", "m-1"])):
        assert _invalid(_after_token, bad).field == "page_token"


# --- protos and generated code -----------------------------------------------------------

def test_generated_code_is_up_to_date(tmp_path):
    codegen.generate(tmp_path)
    fresh = {p.name: p.read_text() for p in (tmp_path / codegen.PACKAGE_DIR).iterdir()}
    committed_dir = codegen.OUTPUT_ROOT / codegen.PACKAGE_DIR
    committed = {p.name: p.read_text()
                 for pattern in codegen.GENERATED for p in committed_dir.glob(pattern)}
    assert len(fresh) == 3 * len(codegen.protos()) == 24
    differ = sorted(n for n in fresh.keys() | committed.keys() if fresh.get(n) != committed.get(n))
    assert not differ, f"schemas/agora/v1 is stale, run `python -m schemas.codegen`: {differ}"


def test_codegen_replaces_stale_files_and_keeps_the_package(tmp_path):
    target = tmp_path / codegen.PACKAGE_DIR
    target.mkdir(parents=True)
    (target / "__init__.py").write_text("")
    (target / "removed_pb2.py").write_text("")
    written = codegen.generate(tmp_path)
    assert not (target / "removed_pb2.py").exists() and (target / "__init__.py").exists()
    assert {p.name for p in written} == {p.name for p in target.iterdir()} - {"__init__.py"}
    for path in written:
        assert "from agora" not in path.read_text()


def test_services_and_their_methods():
    want = {
        chat_pb2: {"ChatService": {"PostMessage": False, "StreamChannel": True, "History": False,
                                   "RateReply": False}},
        incidents_pb2: {"IncidentService": {
            "ListIncidents": False, "GetIncident": False, "Acknowledge": False,
            "Resolve": False, "StreamIncidents": True}},
        agents_pb2: {"AgentService": dict.fromkeys(
            ["CreateAgent", "GetAgent", "ListAgents", "UpdateAgent", "PauseAgent",
             "ResumeAgent"], False)},
        votes_pb2: {"VoteService": dict.fromkeys(["StartVote", "CastBallot", "GetVote"], False)},
        tools_pb2: {"ToolService": dict.fromkeys(["ListTools", "RequestTool"], False)},
        analytics_pb2: {"AnalyticsService": dict.fromkeys(["ListQueries", "RunQuery"], False)},
    }
    for module, services in want.items():
        assert module.DESCRIPTOR.package == "agora.v1"
        assert module.DESCRIPTOR.name.startswith("agora/v1/")
        found = {name: {m.name: m.server_streaming for m in s.methods}
                 for name, s in module.DESCRIPTOR.services_by_name.items()}
        assert found == services
        [service] = services
        stubs = importlib.import_module(f"{module.__name__}_grpc")
        assert hasattr(stubs, f"{service}Stub")
        assert hasattr(stubs, f"add_{service}Servicer_to_server")
    for request in (chat_pb2.PostMessageRequest, tools_pb2.RequestToolRequest,
                    votes_pb2.StartVoteRequest, votes_pb2.CastBallotRequest):
        assert "idempotency_key" in request.DESCRIPTOR.fields_by_name


def test_channel_events_carry_one_event_and_a_cursor():
    event = chat_pb2.ChannelEvent(cursor="c1.x", message=chat_pb2.ChatMessage(text="hi"))
    event.vote_update.closed.outcome = votes_pb2.VOTE_OUTCOME_PASSED  # replaces the message
    assert event.WhichOneof("event") == "vote_update" and not event.HasField("message")
    assert {f.name for f in chat_pb2.ChannelEvent.DESCRIPTOR.oneofs_by_name["event"].fields} == {
        "message", "relevance", "tool_result", "vote_update", "reply_chunk"}
    start = chat_pb2.StreamChannelRequest.DESCRIPTOR.oneofs_by_name["start"]
    assert {f.name for f in start.fields} == {"cursor", "start_time"}
    request = chat_pb2.StreamChannelRequest.FromString(
        chat_pb2.StreamChannelRequest(channel_id="general", cursor="c1.x").SerializeToString())
    assert request.WhichOneof("start") == "cursor"


def test_reply_chunks_convert_from_their_event():
    from gateway.chat import channel_event
    from gateway.tail import Item
    from streams.domain.responder.partial import chunk

    task, message = {"event_id": str(uuid.uuid4()), "channel_id": "eng"}, {
        "event_id": str(uuid.uuid4()), "thread_id": "t-1"}
    record = codec.decode(codec.encode("ReplyChunk", chunk(task, message, "dev", 2, 7, "lo")))[1]
    event = channel_event(Item("agora.chat.replies.partial", 0, 5, 1, "ReplyChunk", record),
                          {("agora.chat.replies.partial", 0): 6})
    c = event.reply_chunk
    assert (c.message_id, c.task_id, c.agent_id, c.reply_to, c.thread_id) == (
        record["message_id"], task["event_id"], "dev", message["event_id"], "t-1")
    assert (c.seq, c.offset, c.text) == (2, 7, "lo") and event.cursor
    deadline = Item("agora.votes", 0, 5, 1, "VoteDeadline", {"vote_id": "v"})  # not shown
    assert channel_event(deadline, {("agora.votes", 0): 6}) is None


def _event(kind: str, **fields) -> chat_pb2.ChannelEvent:
    event = chat_pb2.ChannelEvent()
    event.time.FromSeconds(3600)
    getattr(event, kind).CopyFrom(getattr(chat_pb2, {
        "reply_chunk": "ReplyChunk", "message": "ChatMessage",
        "relevance": "RelevanceSummary"}[kind])(**fields))
    return event


def _piece(message_id: str, offset: int, text: str, seq: int = 0) -> chat_pb2.ChannelEvent:
    return _event("reply_chunk", message_id=message_id, agent_id="dev", reply_to="question1",
                  offset=offset, text=text, seq=seq)


def _reply(message_id: str, text: str) -> chat_pb2.ChannelEvent:
    return _event("message", message_id=message_id, author_id="dev", reply_to="question1",
                  text=text)


def test_a_transcript_grows_a_reply_on_its_line_and_the_message_ends_it():
    t = Transcript()
    out = [t.feed(_piece("r1", 0, "Hel")), t.feed(_piece("r1", 3, "lo")), t.feed(_reply("r1", "Hello"))]
    assert "".join(out) == "01:00:00 dev ↳question: Hello\n"
    assert t.feed(_piece("r1", 5, " late")) == ""  # a chunk trailing its message


def test_a_transcript_goes_on_after_a_cut_and_prints_a_different_message_whole():
    t = Transcript()
    text = t.feed(_piece("r1", 0, "Hel"))
    text += t.feed(_reply("other", "meanwhile"))  # another event cuts the line
    text += t.feed(_piece("r1", 3, "lo"))  # the reply goes on, on a new line
    text += t.feed(_reply("r1", "Hello"))  # streamed whole already: not printed again
    assert text.splitlines() == ["01:00:00 dev ↳question: Hel", "01:00:00 dev ↳question: meanwhile",
                                 "01:00:00 dev ↳question: …lo"]
    text = t.feed(_piece("r2", 0, "Hi")) + t.feed(_reply("r2", "Hi there"))
    assert text.splitlines() == ["01:00:00 dev ↳question: Hi", "01:00:00 dev ↳question: Hi there"]


def test_a_transcript_explains_decisions_when_asked():
    event = _event("relevance", message_id="question1", selected=["dev"], scores=[
        chat_pb2.AgentScore(agent_id="dev", score=0.52, expertise=0.43, workload=1, timing=1,
                            quality=0.7, selected=True, reason="score 0.52 >= threshold 0.41 "
                            "(expertise 0.43, workload 1.00, social 0.00, timing 1.00, quality 0.70)")])
    assert Transcript().feed(event) == "01:00:00 relevance question: dev 0.52 (score 0.52 >= " \
        "threshold 0.41 (expertise 0.43, workload 1.00, social 0.00, timing 1.00, quality 0.70))\n"
    assert Transcript(explain=lambda r: r.message_id == "question1").feed(event).splitlines() == [
        "01:00:00 relevance question: dev selected",
        "  * dev                 0.52  expertise 0.43 workload 1.00 social 0.00 timing 1.00 "
        "quality 0.70  score 0.52 >= threshold 0.41"]


def test_a_transcript_starts_over_when_the_generation_restarts():
    t = Transcript()
    text = t.feed(_piece("r1", 0, "Hel")) + t.feed(_piece("r1", 0, "Hi", seq=1))
    text += t.feed(_piece("r1", 2, " all", seq=2)) + t.feed(_reply("r1", "Hi all"))
    # The restart starts a new line, which the finished message then ends.
    assert text.splitlines() == ["01:00:00 dev ↳question: Hel", "01:00:00 dev ↳question: Hi all"]


def test_enums_mirror_the_avro_schemas():
    import json
    from pathlib import Path

    avro = Path(__file__).resolve().parents[2] / "schemas" / "avro"

    def symbols(schema: str, field: str) -> list[str]:
        fields = json.loads((avro / f"{schema}.avsc").read_text())["fields"]
        return next(f["type"]["symbols"] for f in fields if f["name"] == field)

    pairs = [(chat_pb2.AuthorKind, "AUTHOR_KIND_", "ChatMessage", "author_kind"),
             (agents_pb2.AgentState, "AGENT_STATE_", "AgentProfile", "state"),
             (tools_pb2.ToolStatus, "TOOL_STATUS_", "ToolResult", "status"),
             (votes_pb2.VoteType, "VOTE_TYPE_", "VoteProposal", "vote_type"),
             (votes_pb2.VoteStrategy, "VOTE_STRATEGY_", "VoteProposal", "strategy"),
             (votes_pb2.VoteOutcome, "VOTE_OUTCOME_", "VoteResult", "outcome"),
             (votes_pb2.BallotRejectReason, "BALLOT_REJECT_REASON_", "BallotRejected", "reason")]
    for enum, prefix, schema, field in pairs:
        names = [n.removeprefix(prefix) for n in enum.keys()]
        assert names == ["UNSPECIFIED", *symbols(schema, field)], enum


def test_every_proto_element_is_documented(tmp_path):
    """The comments are the API's public documentation: none may be missing."""
    codegen.descriptor_set(tmp_path / "set.pb")
    files = descriptor_pb2.FileDescriptorSet.FromString((tmp_path / "set.pb").read_bytes()).file
    assert sorted(f.name for f in files) == sorted(
        f"agora/v1/{p.name}" for p in codegen.protos())
    undocumented = []
    for f in files:
        documented = {tuple(loc.path) for loc in f.source_code_info.location
                      if loc.leading_comments.strip()}
        for path, name in _elements(f):
            if path not in documented:
                undocumented.append(f"{f.name}: {name}")
    assert not undocumented, undocumented


def _elements(f: descriptor_pb2.FileDescriptorProto):
    """(source path, name) of every message, field, real oneof, enum, enum value,
    service and method (descriptor.proto's field numbers make the paths)."""
    def enum(path, e, prefix):
        yield path, f"{prefix}{e.name}"
        for j, v in enumerate(e.value):
            yield path + (2, j), f"{prefix}{e.name}.{v.name}"

    def message(path, m, prefix):
        name = f"{prefix}{m.name}"
        yield path, name
        for j, field in enumerate(m.field):
            yield path + (2, j), f"{name}.{field.name}"
        for j, oneof in enumerate(m.oneof_decl):
            if not any(x.proto3_optional and x.oneof_index == j for x in m.field):
                yield path + (8, j), f"{name}.{oneof.name}"
        for j, nested in enumerate(m.nested_type):
            if not nested.options.map_entry:  # map<> entries are synthesized
                yield from message(path + (3, j), nested, f"{name}.")
        for j, e in enumerate(m.enum_type):
            yield from enum(path + (4, j), e, f"{name}.")

    for i, m in enumerate(f.message_type):
        yield from message((4, i), m, "")
    for i, e in enumerate(f.enum_type):
        yield from enum((5, i), e, "")
    for i, s in enumerate(f.service):
        yield (6, i), s.name
        for j, method in enumerate(s.method):
            yield (6, i, 2, j), f"{s.name}.{method.name}"


# --- agora token issue -------------------------------------------------------------------

@pytest.fixture
def cli(monkeypatch, tmp_path):
    from ops import cli as commands

    # configure() would bind structlog to CliRunner's stderr, closed after the call.
    monkeypatch.setattr(commands, "configure", lambda settings: None)
    for key in [k for k in os.environ if k.startswith("AGORA_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no ./.agora of a developer's stack leaks in
    runner = CliRunner()
    return lambda *args, **env: runner.invoke(commands.app, list(args), env=env)


@pytest.fixture
def keys_file(tmp_path) -> Path:
    path = tmp_path / "signing-keys.json"
    path.write_text(json.dumps(PRIVATE))
    return path


def test_token_issue_prints_a_token_that_verifies(cli, keys_file, ring):
    result = cli("token", "issue", "human:alice", "--channel", "general", "-c", "ops:admin",
                 "--ttl-s", "120", AGORA_GATEWAY_SIGNING_KEYS=str(keys_file))
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert "\n" not in token  # stdout is the token alone; the summary goes to stderr
    assert "human:alice" in result.stderr and "general (member), ops (admin)" in result.stderr
    caller = auth.verify(ring, token, max_lifetime_s=MAX_S)
    assert (caller.subject, caller.kid) == ("human:alice", EC.kid)  # the last key signs
    assert caller.roles == {"general": Role.MEMBER, "ops": Role.ADMIN}
    remaining = caller.expires_at - datetime.now(timezone.utc)
    assert timedelta(seconds=100) < remaining <= timedelta(seconds=120)


def test_token_issue_defaults_its_lifetime_from_the_settings(cli, ring):
    result = cli("token", "issue", "svc:dashboard", "-c", "*:viewer", AGORA_GATEWAY_JWT_KEY=KEY,
                 AGORA_GATEWAY_TOKEN_TTL_S="600")
    caller = auth.verify(ring, result.stdout.strip(), max_lifetime_s=MAX_S)
    assert caller.may_access("any-channel") and caller.kid == auth.DEV_KID
    remaining = caller.expires_at - datetime.now(timezone.utc)
    assert timedelta(seconds=590) < remaining <= timedelta(seconds=600)


def test_token_issue_errors(cli, keys_file):
    no_key = cli("token", "issue", "human:alice", "-c", "general")
    assert no_key.exit_code == 1 and "AGORA_GATEWAY_SIGNING_KEYS" in no_key.stderr
    assert not no_key.stdout
    short = cli("token", "issue", "human:alice", "-c", "general", AGORA_GATEWAY_JWT_KEY="short")
    assert short.exit_code == 1 and "at least 32 bytes" in short.stderr
    keys = {"AGORA_GATEWAY_SIGNING_KEYS": str(keys_file)}
    bad_channel = cli("token", "issue", "human:alice", "-c", "a b", **keys)
    assert bad_channel.exit_code == 1 and "roles[0]" in bad_channel.stderr
    no_channel = cli("token", "issue", "human:alice", **keys)
    assert no_channel.exit_code == 2 and "--channel" in no_channel.output
    too_long = cli("token", "issue", "human:alice", "-c", "general", "--ttl-s", "3600", **keys)
    assert too_long.exit_code == 2 and "AGORA_GATEWAY_TOKEN_MAX_S" in too_long.output


def test_rotate_and_remove_keys(cli, keys_file):
    keys = {"AGORA_GATEWAY_SIGNING_KEYS": str(keys_file)}
    added = cli("token", "rotate-key", **keys)
    assert added.exit_code == 0, added.output
    kid = added.stdout.strip()
    private = json.loads(keys_file.read_text())
    assert [k["kid"] for k in private["keys"]] == [RSA.kid, EC.kid, kid]
    assert keys_file.stat().st_mode & 0o777 == 0o600
    public = json.loads((keys_file.parent / "jwks.json").read_text())
    assert [k["kid"] for k in public["keys"]] == [RSA.kid, EC.kid, kid]
    assert not any("d" in k for k in public["keys"])  # no private part is published
    assert cli("token", "remove-key", RSA.kid, **keys).exit_code == 0
    assert [k["kid"] for k in json.loads(keys_file.read_text())["keys"]] == [EC.kid, kid]


def test_vote_start_refuses_an_unknown_type(cli):
    result = cli("vote", "start", "Ship it?", "-c", "general", "--type", "POLL")
    assert result.exit_code == 2 and "RESOURCE_ALLOCATION" in result.output


def test_times_that_are_not_finite_are_malformed(ring):
    assert _reason(ring, _token(iat=float("nan"), exp=2.5e11)) is Reason.MALFORMED
    assert _reason(ring, _token(exp=float("inf"))) is Reason.MALFORMED


def test_an_unreadable_jwks_keeps_the_last_good_keys(tmp_path, monkeypatch):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(auth.public_jwks(PRIVATE)))
    keys = auth.KeyRing(str(path))
    path.write_text("{ not json")
    monkeypatch.setattr(auth, "RELOAD_S", 0.0)
    assert _verify(keys, _token()).kid == RSA.kid
