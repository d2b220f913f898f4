"""The rules of the knowledge base's documents, for the gateway and the knowledge agent
alike: what names a document, which KnowledgeDocument events are acceptable (a raw
producer's included), and what an event does to the document as it stands."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from schemas.events import KnowledgeDocument
from schemas.ids import IDENTIFIER, derived_id
from streams.domain.knowledge.extract import BadDocument

MAX_SOURCE = 500  # characters of a source name
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
WORKSPACE = "*"  # the scope of documents for every channel, as in tokens

Plan = Literal["ingest", "unchanged", "remove", "stale"]


def document_id(channel_id: str | None, source: str) -> str:
    """One id per scope and source name: a second add under the name is a new version."""
    return derived_id("knowledge", channel_id or WORKSPACE, source)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check(event: KnowledgeDocument, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """BadDocument unless the event is one the knowledge agent can apply as it says."""
    channel, source, content = event["channel_id"], event["source"], event["content"]
    if event["action"] not in ("ADD", "REMOVE"):
        raise BadDocument(f"unknown action {event['action']}")
    if channel is not None and not IDENTIFIER.fullmatch(channel):
        raise BadDocument(f"channel_id {channel[:140]!r} is not a channel id")
    if not source.strip() or len(source) > MAX_SOURCE or not source.isprintable():
        raise BadDocument(f"source must be a printable name of 1 to {MAX_SOURCE} characters")
    if event["document_id"] != document_id(channel, source):
        # Forged or stale ids would let one scope overwrite another's documents.
        raise BadDocument(f"document_id {event['document_id'][:80]!r} is not the id of "
                          f"source {source[:80]!r} in {channel or 'the workspace'}")
    if event["action"] == "REMOVE":
        if content is not None:
            raise BadDocument("a REMOVE carries no content")
        return
    if content is None:
        raise BadDocument("an ADD needs the document's content")
    if len(content) > max_bytes:
        raise BadDocument(f"the document is {len(content) / 2**20:.1f} MiB; the limit is "
                          f"{max_bytes / 2**20:.1f} MiB (AGORA_KNOWLEDGE_MAX_BYTES)")
    given = event.get("content_sha256")
    if given is not None and given.lower() != sha256(content):
        raise BadDocument("content_sha256 does not match the content (truncated or altered "
                          "on the way)")


def plan(current: dict | None, event: KnowledgeDocument) -> Plan:
    """What to do with a checked event, given the document's row (None when new): its
    status, event_id, changed_at, content_sha256, title, media_type.

    Events apply in event time: one older than the document's last change is ``stale``
    (a late copy never revives a removed document); the same event again (a replay)
    applies again, idempotently. Adding the content and title that are there already
    changes nothing."""
    at: datetime = event["created_at"]
    if current is not None and at < current["changed_at"]:
        return "stale"
    if event["action"] == "REMOVE":
        return "remove"
    assert event["content"] is not None  # check() passed
    same = current is not None and current["status"] == "active" and \
        current["content_sha256"] == sha256(event["content"]) and \
        (event["title"] is None or event["title"] == current["title"])
    return "unchanged" if same else "ingest"
