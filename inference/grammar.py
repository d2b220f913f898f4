"""Schema-constrained decoding with llguidance over a llama.cpp vocabulary.

llguidance checks a sampled token against a JSON schema in microseconds, computes the
full token mask only when asked, and tells which tokens the schema forces next (keys,
quotes, ``null``), so the engine samples freely, checks that one token, masks only
when it is rejected, and feeds forced tokens in one batch. llama.cpp's own GBNF
sampler checks all 262k tokens of Gemma's vocabulary at every step (14.5 ms a token
here), which made JSON decoding 0.36x as fast as free decoding.
"""

from __future__ import annotations

import json
from functools import lru_cache

import llguidance
import numpy as np

# llama_token_attr bits
ATTR_CONTROL, ATTR_USER_DEFINED, ATTR_BYTE = 8, 16, 32
VOCAB_BPE = 2
# Separators a model writes naturally; no other whitespace, so a small model cannot pad
# its output with newlines, and the skeleton between values is forced.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE writes each byte as a printable character; the inverse."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_bytes(vocab) -> list[bytes]:
    """The bytes each token stands for (control tokens: b"")."""
    n, bpe = vocab.n_vocab, vocab.vocab_type == VOCAB_BPE
    decoder = _gpt2_byte_decoder() if bpe else {}
    out = []
    for token in range(n):
        attr = vocab.get_attr(token)
        if attr & ATTR_CONTROL:
            out.append(b"")
            continue
        text = vocab.get_text(token)
        if attr & ATTR_BYTE and text.startswith("<0x") and text.endswith(">"):
            out.append(bytes([int(text[3:-1], 16)]))
        elif bpe and not attr & ATTR_USER_DEFINED:
            out.append(bytes(decoder.get(c, 32) for c in text))
        else:
            # llama.cpp renders the rest exactly (SentencePiece's "▁" as a space...);
            # only partial UTF-8 would come back mangled, and those are the byte tokens.
            out.append(vocab.token_to_piece(token, 0, True).encode("utf-8"))
    return out


class _Vocabulary:
    """What llguidance's TokenizerWrapper asks of a tokenizer."""

    def __init__(self, vocab, pieces: list[bytes], eog: list[int]):
        self._vocab = vocab
        self.eos_token_id = eog[0]
        self.bos_token_id = vocab.token_bos() if vocab.token_bos() >= 0 else None
        # Control tokens are among the few whose bytes are empty (``token_bytes``).
        self.special_token_ids = [t for t, piece in enumerate(pieces)
                                  if not piece and vocab.get_attr(t) & ATTR_CONTROL]
        # llguidance marks special tokens with a leading 0xFF and their name.
        self.tokens = list(pieces)
        for t in self.special_token_ids:
            self.tokens[t] = b"\xff" + vocab.get_text(t).encode("utf-8")

    def __call__(self, text: bytes) -> list[int]:
        return self._vocab.tokenize(text.decode("utf-8", errors="replace"),
                                    add_special=False, parse_special=False)


def tokenizer(vocab, pieces: list[bytes], eog: list[int]) -> llguidance.LLTokenizer:
    wrapper = llguidance.TokenizerWrapper(_Vocabulary(vocab, pieces, eog))
    return llguidance.LLTokenizer(wrapper, eos_token=eog)


class Grammars:
    """Compiled JSON-schema grammars of one tokenizer, a pristine matcher per schema."""

    def __init__(self, lltokenizer: llguidance.LLTokenizer):
        self.tokenizer = lltokenizer
        self._pristine = lru_cache(maxsize=64)(self._compile)

    def matcher(self, json_schema: str) -> llguidance.LLMatcher:
        """A fresh matcher for ``json_schema``; ``ValueError`` naming what is wrong when
        it is not JSON or not a schema the grammar engine can compile."""
        return self._pristine(json_schema).deep_copy()

    def _compile(self, json_schema: str) -> llguidance.LLMatcher:
        try:
            schema = json.loads(json_schema)
        except json.JSONDecodeError as exc:
            raise ValueError(f"json_schema is not JSON: {exc}") from exc
        if not isinstance(schema, dict):
            raise ValueError("json_schema must be a JSON object")
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
        except ValueError as exc:
            raise ValueError(f"json_schema cannot be compiled: {exc}") from exc
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            grammar, self.tokenizer)
        if is_error:
            raise ValueError(f"json_schema cannot be compiled: {messages[0]}")
        matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(f"json_schema cannot be compiled: {matcher.get_error()}")
        return matcher


def allowed(matcher: llguidance.LLMatcher, n_vocab: int) -> np.ndarray:
    """Boolean mask of the tokens ``matcher`` accepts next."""
    bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[:n_vocab].astype(bool)
