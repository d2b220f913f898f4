"""Text out of a document's bytes: Markdown, plain text, HTML and PDF.

Every failure is a ``BadDocument`` whose message a person can act on (the gateway returns
it, the knowledge agent dead-letters with it): an empty file, binary data, a text
encoding that cannot be told or is unknown, a corrupt or encrypted PDF. HTML and PDF
come out as Markdown-like text (``#`` headings), so one chunker splits them all.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from bs4 import BeautifulSoup
from charset_normalizer import from_bytes
from pypdf import PdfReader
from pypdf.errors import PdfReadError, PyPdfError

from ops.core.errors import Invalid

MARKDOWN, PLAIN, HTML, PDF = "text/markdown", "text/plain", "text/html", "application/pdf"
MEDIA_TYPES = (MARKDOWN, PLAIN, HTML, PDF)
_BY_SUFFIX = {".md": MARKDOWN, ".markdown": MARKDOWN, ".txt": PLAIN, ".text": PLAIN,
              ".rst": PLAIN, ".html": HTML, ".htm": HTML, ".pdf": PDF}
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_PDF_PAGES = 2000


class BadDocument(Invalid):
    """The document cannot be read as text; the message says why."""


@dataclass(frozen=True)
class Extracted:
    media_type: str  # without parameters
    title: str
    text: str  # Markdown-like: '#' headings, blank lines between paragraphs


def media_type_of(source: str, given: str | None, data: bytes) -> tuple[str, str | None]:
    """(media type, charset or None) from what the producer said, else the content (a
    PDF's signature), else the source name's suffix; BadDocument for another type."""
    if given:
        kind, _, params = given.partition(";")
        kind = kind.strip().lower()
        charset = next((v.strip().strip('"') for k, _, v in
                        (p.partition("=") for p in params.split(";"))
                        if k.strip().lower() == "charset"), None)
        if kind not in MEDIA_TYPES:
            raise BadDocument(f"media type {kind!r} is not supported: "
                              f"{', '.join(MEDIA_TYPES)}")
        return kind, charset
    if data.startswith(b"%PDF-"):
        return PDF, None
    suffix = PurePosixPath(source.split("?")[0]).suffix.lower()
    return _BY_SUFFIX.get(suffix, PLAIN), None


def decode_text(data: bytes, charset: str | None) -> str:
    """The bytes as text: the named charset, else UTF-8 (with or without a BOM), UTF-16
    with a BOM, else the encoding charset-normalizer finds coherent."""
    if charset:
        try:
            codecs.lookup(charset)
        except LookupError:
            raise BadDocument(f"unknown text encoding {charset!r}") from None
        try:
            return data.decode(charset)
        except UnicodeDecodeError as exc:
            raise BadDocument(f"not valid {charset} text at byte {exc.start}") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _strict(data, "utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if b"\x00" in data:
        raise BadDocument("binary data, not text (NUL bytes): give a text, HTML or PDF file")
    best = from_bytes(data).best()
    if best is None or best.chaos > 0.2:
        raise BadDocument("the text encoding cannot be told (not UTF-8, and no other "
                          "encoding reads it as coherent text): convert it to UTF-8 or "
                          "name it in the media type ('text/plain; charset=...')")
    return str(best)


def _strict(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BadDocument(f"not valid {encoding} text at byte {exc.start}") from None


def _check_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _CONTROL.search(text[:65536]) and len(_CONTROL.findall(text[:65536])) > \
            max(8, len(text[:65536]) // 100):
        raise BadDocument("binary data, not text (control characters): give a text, HTML "
                          "or PDF file")
    if not text.strip():
        raise BadDocument("the document has no text")
    return _CONTROL.sub("", text)


def _html(markup: str) -> tuple[str, str]:
    soup = BeautifulSoup(markup, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "nav", "footer", "head", "template"]):
        tag.decompose()
    for level in range(1, 7):
        for tag in soup.find_all(f"h{level}"):
            tag.replace_with(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n")
    for tag in soup.find_all(["p", "li", "tr", "pre", "blockquote", "div", "br"]):
        tag.insert_after("\n\n" if tag.name != "br" else "\n")
    return title, soup.get_text()


def _pdf(data: bytes) -> tuple[str, str]:
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns on every repair
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise BadDocument("the PDF is encrypted: give an unencrypted copy")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise BadDocument(f"the PDF has {len(reader.pages)} pages; at most "
                              f"{MAX_PDF_PAGES} are read")
        metadata = reader.metadata
        title = str(metadata.get("/Title") or "").strip() if metadata else ""
        pages = [page.extract_text() or "" for page in reader.pages]
    except BadDocument:
        raise
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, AttributeError,
            IndexError, RecursionError, OSError) as exc:
        raise BadDocument(f"corrupt PDF: {type(exc).__name__}: {exc}"[:300]) from None
    if not any(p.strip() for p in pages):
        raise BadDocument("the PDF has no text layer (a scan?): nothing to search")
    return title, "\n\n".join(pages)


def extract(data: bytes, source: str, media_type: str | None = None,
            title: str | None = None) -> Extracted:
    """The text and title of a document; BadDocument when it has none to give."""
    if not data:
        raise BadDocument("the document is empty")
    kind, charset = media_type_of(source, media_type, data)
    own_title = ""
    if kind == PDF:
        own_title, text = _pdf(data)
    else:
        text = decode_text(data, charset)
        if kind == HTML:
            own_title, text = _html(text)
    text = _check_text(text)
    if not own_title and kind in (MARKDOWN, HTML):
        first = _HEADING.search(text)
        own_title = first.group(2) if first else ""
    name = PurePosixPath(source.split("?")[0]).name or source
    return Extracted(kind, (title or own_title or name).strip()[:300], text)
