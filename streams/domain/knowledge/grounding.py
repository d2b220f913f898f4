"""Which knowledge-base passages an agent's prompt gets, how they read there, and how the
reply cites them. Plain functions over the rows ``ops.store.knowledge.search`` returns."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from schemas.events import Source
from streams.domain.knowledge.chunks import location

PASSAGES = 3  # in a prompt: a small model's context is short, and the best comes first
SEARCHED = 8  # candidates fetched before the similarity floor
# Cosine similarity (all-MiniLM-L6-v2) below which a passage is about something else:
# a passage found by words alone, far in meaning, is left out.
MIN_SIMILARITY = 0.25
PASSAGE_CHARS = 700


def relevant(found: Sequence[dict], limit: int = PASSAGES,
             min_similarity: float = MIN_SIMILARITY) -> list[dict]:
    """The passages worth a place in the prompt, best first."""
    return [p for p in found if p["similarity"] >= min_similarity][:limit]


def prompt_lines(passages: Sequence[dict]) -> list[str]:
    """The passages as the prompt shows them, each with the title it is cited by."""
    if not passages:
        return []
    lines = ["From the team's knowledge base (answer from it when it answers the message):"]
    for i, p in enumerate(passages, 1):
        where = location(p["title"], p["heading"])
        content = " ".join(p["content"].split())
        cut = content[:PASSAGE_CHARS] + ("..." if len(content) > PASSAGE_CHARS else "")
        lines.append(f"[{i}] {where}: {cut}")
    return [*lines, ""]


def sources(passages: Sequence[dict]) -> list[Source] | None:
    """The reply's ``sources``: the passages it was given, or None when it had none."""
    return [{"document_id": p["document_id"], "chunk_id": p["chunk_id"], "title": p["title"],
             "heading": p["heading"]} for p in passages] or None


# --- extractive answers ------------------------------------------------------------
# A small model handed a passage still writes its own (wrong) sentence more often than it
# copies the right one. So when a sentence of the passages answers the message well, the
# reply's schema makes it that sentence, verbatim ("quote"), or one of the best few that
# the model picks ("choose"); "free" only shows the passages. bench/knowledge.py
# measures the three with the bundled model. The reply's sources name the passages.
MODES = ("quote", "choose", "free")
MIN_SENTENCE = 20  # characters: shorter pieces are headings or fragments
CHOICES = 3
MIN_ANSWER = 0.35  # sentence score (below) from which a sentence is taken as the answer
LEXICAL_WEIGHT = 0.3
PASSAGE_WEIGHT = 0.1
QUOTE_CHARS = 280  # the reply's length
# Paragraphs and list items end sentences; a line break inside a paragraph does not
# (documents are often hard-wrapped).
_PARAGRAPH = re.compile(r"\n\s*\n|\n(?=\s*(?:[-*+]|\d+[.)])\s)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[*_`A-Z0-9-])")
_LIST_MARKER = re.compile(r"^(?:[-*+]|\d+[.)])\s+")
_STOP = frozenset("the and for are was were has have had not but with this that from you "
                  "your our who what when where which how why does did can could should "
                  "would will there their them they its it's been being into about any "
                  "all".split())


@dataclass(frozen=True)
class Candidate:
    sentence: str
    section: str  # the last heading above it: part of what the sentence means
    passage: int  # the rank of its passage (0: best)

    def embedded_text(self) -> str:
        return f"{self.section}: {self.sentence}" if self.section else self.sentence


def sentences(passages: Sequence[dict]) -> list[Candidate]:
    """The sentences (and list items) of the passages, in order, each once."""
    found: dict[str, Candidate] = {}
    for rank, p in enumerate(passages):
        section = p["heading"].rpartition(" > ")[2]
        for paragraph in _PARAGRAPH.split(p["content"]):
            for piece in _SENTENCE.split(" ".join(paragraph.split())):
                piece = _LIST_MARKER.sub("", piece)
                if len(piece) >= MIN_SENTENCE and piece not in found:
                    found[piece] = Candidate(piece, section, rank)
    return list(found.values())


def _words(text: str) -> set[str]:
    return {w.removesuffix("s") for w in re.findall(r"[a-z0-9]{3,}", text.lower())
            if w not in _STOP}


def ranked(question: str, question_vector: np.ndarray, candidates: Sequence[Candidate],
           vectors: np.ndarray) -> list[tuple[float, str]]:
    """(score, sentence), best first: cosine similarity of the sentence in its section
    (``Candidate.embedded_text``) to the question, plus the share of the question's
    words it has there (names and numbers the embedder blurs), plus a little for the
    rank of its passage (the hybrid search saw the whole passage)."""
    asked = _words(question)
    scored = []
    for candidate, vector in zip(candidates, vectors):
        words = _words(candidate.embedded_text())
        overlap = len(asked & words) / len(asked) if asked else 0.0
        scored.append((float(np.dot(question_vector, vector)) + LEXICAL_WEIGHT * overlap
                       + PASSAGE_WEIGHT / (1 + candidate.passage), candidate.sentence))
    return sorted(scored, key=lambda s: -s[0])


def reply_schema(mode: str, best: Sequence[tuple[float, str]]) -> dict | None:
    """The reply's JSON schema when the best sentence answers well (None: free text)."""
    usable = [s for score, s in best[:CHOICES] if score >= MIN_ANSWER and len(s) <= QUOTE_CHARS]
    if mode == "free" or not usable:
        return None
    return {"enum": usable} if mode == "choose" else {"const": usable[0]}
