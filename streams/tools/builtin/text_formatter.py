"""Text formatting and statistics: pure string work, no external libraries."""

from __future__ import annotations

import pathlib
import re
import textwrap
import unicodedata
from collections import Counter

from streams.tools.builtin import ToolError

WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
# a markdown list item or heading starts a new line/sentence even without a blank line
BLOCK_START = r"\s*(?:[-*+]|\d+[.)]|#{1,6})\s+"
BLOCK_SPLIT = re.compile(rf"\n\s*\n|\n(?={BLOCK_START})")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
STOP_WORDS = frozenset("""
a an the and or but if then else of to in on at by for with from as into about over
is are was were be been being am do does did have has had it its this that these those
i you he she we they me him her us them my your his our their not no so than too very
can will would should could may might must shall just also there here what which who
""".split())


def _sentences(text: str) -> list[str]:
    blocks = (re.sub(f"^{BLOCK_START}", "", " ".join(b.split())) for b in BLOCK_SPLIT.split(text))
    return [s for b in blocks for s in SENTENCE_END.split(b) if WORD.search(s)]


def _stats(text: str) -> str:
    words = WORD.findall(text)
    seconds = round(len(words) / 200 * 60)
    reading = f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60} s"
    avg = sum(map(len, words)) / len(words) if words else 0.0
    counts = Counter(w.lower() for w in words if w.lower() not in STOP_WORDS)
    top = ", ".join(f"{w} ({n})" for w, n in counts.most_common(5)) or "-"
    return "\n".join([
        f"characters: {len(text)}",
        f"words: {len(words)}",
        f"sentences: {len(_sentences(text))}",
        f"lines: {len(text.splitlines())}",
        f"average word length: {avg:.1f}",
        f"reading time (200 wpm): {reading}",
        f"top words: {top}",
    ])


def _title(text: str) -> str:
    # str.title() would give "Don'T"; capitalise whole words instead
    return WORD.sub(lambda m: m[0][:1].upper() + m[0][1:].lower(), text)


def _wrap(text: str, width: int) -> str:
    out = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        # list items and headings keep their own lines; items wrap under their text
        blocks = re.split(rf"\n(?={BLOCK_START})", paragraph)
        lines = []
        for block in blocks:
            marker = re.match(BLOCK_START, block)
            indent = " " * len(marker[0].strip() + " ") if marker else ""
            lines.append(textwrap.fill(" ".join(block.split()), width, subsequent_indent=indent))
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _strip_markdown(text: str) -> str:
    text = re.sub(r"^\s*(```|~~~).*$", "", text, flags=re.M)            # code fences, keep code
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)                # images -> alt text
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)                 # links -> link text
    text = re.sub(r"<[^>\n]+>", "", text)                                 # inline HTML
    text = re.sub(r"^\s{0,3}#{1,6}\s+", "", text, flags=re.M)            # headings
    text = re.sub(r"^\s{0,3}>\s?", "", text, flags=re.M)                 # block quotes
    text = re.sub(r"^\s*([-*+]|\d+[.)])\s+", "", text, flags=re.M)       # list markers
    text = re.sub(r"^\s*([-*_])(\s*\1){2,}\s*$", "", text, flags=re.M)   # horizontal rules
    text = re.sub(r"(\*\*|__|~~)(.+?)\1", r"\2", text)                   # bold, strike
    text = re.sub(r"(?<!\w)([*_])(?!\s)(.+?)(?<!\s)\1(?!\w)", r"\2", text)  # italics
    text = re.sub(r"`([^`]*)`", r"\1", text)                              # inline code
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if not slug:
        raise ToolError("text has no ASCII letters or digits to build a slug from")
    return slug


def run(arguments: dict, workdir: pathlib.Path) -> dict:
    text, operation = arguments["text"], arguments["operation"]
    if operation == "stats":
        output = _stats(text)
    elif operation == "upper":
        output = text.upper()
    elif operation == "lower":
        output = text.lower()
    elif operation == "title":
        output = _title(text)
    elif operation == "wrap":
        output = _wrap(text, arguments.get("width", 72))
    elif operation == "strip_markdown":
        output = _strip_markdown(text)
    elif operation == "slugify":
        output = _slugify(text)
    elif operation == "bullets":
        output = "\n".join(f"- {s}" for s in _sentences(text))
    else:
        raise ToolError(f"unknown operation '{operation}'")
    return {"output": output if output.strip() else "(empty result)", "artifacts": []}
