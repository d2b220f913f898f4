"""The knowledge base on the real stack: documents through the stack's gateway (TLS, RS256
tokens), ingested by a worker through Triton into pgvector, searched, cited by an agent's
reply, replaced and removed; scopes; bad documents from the gateway and from raw Kafka
producers."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import psycopg
import pytest

from conftest import run_agora
from gateway import auth
from gateway.client import Client
from gateway.registry import Registry
from gateway.server import signer
from gateway.tls import channel_credentials
from ops.core.kafka import ensure_topics
from schemas import codec
from schemas.agora.v1 import knowledge_pb2
from schemas.topics import ALL, CHAT_MESSAGES, DEADLETTER, KNOWLEDGE_DOCUMENTS
from streams.domain.knowledge.documents import document_id, sha256
from support.documents import pdf
from support.kafka import publish_events

pytestmark = pytest.mark.stack
ACTIVE, FAILED = knowledge_pb2.DOCUMENT_STATE_ACTIVE, knowledge_pb2.DOCUMENT_STATE_FAILED
REMOVED = knowledge_pb2.DOCUMENT_STATE_REMOVED
ROLLBACK = "Roll back with agora deploy rollback api; it takes about four minutes."
RUNBOOK = f"""# API 502 runbook

When the API returns 502 Bad Gateway, the load balancer cannot reach a healthy backend.

## Diagnose

Check the deploy log: a 502 right after a deploy means the new pods fail their health check.

## Roll back

{ROLLBACK}

## Escalate

If the 502s last more than 15 minutes, page the on-call SRE.
""".encode()


def client(settings, subject: str, *roles: str) -> Client:
    token = auth.issue(signer(settings), subject, list(roles), 600)
    return Client(settings.gateway_address, token, channel_credentials(settings))


def code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def settled(people: Client, document: str, timeout_s: float = 90):
    """The document once its ingestion is over (ACTIVE or FAILED)."""
    return people.ingested(people.knowledge.GetDocument(knowledge_pb2.GetDocumentRequest(
        document_id=document)), timeout_s, interval_s=0.3)


def search(people: Client, channel: str, query: str) -> list:
    return list(people.knowledge.Search(knowledge_pb2.SearchRequest(
        channel_id=channel, query=query, limit=5)).passages)


def chunks_of(settings, document: str) -> int:
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute("SELECT count(*) FROM knowledge_base WHERE document_id = %s",
                            (document,)).fetchone()[0]


@pytest.fixture(scope="module")
def channel(settings):
    ensure_topics(settings, ALL)
    name = f"kb-{uuid.uuid4().hex[:6]}"
    Registry(settings).create("developer-backend", name)
    return name


def test_a_document_is_searched_cited_replaced_and_removed(settings, channel, workers, reader):
    workers("knowledge")
    chat, letters = reader(CHAT_MESSAGES.name), reader(DEADLETTER.name)
    people = client(settings, "human:ops", f"{channel}:member")

    added = people.add_document(RUNBOOK, "api-502.md", channel)
    assert added.state == knowledge_pb2.DOCUMENT_STATE_INGESTING
    assert added.document_id == document_id(channel, "api-502.md")
    doc = settled(people, added.document_id)
    assert (doc.state, doc.title, doc.chunks, doc.chunks_embedded) == (
        ACTIVE, "API 502 runbook", 4, 4)
    assert doc.content_sha256 == sha256(RUNBOOK) and doc.channel_id == channel

    # The same content again changes nothing and publishes nothing.
    documents = reader(KNOWLEDGE_DOCUMENTS.name)
    documents.drain(1)
    published = len(documents.records)
    again = people.add_document(RUNBOOK, "api-502.md", channel)
    assert (again.state, again.changed_at) == (ACTIVE, doc.changed_at)
    documents.drain(1)
    assert len(documents.records) == published

    found = search(people, channel, "how do we roll back the api after a bad deploy?")
    assert found[0].heading == "API 502 runbook > Roll back" and ROLLBACK in found[0].content
    assert found[0].vector_rank and found[0].text_rank

    # The agent that answers a question about it quotes the runbook and cites it.
    question = people.post(channel, "How do we roll back the api after a bad deploy?",
                           mentions=["developer-backend"])
    [reply] = chat.wait(lambda name, r: r["reply_to"] == question.message_id, timeout_s=120)
    assert reply["text"] == ROLLBACK, reply["text"]
    assert reply["sources"][0]["document_id"] == doc.document_id
    assert reply["sources"][0]["chunk_id"] == found[0].chunk_id
    assert {s["title"] for s in reply["sources"]} == {"API 502 runbook"}

    # A new version replaces the passages whole.
    newer = RUNBOOK.replace(b"four minutes", b"nine minutes")
    people.add_document(newer, "api-502.md", channel)
    assert settled(people, doc.document_id).state == ACTIVE
    contents = " ".join(p.content for p in search(people, channel, "rollback minutes"))
    assert "nine minutes" in contents and "four minutes" not in contents
    assert chunks_of(settings, doc.document_id) == 4

    # Removed: out of search before the call returns, and out of the list.
    removed = people.knowledge.RemoveDocument(knowledge_pb2.RemoveDocumentRequest(
        document_id=doc.document_id))
    assert removed.state == REMOVED and chunks_of(settings, doc.document_id) == 0
    assert not [p for p in search(people, channel, "roll back the api")
                if p.document_id == doc.document_id]
    listed = people.knowledge.ListDocuments(knowledge_pb2.ListDocumentsRequest(
        channel_id=channel))
    assert doc.document_id not in {d.document_id for d in listed.documents}
    # Its REMOVE reached the worker too, which keeps it removed.
    documents.wait(lambda name, r: r["action"] == "REMOVE" and
                   r["document_id"] == doc.document_id)
    time.sleep(2)
    assert settled(people, doc.document_id).state == REMOVED

    # Raw producers: each bad event is a dead letter with its reason, nothing searchable.
    now = datetime.now(timezone.utc)

    def raw(source: str, content: bytes | None, **changes) -> dict:
        return {"event_id": str(uuid.uuid4()), "document_id": document_id(channel, source),
                "action": "ADD", "channel_id": channel, "source": source, "title": None,
                "media_type": None, "content": content, "content_sha256": None,
                "added_by": "program:etl", "created_at": now, **changes}

    bad = {
        "forged": raw("forged.md", b"# Forged\n\ntext", document_id=doc.document_id),
        "altered": raw("altered.md", b"# Altered\n\ntext", content_sha256="0" * 64),
        "corrupt": raw("corrupt.pdf", pdf(["Sev1 is an outage."])[:180]),
        "binary": raw("blob.txt", bytes(range(256)) * 64),
        "oversize": raw("big.md", b"# Big\n\n" + b"a" * (settings.knowledge_max_bytes + 1)),
        "stale": raw("api-502.md", RUNBOOK, created_at=now - timedelta(hours=1)),
    }
    publish_events(settings, KNOWLEDGE_DOCUMENTS.name,
                   [("KnowledgeDocument", r["document_id"], r) for r in bad.values()])
    reasons = {"forged": "is not the id", "altered": "does not match",
               "corrupt": "corrupt PDF", "binary": "binary data", "oversize": "limit is",
               "stale": "older than the document's last change"}
    labels = {r["event_id"]: label for label, r in bad.items()}

    def ours(name: str, r: dict) -> bool:
        if r["stage"] != "knowledge":
            return False
        if r["value"] is None:  # too large to copy: only the oversize one
            return "not copied" in r["reason"]
        return codec.decode(r["value"])[1]["event_id"] in labels

    found = {("oversize" if r["value"] is None else
              labels[codec.decode(r["value"])[1]["event_id"]]): r["reason"]
             for r in letters.wait(ours, count=len(bad), timeout_s=90)}
    assert {label: reasons[label] in found[label] for label in bad} == \
        {label: True for label in bad}, found
    for label in ("corrupt", "binary"):  # shown as failed, with the reason
        failed = settled(people, bad[label]["document_id"])
        assert failed.state == FAILED and reasons[label] in failed.error
    assert all(chunks_of(settings, r["document_id"]) == 0 for r in bad.values())
    assert not [p for p in search(people, channel, "forged altered big text")
                if p.document_id != doc.document_id]


def test_scopes_and_bad_documents_at_the_gateway(settings, channel):
    member = client(settings, "human:ops", f"{channel}:member")
    viewer = client(settings, "human:viewer", f"{channel}:viewer")
    stranger = client(settings, "human:elsewhere", "other-channel:admin")
    admin = client(settings, "human:root", "*:admin")

    assert code(lambda: viewer.add_document(RUNBOOK, "v.md", channel))[0] == \
        grpc.StatusCode.PERMISSION_DENIED
    assert code(lambda: stranger.add_document(RUNBOOK, "s.md", channel))[0] == \
        grpc.StatusCode.PERMISSION_DENIED
    assert code(lambda: stranger.knowledge.Search(knowledge_pb2.SearchRequest(
        channel_id=channel, query="roll back")))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert code(lambda: stranger.knowledge.ListDocuments(knowledge_pb2.ListDocumentsRequest(
        channel_id=channel)))[0] == grpc.StatusCode.PERMISSION_DENIED
    # Workspace documents: any caller may search them, only an admin of '*' add them.
    assert code(lambda: member.add_document(RUNBOOK, "w.md"))[0] == \
        grpc.StatusCode.PERMISSION_DENIED
    workspace = admin.add_document(RUNBOOK, f"ws-{uuid.uuid4().hex[:6]}.md")
    assert workspace.channel_id == "" and workspace.state in (
        knowledge_pb2.DOCUMENT_STATE_INGESTING, ACTIVE)
    assert code(lambda: stranger.knowledge.RemoveDocument(knowledge_pb2.RemoveDocumentRequest(
        document_id=workspace.document_id)))[0] == grpc.StatusCode.PERMISSION_DENIED
    admin.knowledge.RemoveDocument(knowledge_pb2.RemoveDocumentRequest(
        document_id=workspace.document_id))

    big = (b"x" * (1024 * 1024) for _ in range(50))  # 50 MB, streamed: refused on the way
    cases = {
        "empty.md": (b"", "empty"),
        "big.md": (big, "limit"),
        "broken.pdf": (pdf(["Sev1 is an outage."])[:180], "corrupt PDF"),
        "blob.txt": (bytes(range(256)) * 64, "binary"),
        "klingon.txt": ("qapla' café".encode("latin-1"), "unknown text encoding"),
    }
    for name, (data, reason) in cases.items():
        source = f"refused-{name}"  # no row of that name is left by the raw producer's
        media = "text/plain; charset=klingon" if name == "klingon.txt" else ""
        status, details = code(lambda: member.add_document(data, source, channel,
                                                           media_type=media))
        assert status == grpc.StatusCode.INVALID_ARGUMENT and reason in details, (source, details)
        gone = member.knowledge.GetDocument
        assert code(lambda: gone(knowledge_pb2.GetDocumentRequest(
            document_id=document_id(channel, source))))[0] == grpc.StatusCode.NOT_FOUND


def test_the_cli_adds_lists_searches_and_removes(settings, channel, tmp_path):
    bearer = auth.issue(signer(settings), "human:cli", [f"{channel}:member"], 600)
    runbook = tmp_path / "cli-runbook.md"
    runbook.write_bytes(RUNBOOK)
    added = run_agora(settings.stack_dir, "kb", "add", str(runbook), "--channel", channel,
                      "--no-wait", AGORA_GATEWAY_TOKEN=bearer)
    assert added.returncode == 0, added.stderr
    document = added.stdout.split()[0]
    assert document == document_id(channel, "cli-runbook.md") and "INGESTING" in added.stdout
    listed = run_agora(settings.stack_dir, "kb", "list", "--channel", channel,
                       AGORA_GATEWAY_TOKEN=bearer)
    assert document in listed.stdout and '"API 502 runbook"' in listed.stdout
    huge = tmp_path / "huge.md"
    with huge.open("wb") as out:
        out.truncate(50 * 2**20)
    refused = run_agora(settings.stack_dir, "kb", "add", str(huge), "--channel", channel,
                        AGORA_GATEWAY_TOKEN=bearer)
    assert refused.returncode == 2 and "over the 8.0 MiB limit" in refused.stderr
    both = run_agora(settings.stack_dir, "kb", "add", str(runbook), "--workspace",
                     "--channel", channel, AGORA_GATEWAY_TOKEN=bearer)
    assert both.returncode == 1 and "name one scope" in both.stderr
    removed = run_agora(settings.stack_dir, "kb", "remove", document,
                        AGORA_GATEWAY_TOKEN=bearer)
    assert removed.returncode == 0 and "REMOVED" in removed.stdout, removed.stderr
