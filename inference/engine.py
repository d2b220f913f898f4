"""Generation on llama.cpp (cyllama's low-level binding): continuous batching, a prefix
cache and schema-constrained decoding at free-decoding speed.

One ``Engine`` owns one llama.cpp context; one thread drives it (``step`` or
``serve``), any thread may ``submit``. Each ``step`` decodes one llama_batch holding
the next token of every active sequence and, in the room left, a chunk of the prompts
of newly admitted ones, so a new request joins without stalling the others and a
finished or cancelled one leaves without disturbing them. Requests carry their own
sampling settings, schema and stop sequences.

- Prefix cache: a finished sequence's KV stream is kept as a cache entry
  (``inference.kvcache`` says why one stream per sequence); a new prompt starts from
  the longest prefix any sequence holds (its stream copied, then cut back) and only
  the rest is evaluated. Entries are evicted least recently used first.
- Constrained decoding (``inference.grammar``): a token is sampled from the free
  distribution and checked against the schema; only a rejected one is resampled
  under the mask, and tokens the schema forces are fed as one batch.
"""

from __future__ import annotations

import codecs
import json
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cyllama.llama.llama_cpp as llama
import jinja2.sandbox
import numpy as np

from inference import grammar
from inference.kvcache import SequenceTable

FINISH_STOP = "stop"  # end-of-generation token, a stop sequence, or the schema complete
FINISH_LENGTH = "length"  # max_tokens reached: structured output is then truncated
FINISH_CANCELLED = "cancelled"
PENALTY_WINDOW = 64
LIFT = 1e4  # lifts the tokens a schema allows above every other logit
GGUF_MAGIC = b"GGUF"


@dataclass
class Request:
    prompt: str
    max_tokens: int = 128
    temperature: float = 0.0
    stop: list[str] = field(default_factory=list)
    json_schema: str | None = None  # constrains decoding to JSON valid for it
    seed: int = 1234
    repetition_penalty: float = 1.0  # > 1 discourages loops (small models fall into them)
    # Chat messages ({"role", "content"}); used instead of ``prompt`` when the model has
    # a chat template.
    messages: list[dict] | None = None


@dataclass
class Outcome:
    """What a finished generation reports after its last token."""

    text: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the prefix cache
    completion_tokens: int = 0
    finish_reason: str = FINISH_STOP
    prompt_format: str = "completion"  # or "chat": the model's chat template was applied
    first_token_s: float | None = None
    total_s: float = 0.0


@dataclass(frozen=True)
class EngineConfig:
    model_path: str
    threads: int = 1
    n_ctx: int = 2048  # tokens of one sequence: prompt + max_tokens
    parallel: int = 4  # sequences decoded together
    cache_entries: int = 8  # idle prompts kept for prefix reuse (0: no prefix cache)
    batch: int = 512  # tokens per llama_batch: one per active sequence, then prompt chunks
    gpu_layers: int = 0
    max_tokens_limit: int = 1024


def check_model(path: str | Path, variable: str = "AGORA_GENERATOR_MODEL") -> Path:
    """The GGUF file at ``path``, or a ValueError naming ``variable``."""
    file = Path(path)
    try:
        with file.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ValueError(f"{variable}={path!s}: cannot read the model: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        raise ValueError(f"{variable}={path!s}: not a GGUF model file")
    return file


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


class Sink:
    """Where a request's output goes; called on the engine's thread."""

    def piece(self, text: str) -> None: ...

    def finish(self, outcome: Outcome) -> None: ...

    def fail(self, error: Exception) -> None: ...

    def cancelled(self) -> bool:
        return False


class _Sequence:
    """A request being served: its prompt, sampler, grammar and output so far."""

    def __init__(self, req: Request, sink: Sink, submitted: float):
        self.req, self.sink, self.submitted = req, sink, submitted
        self.seq = -1
        self.pending: list[int] = []  # tokens to decode next (prompt rest, sampled, forced)
        self.prompt_left = 0  # of ``pending``, how many are still prompt tokens
        self.generated: list[int] = []
        self.outcome = Outcome()
        self.stops = StopMatcher(req.stop)
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text: list[str] = []
        self.chain = None
        self.matcher = None
        self.in_batch: list[int] = []  # of ``pending``, what the current batch decodes
        self.stopped = False  # a stop sequence ended the text


class Engine:
    def __init__(self, config: EngineConfig):
        self.config = config
        llama.disable_logging()
        llama.ggml_backend_load_all()
        model_params = llama.LlamaModelParams()
        model_params.n_gpu_layers = config.gpu_layers
        # Repacked CPU weights multiply 4 rows at a time and 1 row differently, so a
        # sequence's logits would depend on what shares its batch: plain kernels keep
        # greedy output the same alone, in a batch, and after a cached prefix.
        model_params.use_extra_bufts = False
        self.model = llama.LlamaModel(str(check_model(config.model_path)), model_params)
        self.vocab = self.model.get_vocab()
        self.n_vocab = self.vocab.n_vocab
        # One KV stream per sequence id (see inference.kvcache): a slot per active
        # request, then the prefix cache's entries.
        n_seq = config.parallel + config.cache_entries
        params = llama.LlamaContextParams()
        params.n_ctx = config.n_ctx * n_seq
        params.n_batch = params.n_ubatch = config.batch
        params.n_threads = params.n_threads_batch = config.threads
        params.n_seq_max = n_seq
        params.kv_unified = False
        params.swa_full = True  # sliding-window layers keep every cell, so prefixes stay whole
        params.no_perf = True
        self.ctx = llama.LlamaContext(self.model, params)
        self.context_limit = min(config.n_ctx, self.model.n_ctx_train or config.n_ctx)
        self.batch_size = params.n_batch
        self._batch = llama.LlamaBatch(n_tokens=self.batch_size, embd=0, n_seq_max=1)
        self.table = SequenceTable(config.parallel, config.cache_entries)
        self.pieces = grammar.token_bytes(self.vocab)
        eog = [t for t in range(self.n_vocab) if self.vocab.is_eog(t)]
        self.grammars = grammar.Grammars(grammar.tokenizer(self.vocab, self.pieces, eog))
        self.chat_template = self.model.get_default_chat_template()
        self._incoming: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []
        self._rejections = self._steps = 0

    # ------------------------------------------------------------------ requests

    def submit(self, req: Request, sink: Sink) -> None:
        """Queue a request (any thread); its output goes to ``sink``."""
        self._incoming.put(_Sequence(req, sink, time.monotonic()))

    def busy(self) -> bool:
        return bool(self._active or self._waiting or not self._incoming.empty())

    def serve(self, stop: threading.Event) -> None:
        """Step while there is work, wait for requests otherwise, until ``stop`` is set."""
        while not stop.is_set():
            if not self._active and not self._waiting:
                try:
                    self._waiting.append(self._incoming.get(timeout=0.1))
                except queue.Empty:
                    continue
            self.step()
        for s in self._active + list(self._waiting):
            s.sink.fail(RuntimeError("the generator is shutting down"))

    # ---------------------------------------------------------------------- step

    def step(self) -> None:
        while True:
            try:
                self._waiting.append(self._incoming.get_nowait())
            except queue.Empty:
                break
        for s in [s for s in self._active if s.sink.cancelled()]:
            self._finish(s, FINISH_CANCELLED)
        self._admit()
        if not self._active:
            return
        rows = self._fill_batch()
        try:
            self._decode()
        except Exception as exc:  # noqa: BLE001 - a broken context fails what it held
            for s in list(self._active):
                self._fail(s, RuntimeError(f"decode failed: {exc}"))
            self.ctx.kv_cache_clear()
            self.table.clear()
            return
        self._steps += 1
        for s, index in rows:
            try:
                self._next_token(s, index)
            except Exception as exc:  # noqa: BLE001 - one request's failure is its own
                self._fail(s, exc)

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self.config.parallel:
            s = self._waiting[0]
            if s.sink.cancelled():
                self._waiting.popleft()
                s.sink.finish(Outcome(finish_reason=FINISH_CANCELLED))
                continue
            try:
                tokens = self._prepare(s)
            except Exception as exc:  # noqa: BLE001 - a bad request fails alone
                self._waiting.popleft()
                s.sink.fail(exc if isinstance(exc, ValueError) else ValueError(str(exc)))
                continue
            self._waiting.popleft()
            source, k = self.table.longest_prefix(tokens)
            k = min(k, len(tokens) - 1) if self.config.cache_entries else 0
            s.seq = self.table.take()
            if k > 0:
                # Streams are copied whole (llama.cpp copies across streams no other
                # way), then cut back to the common prefix.
                self.ctx.memory_seq_cp(source, s.seq, -1, -1)
                self.ctx.memory_seq_rm(s.seq, k, -1)
                self.table.copy(source, s.seq, k)
            s.outcome.cached_tokens = k
            s.pending, s.prompt_left = tokens[k:], len(tokens) - k
            self._active.append(s)

    def _prepare(self, s: _Sequence) -> list[int]:
        req = s.req
        if not 1 <= req.max_tokens <= self.config.max_tokens_limit:
            raise ValueError(f"max_tokens must be in 1..{self.config.max_tokens_limit}")
        if not (0 <= req.temperature <= 2 and math.isfinite(req.temperature)):
            raise ValueError("temperature must be in 0..2")
        if not (0 < req.repetition_penalty <= 2):
            raise ValueError("repetition_penalty must be in (0, 2]")
        if req.json_schema:
            s.matcher = self.grammars.matcher(req.json_schema)
        tokens = self._tokenize(req, s.outcome)
        if len(tokens) + req.max_tokens > self.context_limit:
            raise ValueError(f"prompt of {len(tokens)} tokens + max_tokens {req.max_tokens} "
                             f"exceeds the context of {self.context_limit} tokens")
        s.outcome.prompt_tokens = len(tokens)
        s.chain = self._chain(req)
        return tokens

    def _tokenize(self, req: Request, outcome: Outcome) -> list[int]:
        if req.messages and self.chat_template:
            bos = self.vocab.token_to_piece(self.vocab.token_bos(), 0, True)
            text = render_chat(self.chat_template, req.messages, bos,
                               self.vocab.token_to_piece(self.vocab.token_eos(), 0, True))
            outcome.prompt_format = "chat"
            # The template's own markers are special tokens; it may write the BOS itself.
            tokens = self.vocab.tokenize(text, add_special=not (bos and text.startswith(bos)),
                                         parse_special=True)
        else:
            # A prompt's text never becomes control tokens (a message quoting
            # "<end_of_turn>" stays text).
            tokens = self.vocab.tokenize(req.prompt, add_special=True, parse_special=False)
        if not tokens:
            raise ValueError("the prompt is empty")
        return tokens

    def _chain(self, req: Request, history: list[int] = (), only: list[int] = (),
               ban: list[int] = ()):
        """The request's sampler: penalties, then greedy or top-k/top-p/temperature.

        For a resample under the schema's mask, ``only`` (the allowed tokens, when they
        are few) or ``ban`` (the rejected ones, when they are few) come after the
        penalties, so the bias list stays short: allowed tokens are lifted above every
        other logit and kept by top-k (the same shift for all leaves softmax and argmax
        as they were). llama.cpp keeps no logits that Python could mask directly."""
        params = llama.LlamaSamplerChainParams()
        params.no_perf = True
        chain = llama.LlamaSampler(params)
        if req.repetition_penalty != 1.0:
            chain.add_penalties(PENALTY_WINDOW, req.repetition_penalty, 0.0, 0.0)
            for t in history[-PENALTY_WINDOW:]:
                chain.accept(t)
        if only:
            chain.add_logit_bias(self.n_vocab, [(t, LIFT) for t in only])
            chain.add_top_k(len(only))
        elif ban:
            chain.add_logit_bias(self.n_vocab, [(t, -math.inf) for t in ban])
        if req.temperature <= 0:
            chain.add_greedy()
        else:
            chain.add_top_k(40)
            chain.add_top_p(0.95, 1)
            chain.add_temp(req.temperature)
            # Seeded per step when rebuilt, so a resample is as reproducible as the rest.
            chain.add_dist((req.seed + len(history)) % 2**31 if only or ban else req.seed)
        return chain

    def _resample(self, s: _Sequence, index: int, mask: np.ndarray) -> int:
        """A token the schema allows, sampled from the row ``index`` of the last decode."""
        allowed = np.flatnonzero(mask)
        if len(allowed) == 0:
            raise RuntimeError(f"the schema allows no token: {s.matcher.get_error()}")
        if len(allowed) == 1:
            return int(allowed[0])
        if len(allowed) <= self.n_vocab // 2:
            chain = self._chain(s.req, s.generated, only=allowed.tolist())
        else:
            chain = self._chain(s.req, s.generated, ban=np.flatnonzero(~mask).tolist())
        return chain.sample(self.ctx, index)

    def _fill_batch(self) -> list[tuple[_Sequence, int]]:
        """Fill the batch: every decoding sequence's pending tokens first, then prompt
        chunks in arrival order. Returns the (sequence, batch index) rows that get logits."""
        batch = self._batch
        batch.clear()
        budget, rows, n = self.batch_size, [], 0
        decoding = [s for s in self._active if not s.prompt_left]
        prefilling = [s for s in self._active if s.prompt_left]
        for s in decoding + prefilling:
            take = min(len(s.pending), budget - n)
            if take <= 0:
                continue
            pos = len(self.table.tokens[s.seq])
            complete = take == len(s.pending)
            for i, token in enumerate(s.pending[:take]):
                batch.add(token, pos + i, [s.seq], complete and i == take - 1)
            if complete:
                rows.append((s, n + take - 1))
            s.in_batch = s.pending[:take]
            n += take
        return rows

    def _decode(self) -> None:
        self.ctx.decode(self._batch)
        for s in self._active:
            if done := s.in_batch:
                self.table.extend(s.seq, done)
                del s.pending[:len(done)]
                s.prompt_left = max(0, s.prompt_left - len(done))
                s.in_batch = []

    def _next_token(self, s: _Sequence, index: int) -> None:
        req, matcher = s.req, s.matcher
        stateful = req.temperature > 0 or req.repetition_penalty != 1.0
        # A token the schema rejects must not enter the chain's state (penalty window,
        # random stream): sample it on a copy.
        probe = s.chain.clone() if matcher is not None and stateful else s.chain
        token = probe.sample(self.ctx, index)
        if matcher is not None and matcher.try_consume_tokens([token]) != 1:
            self._rejections += 1
            token = self._resample(s, index, grammar.allowed(matcher, self.n_vocab))
            s.chain.accept(token)
            if not matcher.consume_token(token):
                raise RuntimeError(f"grammar: {matcher.get_error()}")
        else:
            s.chain = probe
        if s.outcome.first_token_s is None:
            s.outcome.first_token_s = time.monotonic() - s.submitted
        if self.vocab.is_eog(token):
            return self._finish(s, FINISH_STOP)
        forced: list[int] = []
        if matcher is not None and not matcher.is_stopped():
            room = req.max_tokens - len(s.generated) - 1
            forced = matcher.compute_ff_tokens()[:room]
            if forced and not matcher.consume_tokens(forced):
                raise RuntimeError(f"grammar: {matcher.get_error()}")
            for t in forced:
                s.chain.accept(t)
        for t in (token, *forced):
            s.generated.append(t)
            if self._emit(s, self.pieces[t]):
                return self._finish(s, FINISH_STOP)
        if matcher is not None and matcher.is_stopped():
            return self._finish(s, FINISH_STOP)
        if len(s.generated) >= req.max_tokens:
            return self._finish(s, FINISH_LENGTH)
        s.pending = [token, *forced]

    def _emit(self, s: _Sequence, data: bytes) -> bool:
        """Stream a token's bytes; whether a stop sequence ended the text."""
        text, s.stopped = s.stops.feed(s.utf8.decode(data))
        _send(s, text)
        return s.stopped

    def _finish(self, s: _Sequence, reason: str) -> None:
        if reason != FINISH_CANCELLED and not s.stopped:
            _send(s, s.stops.feed(s.utf8.decode(b"", final=True))[0] + s.stops.flush())
        self._retire(s)
        s.outcome.text = "".join(s.text)
        s.outcome.completion_tokens = len(s.generated)
        s.outcome.finish_reason = reason
        s.outcome.total_s = time.monotonic() - s.submitted
        s.sink.finish(s.outcome)

    def _fail(self, s: _Sequence, error: Exception) -> None:
        self._retire(s, keep=False)
        s.sink.fail(error)

    def _retire(self, s: _Sequence, keep: bool = True) -> None:
        """The sequence leaves the batch; what it decoded is kept for reuse (copied into
        a cache entry, which llama.cpp does before the next decode) and its slot freed."""
        if s in self._active:
            self._active.remove(s)
        if s.seq < 0:
            return
        if keep:
            entry, cleared = self.table.keep(s.seq)
        else:
            entry, cleared = None, [self.table.drop(s.seq)]
        for seq in cleared:
            self.ctx.memory_seq_rm(seq, -1, -1)
        if entry is not None:
            self.ctx.memory_seq_cp(s.seq, entry, -1, -1)
        self.ctx.memory_seq_rm(s.seq, -1, -1)
        s.seq = -1

    def stats(self) -> dict[str, int]:
        return {"steps": self._steps, "grammar_rejections": self._rejections,
                "cached_sequences": len(self.table.idle)}


def _send(s: _Sequence, text: str) -> None:
    if text:
        s.text.append(text)
        s.sink.piece(text)


def render_chat(template: str, messages: list[dict], bos: str, eos: str) -> str:
    """A chat template (Jinja, as the GGUF's ``tokenizer.chat_template`` carries it)
    applied to ``messages``, with the generation prompt for the assistant's turn."""
    def raise_exception(message):
        raise ValueError(f"chat template: {message}")

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos)
    except jinja2.TemplateError as exc:
        raise ValueError(f"chat template: {exc}") from exc

