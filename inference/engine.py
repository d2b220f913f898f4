"""Token-by-token generation on llama.cpp (cyllama's low-level binding).

The generator model in Triton runs this; the benchmark runs it in-process as the
"llama.cpp called directly" baseline. One ``Engine`` owns one llama.cpp context and
must be used by one thread at a time.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

FINISH_STOP = "stop"  # end-of-generation token or a stop sequence
FINISH_LENGTH = "length"  # max_tokens reached: structured output is then truncated
FINISH_CANCELLED = "cancelled"


@dataclass
class Request:
    prompt: str
    max_tokens: int = 128
    temperature: float = 0.0
    stop: list[str] = field(default_factory=list)
    json_schema: str | None = None  # constrains decoding to JSON valid for it
    seed: int = 1234
    repetition_penalty: float = 1.0  # > 1 discourages loops (small models fall into them)


@dataclass
class Outcome:
    """What a finished generation reports after its last token."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = FINISH_STOP
    first_token_s: float | None = None
    total_s: float = 0.0


class StopMatcher:
    """Streams text while holding back what could still become a stop sequence."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop sequence ended the text)."""
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        cut = max(len(self.pending) - self.keep, 0)
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


MAX_REPETITION = 2000  # llama.cpp's MAX_REPETITION_THRESHOLD


@lru_cache(maxsize=64)
def grammar_for(json_schema: str) -> str:
    """GBNF grammar of a JSON schema (cached: agents reuse a handful of schemas).

    Whitespace between tokens is narrowed to one optional space: llama.cpp's rule
    allows runs of newlines and tabs, which a small model fills with padding.
    """
    from cyllama.llama.llama_cpp import json_schema_to_grammar

    grammar = json_schema_to_grammar(json.loads(json_schema))
    # llama.cpp refuses larger repetitions and then crashes on the missing sampler:
    # refuse the request instead, naming the bound.
    too_big = [int(n) for n in re.findall(r"\{\d*,(\d+)\}", grammar) if int(n) > MAX_REPETITION]
    if too_big:
        raise ValueError(f"json_schema bounds a string or array at {max(too_big)}; "
                         f"grammars allow at most {MAX_REPETITION}")
    return re.sub(r"^space ::= .*$", 'space ::= | " "', grammar, flags=re.M)


class Engine:
    def __init__(self, model_path: str, *, threads: int = 1, n_ctx: int = 2048,
                 gpu_layers: int = 0):
        import cyllama.llama.llama_cpp as llama

        self._llama = llama
        llama.disable_logging()
        llama.ggml_backend_load_all()
        model_params = llama.LlamaModelParams()
        model_params.n_gpu_layers = gpu_layers
        self.model = llama.LlamaModel(model_path, model_params)
        self.vocab = self.model.get_vocab()
        params = llama.LlamaContextParams()
        params.n_ctx = n_ctx
        params.n_batch = min(n_ctx, 512)
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        self.ctx = llama.LlamaContext(self.model, params)
        self.n_ctx = n_ctx

    def _sampler(self, req: Request):
        params = self._llama.LlamaSamplerChainParams()
        params.no_perf = True
        sampler = self._llama.LlamaSampler(params)
        if req.json_schema:
            # First in the chain: a token the grammar rejects must never be
            # selected (llama.cpp aborts the process if it is accepted).
            sampler.add_grammar(self.vocab, grammar_for(req.json_schema), "root")
        if req.repetition_penalty != 1.0:
            sampler.add_penalties(64, req.repetition_penalty, 0.0, 0.0)
        if req.temperature <= 0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(40)
            sampler.add_top_p(0.95, 1)
            sampler.add_temp(req.temperature)
            sampler.add_dist(req.seed)
        return sampler

    def stream(self, req: Request, outcome: Outcome,
               cancelled: Callable[[], bool] = lambda: False) -> Iterator[str]:
        """Yield text pieces as they are decoded; fill ``outcome`` at the end."""
        started = time.monotonic()
        tokens = self.vocab.tokenize(req.prompt, add_special=True, parse_special=True)
        if len(tokens) + req.max_tokens > self.n_ctx:
            raise ValueError(f"prompt of {len(tokens)} tokens + max_tokens {req.max_tokens} "
                             f"exceeds the context of {self.n_ctx} tokens")
        outcome.prompt_tokens = len(tokens)
        sampler = self._sampler(req)
        stops = StopMatcher(req.stop)
        text: list[str] = []
        self.ctx.kv_cache_clear()
        batch = self.ctx.n_batch
        for start in range(0, len(tokens), batch):
            self.ctx.decode(self._llama.llama_batch_get_one(tokens[start:start + batch], start))
        outcome.finish_reason = FINISH_LENGTH
        position, matched_stop = len(tokens), False
        for _ in range(req.max_tokens):
            if cancelled():
                outcome.finish_reason = FINISH_CANCELLED
                break
            token = sampler.sample(self.ctx, -1)
            if outcome.first_token_s is None:
                outcome.first_token_s = time.monotonic() - started
            if self.vocab.is_eog(token):
                outcome.finish_reason = FINISH_STOP
                break
            outcome.completion_tokens += 1
            piece, matched_stop = stops.feed(self._piece(token))
            if piece:
                text.append(piece)
                yield piece
            if matched_stop:
                outcome.finish_reason = FINISH_STOP
                break
            self.ctx.decode(self._llama.llama_batch_get_one([token], position))
            position += 1
        if not matched_stop and (rest := stops.flush()):
            text.append(rest)
            yield rest
        outcome.text = "".join(text)
        outcome.total_s = time.monotonic() - started

    def _piece(self, token: int) -> str:
        try:
            return self.vocab.token_to_piece(token, special=False)
        except UnicodeDecodeError:
            # A byte-fallback token holding part of a multi-byte character.
            return "\ufffd"
