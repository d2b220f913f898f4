"""A document's text in passages (chunks) an embedder and a small model can use.

Split at Markdown headings first (a passage never spans two sections, and carries its
section's heading path, "Runbook > Diagnose", which is embedded and shown with it), then
within a section at paragraph and sentence boundaries into passages of at most
``max_chars``, each starting with the last ``overlap`` characters' worth of whole sentences
of the one before, so a fact cut at a boundary is whole in one of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from schemas.ids import derived_id

MAX_CHARS = 900
OVERLAP = 150
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=[\"'(\[*_`A-Z0-9-])|\n(?=\s*(?:[-*+]|\d+[.)])\s)")


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    position: int
    heading: str
    content: str
    content_hash: str  # hex SHA-256 of heading and content

    def embedded_text(self, title: str) -> str:
        """What the embedder sees: where the passage is, then the passage."""
        return f"{location(title, self.heading)}\n{self.content}"


def location(title: str, heading: str) -> str:
    """Where a passage is: "Runbook > Diagnose" (the heading path, under the title
    when it does not start with it)."""
    if not heading or heading.startswith(title):
        return heading or title
    return f"{title} > {heading}"


def sections(text: str) -> list[tuple[str, str]]:
    """(heading path, body) per section, in order; text before any heading has path ''."""
    path: list[tuple[int, str]] = []
    found: list[tuple[str, list[str]]] = [("", [])]
    fenced = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            level = len(match.group(1))
            path = [(lv, name) for lv, name in path if lv < level] + [(level, match.group(2))]
            found.append((" > ".join(name for _, name in path), []))
        else:
            found[-1][1].append(line)
    return [(heading, "\n".join(lines).strip()) for heading, lines in found
            if "\n".join(lines).strip()]


def _pieces(body: str, max_chars: int) -> list[str]:
    """Sentences (or list items), each at most ``max_chars`` (a longer one is cut at words)."""
    out = []
    for paragraph in re.split(r"\n\s*\n", body):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        # A line break inside a sentence is the document's wrapping, not structure.
        sentences = [" ".join(s.split()) for s in _SENTENCE_END.split(paragraph) if s.strip()]
        for i, sentence in enumerate(sentences):
            while len(sentence) > max_chars:
                cut = sentence.rfind(" ", 0, max_chars)
                cut = cut if cut > max_chars // 2 else max_chars
                out.append((sentence[:cut].strip(), False))
                sentence = sentence[cut:].strip()
            out.append((sentence, i == len(sentences) - 1))
    return [f"{s}\n" if paragraph_end else s for s, paragraph_end in out]


def _pack(pieces: list[str], max_chars: int, overlap: int) -> list[str]:
    chunks: list[list[str]] = []
    current: list[str] = []
    for piece in pieces:
        if current and len(_join(current + [piece])) > max_chars:
            chunks.append(current)
            carried: list[str] = []
            for previous in reversed(current):  # whole sentences, up to `overlap` chars
                if len(_join([previous] + carried)) > overlap:
                    break
                carried.insert(0, previous)
            current = carried if len(_join(carried + [piece])) <= max_chars else []
        current.append(piece)
    if current:
        chunks.append(current)
    return [_join(c) for c in chunks]


def _join(pieces: list[str]) -> str:
    text = ""
    for piece in pieces:
        text += piece if not text or text.endswith("\n") else " " + piece
    return re.sub(r"\n(?=\S)", "\n\n", text.strip())


def chunk(document_id: str, text: str, max_chars: int = MAX_CHARS,
          overlap: int = OVERLAP) -> list[Chunk]:
    """The passages of a document's text, in order. Ids derive from the document, the
    position and the content: the same text always gives the same chunks."""
    out: list[Chunk] = []
    for heading, body in sections(text):
        for content in _pack(_pieces(body, max_chars), max_chars, overlap):
            digest = hashlib.sha256(f"{heading}\n{content}".encode()).hexdigest()
            out.append(Chunk(derived_id(document_id, len(out), digest), len(out), heading,
                             content, digest))
    return out
