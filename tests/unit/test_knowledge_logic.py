"""The knowledge base's plain logic: text extraction, chunking, the document rules and
grounding (which passages and sentences a reply gets)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from streams.domain.knowledge import grounding
from streams.domain.knowledge.chunks import chunk, location, sections
from streams.domain.knowledge.documents import check, document_id, plan, sha256
from streams.domain.knowledge.extract import BadDocument, extract
from streams.domain.responder.actions import action_schema
from support.documents import pdf

RUNBOOK = """# API 502 runbook

When the API returns 502 Bad Gateway, the load balancer cannot reach a healthy backend.

## Diagnose

1. Check the deploy log: a 502 right after a deploy means the new pods fail.
2. Run `kubectl get pods -n api` and look for CrashLoopBackOff.

```
# not a heading: a comment in a code block
```

## Roll back

Roll back with `agora deploy rollback api`; it takes about four minutes.
"""


# --------------------------------------------------------------------------- extract

def test_markdown_keeps_its_headings_and_title():
    found = extract(RUNBOOK.encode(), "runbooks/api-502.md")
    assert (found.media_type, found.title) == ("text/markdown", "API 502 runbook")
    assert "## Roll back" in found.text
    assert extract(RUNBOOK.encode(), "x.md", title="Given").title == "Given"
    assert extract(b"just words here", "notes/plain.txt").title == "plain.txt"


def test_html_comes_out_as_text_with_headings():
    html = (b"<html><head><title>On-call policy</title><style>p{}</style></head><body>"
            b"<nav>menu</nav><h1>On-call</h1><p>The rota changes on <b>Monday</b>.</p>"
            b"<h2>Paging</h2><ul><li>Ack within 5 minutes.</li></ul>"
            b"<script>alert(1)</script></body></html>")
    found = extract(html, "policy.html")
    assert (found.media_type, found.title) == ("text/html", "On-call policy")
    assert "# On-call" in found.text and "## Paging" in found.text
    assert "The rota changes on Monday." in " ".join(found.text.split())
    assert "alert" not in found.text and "menu" not in found.text and "p{}" not in found.text


def test_pdf_text_and_title():
    found = extract(pdf(["Sev1 means a full outage.", "Page within 5 minutes."],
                        title="Severity levels"), "sev.pdf")
    assert (found.media_type, found.title) == ("application/pdf", "Severity levels")
    assert "Sev1 means a full outage." in found.text


def test_encodings():
    assert "café" in extract("le café est fermé le lundi".encode("utf-16"), "a.txt").text
    assert "café" in extract("le café".encode("utf-8-sig"), "a.txt").text
    latin = "Le café est fermé le lundi et le mardi, réouverture mercredi.".encode("latin-1")
    assert "fermé" in extract(latin, "a.txt", "text/plain; charset=latin-1").text


@pytest.mark.parametrize("data, source, media_type, reason", [
    (b"", "a.md", None, "empty"),
    (b"   \n\n  ", "a.md", None, "no text"),
    (bytes(range(256)) * 40, "blob.bin", None, "binary"),
    (b"\x89PNG\r\n\x1a\n" + bytes(2000), "image.png", None, "binary"),
    (pdf(["hello"])[:150], "broken.pdf", None, "corrupt PDF"),
    (b"%PDF-1.4 garbage garbage", "x.txt", None, "corrupt PDF"),
    (b"caf\xe9", "a.txt", "text/plain; charset=klingon", "unknown text encoding"),
    (b"caf\xe9 \xff\xfe\xfa", "a.txt", "text/plain; charset=utf-8", "not valid utf-8"),
    (b"hello", "a.doc", "application/msword", "not supported"),
])
def test_bad_documents_say_why(data, source, media_type, reason):
    with pytest.raises(BadDocument, match=reason):
        extract(data, source, media_type)


def test_undecidable_bytes_are_refused():
    rng = np.random.default_rng(1)
    noise = bytes(rng.integers(0x80, 0x100, 4000, dtype=np.uint8))  # no NUL, not UTF-8
    with pytest.raises(BadDocument, match="encoding cannot be told|binary"):
        extract(noise, "noise.txt")


# ---------------------------------------------------------------------------- chunks

def test_sections_follow_the_heading_path_and_skip_code_blocks():
    found = sections(RUNBOOK)
    assert [h for h, _ in found] == ["API 502 runbook", "API 502 runbook > Diagnose",
                                     "API 502 runbook > Roll back"]
    assert "# not a heading" in found[1][1]


def test_chunks_are_bounded_overlapping_and_stable():
    body = " ".join(f"Fact number {i} is that value {i} matters." for i in range(120))
    text = f"# Facts\n\n{body}\n\n## Other\n\nA short one."
    chunks = chunk("doc", text, max_chars=400, overlap=100)
    assert all(len(c.content) <= 400 for c in chunks)
    facts = [c for c in chunks if c.heading == "Facts"]
    assert len(facts) > 5 and chunks[-1].heading == "Facts > Other"
    for a, b in zip(facts, facts[1:]):  # each starts with the end of the one before
        assert b.content.split(". ")[0] in a.content
    joined = " ".join(c.content for c in facts)
    assert all(f"Fact number {i} is" in joined for i in range(120))  # nothing lost
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert chunk("doc", text, 400, 100) == chunks  # same text, same ids
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    assert chunk("other", text, 400, 100)[0].chunk_id != chunks[0].chunk_id


def test_a_giant_sentence_is_cut_at_words():
    chunks = chunk("doc", "word " * 1000, max_chars=300, overlap=50)
    assert all(0 < len(c.content) <= 300 for c in chunks)
    assert sum(c.content.count("word") for c in chunks) >= 1000


def test_location():
    assert location("Runbook", "Runbook > Diagnose") == "Runbook > Diagnose"
    assert location("Runbook", "Diagnose") == "Runbook > Diagnose"
    assert location("Runbook", "") == "Runbook"


# ------------------------------------------------------------------------- documents

NOW = datetime(2026, 12, 5, 12, tzinfo=timezone.utc)


def event(action="ADD", content=b"# Doc\n\nSome text.", channel="ops", source="doc.md",
          **changes):
    return {"event_id": str(uuid.uuid4()), "document_id": document_id(channel, source),
            "action": action, "channel_id": channel, "source": source, "title": None,
            "media_type": None, "content": content, "content_sha256": None,
            "added_by": "human:ops", "created_at": NOW, **changes}


def test_document_ids_name_scope_and_source():
    assert document_id("ops", "a.md") == document_id("ops", "a.md")
    assert len({document_id("ops", "a.md"), document_id("dev", "a.md"),
                document_id(None, "a.md"), document_id("ops", "b.md")}) == 4


@pytest.mark.parametrize("changes, reason", [
    ({"action": "UNKNOWN"}, "unknown action"),
    ({"channel_id": "bad channel"}, "not a channel id"),
    ({"source": ""}, "source"),
    ({"source": "x" * 501}, "source"),
    ({"document_id": document_id("other", "doc.md")}, "is not the id"),
    ({"content": None}, "needs the document's content"),
    ({"content": b"x" * 2000}, "limit is"),
    ({"content_sha256": "0" * 64}, "does not match"),
    ({"action": "REMOVE"}, "carries no content"),
])
def test_check_refuses_what_cannot_apply(changes, reason):
    record = event(**changes)
    if "document_id" not in changes and "channel_id" in changes and \
            changes["channel_id"] != "bad channel":
        record["document_id"] = document_id(record["channel_id"], record["source"])
    with pytest.raises(BadDocument, match=reason):
        check(record, max_bytes=1024)


def test_check_accepts_good_events():
    record = event()
    check({**record, "content_sha256": sha256(record["content"]).upper()})
    check(event(action="REMOVE", content=None, channel=None))


def test_plan_applies_events_in_event_time():
    record = event()
    assert plan(None, record) == "ingest"
    row = {"status": "active", "event_id": "e", "changed_at": NOW,
           "content_sha256": sha256(record["content"]), "title": "Doc", "media_type": "md"}
    assert plan(row, record) == "unchanged"  # the same content again
    assert plan(row, {**record, "content": b"# Doc\n\nNew text."}) == "ingest"
    assert plan(row, {**record, "title": "Renamed"}) == "ingest"
    assert plan({**row, "status": "failed"}, record) == "ingest"
    assert plan(row, {**record, "created_at": NOW - timedelta(seconds=1)}) == "stale"
    removed = {**row, "status": "removed", "changed_at": NOW + timedelta(seconds=5)}
    assert plan(removed, record) == "stale"  # a late add never revives a removal
    assert plan(row, event(action="REMOVE", content=None)) == "remove"


# ------------------------------------------------------------------------- grounding

def passage(content, similarity=0.6, heading="Runbook > Roll back", title="Runbook"):
    return {"chunk_id": str(uuid.uuid4()), "document_id": "d", "title": title,
            "heading": heading, "content": content, "similarity": similarity}


def test_relevant_passages_and_their_sources():
    found = [passage("a", 0.7), passage("b", 0.1), passage("c", 0.5), passage("d", 0.4),
             passage("e", 0.3)]
    kept = grounding.relevant(found)
    assert [p["content"] for p in kept] == ["a", "c", "d"]
    assert grounding.sources(kept)[0] == {"document_id": "d", "chunk_id": kept[0]["chunk_id"],
                                          "title": "Runbook", "heading": "Runbook > Roll back"}
    assert grounding.sources([]) is None
    lines = grounding.prompt_lines(kept)
    assert lines[1] == "[1] Runbook > Roll back: a" and lines[-1] == ""
    assert grounding.prompt_lines([]) == []


def test_sentences_are_split_and_ranked_by_meaning_and_words():
    text = ("When the API returns 502, the balancer\nfinds no backend.\n"  # hard-wrapped
            "- Roll back with agora deploy rollback api; it takes four minutes.\n\n"
            "Short one.")
    candidates = grounding.sentences([passage(text, heading="Runbook > Diagnose"),
                                      passage(text)])
    assert [c.sentence for c in candidates] == [
        "When the API returns 502, the balancer finds no backend.",
        "Roll back with agora deploy rollback api; it takes four minutes."]
    assert candidates[0].embedded_text() == f"Diagnose: {candidates[0].sentence}"
    assert [c.passage for c in candidates] == [0, 0]  # where each was first seen
    question = np.array([1.0, 0.0])
    vectors = np.array([[0.5, 0.866], [0.45, 0.893]])  # equally far in meaning
    ranked = grounding.ranked("How do we roll back the api?", question, candidates, vectors)
    assert ranked[0][1].startswith("Roll back")  # the words decide


def test_reply_schema_forces_a_good_enough_sentence():
    best = [(0.8, "Roll back with agora deploy rollback api."), (0.5, "Page the SRE."),
            (0.2, "Unrelated.")]
    assert grounding.reply_schema("quote", best) == {"const": best[0][1]}
    assert grounding.reply_schema("choose", best) == {"enum": [best[0][1], best[1][1]]}
    assert grounding.reply_schema("free", best) is None
    assert grounding.reply_schema("quote", [(0.2, "Weak.")]) is None
    assert grounding.reply_schema("quote", []) is None
    schema = action_schema(["calculator"], None, {"const": "Quoted."})
    assert schema["properties"]["reply"] == {"const": "Quoted."}
    # The quote is the whole action: nothing else to generate.
    assert schema["properties"]["tool_call"] == schema["properties"]["vote"] == {"type": "null"}
    assert action_schema([], None)["properties"]["reply"]["maxLength"] == 280
