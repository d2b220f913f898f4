"""Async client of Agora's Triton models (gRPC, ``tritonclient.grpc.aio``).

- ``embed(texts)``: concurrent callers are coalesced into batched requests (bounded
  in size and in waiting time), so many small requests cost few round trips.
- ``generate(prompt, ...)``: an async iterator of text pieces as the model streams
  them; ``.result`` then holds the text, the parsed JSON when a schema was given,
  token counts and latencies. Leaving early (``aclose()`` or ``async with``) cancels
  decoding on the server.

Every call has a deadline; transient errors are retried with backoff while the
deadline allows (a stream only before its first piece, so no text is duplicated); a
circuit breaker fails calls at once while Triton is down and lets a probe through
to notice it is back; a semaphore bounds in-flight requests (backpressure).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import jsonschema
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio
from prometheus_client import Counter, Gauge, Histogram
from tritonclient.utils import InferenceServerException

from inference.resilience import OUTAGE, TRANSIENT, CircuitBreaker
from ops.core.errors import AgoraError, Unavailable
from ops.core.retry import Retry, after

EMBEDDER, GENERATOR = "embedder", "generator"
EMBEDDING_DIM = 384

LATENCY = Histogram("agora_inference_latency_seconds", "Inference call latency", ["op"],
                    buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
BATCH_SIZE = Histogram("agora_inference_embed_batch_size", "Texts per embedder request",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
TOKENS_PER_S = Histogram("agora_inference_tokens_per_second", "Streamed decode speed",
                         buckets=(1, 2, 5, 10, 20, 30, 40, 60, 80, 120, 200))
TOKENS = Counter("agora_inference_tokens_total", "Tokens processed", ["kind"])
ERRORS = Counter("agora_inference_errors_total", "Failed inference attempts", ["op", "code"])
IN_FLIGHT = Gauge("agora_inference_in_flight", "Requests in flight to Triton")
BREAKER = Gauge("agora_inference_breaker_state", "0 closed, 1 half-open, 2 open")


class InferenceError(AgoraError):
    """An inference call failed; ``code`` is the gRPC status name (or our own)."""

    def __init__(self, message: str, code: str = "UNKNOWN"):
        super().__init__(message)
        self.code = code


class InferenceUnavailable(InferenceError, Unavailable):
    """Triton cannot be reached, or answered that it cannot serve now."""


class CircuitOpen(InferenceUnavailable):
    """Calls are refused without trying: Triton failed repeatedly and very recently."""


class InferenceTimeout(InferenceError):
    """The call's deadline passed."""


class InvalidOutput(InferenceError):
    """Generated text does not parse or does not validate against the requested schema."""

    def __init__(self, message: str, text: str):
        super().__init__(message, "INVALID_OUTPUT")
        self.text = text


@dataclass
class GenerationResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    first_token_s: float | None
    cached_tokens: int = 0  # prompt tokens the generator reused from its prefix cache
    prompt_format: str = "completion"  # "chat" when the model's chat template was applied
    parsed: Any = None  # the JSON value when a schema was given

    @property
    def tokens_per_s(self) -> float:
        decode_s = self.latency_s - (self.first_token_s or 0.0)
        return (self.completion_tokens - 1) / decode_s if decode_s > 0 else 0.0


def _code(exc: BaseException) -> str:
    if isinstance(exc, InferenceError):  # the server's own answer inside the stream
        return exc.code
    if isinstance(exc, grpc.RpcError):
        return exc.code().name
    if isinstance(exc, InferenceServerException):
        code = (exc.status() or "StatusCode.UNKNOWN").removeprefix("StatusCode.")
        if code == "NOT_FOUND" and "no available versions" in (exc.message() or ""):
            # A model of the repository that is not loaded: Triton is starting or
            # shutting down (it unloads its models first), an outage like any other.
            return "UNAVAILABLE"
        return code
    if isinstance(exc, TimeoutError):
        return "DEADLINE_EXCEEDED"
    return "UNKNOWN"


def _tensor(name: str, values: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(values.shape), datatype)
    tensor.set_data_from_numpy(values)
    return tensor


def _bytes(values: Sequence[str]) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype=np.object_)


@dataclass
class _EmbedJob:
    texts: list[str]
    deadline: float
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class InferenceClient:
    def __init__(self, address: str, *, timeout_s: float = 30.0, max_in_flight: int = 16,
                 embed_batch: int = 32, embed_delay_s: float = 0.002, retries: int = 3,
                 backoff_base_s: float = 0.05, backoff_cap_s: float = 1.0,
                 breaker: CircuitBreaker | None = None):
        self.address = address
        self.timeout_s = timeout_s
        self.embed_batch, self.embed_delay_s = embed_batch, embed_delay_s
        self.retry = Retry(backoff_base_s, backoff_cap_s, after(retries + 1))
        self.breaker = breaker or CircuitBreaker()
        # Reconnect quickly once Triton is back (gRPC's default backoff grows to 2 min).
        self._triton = aio.InferenceServerClient(address, channel_args=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ])
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: list[_EmbedJob] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._batches: set[asyncio.Task] = set()

    async def close(self) -> None:
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)
        await self._triton.close()

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ----------------------------------------------------------------- shared call path

    def _deadline(self, timeout_s: float | None) -> float:
        return time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)

    async def _attempts(self, op: str, deadline: float, call: Callable[[float], Awaitable[Any]],
                        may_retry: Callable[[], bool] = lambda: True) -> Any:
        """Run ``call(remaining_s)`` under the breaker, a slot and retries; map errors."""
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InferenceTimeout(f"{op}: deadline exceeded", "DEADLINE_EXCEEDED")
            if not self.breaker.allow():
                BREAKER.set(self.breaker.state)
                raise CircuitOpen(f"{op}: Triton at {self.address} is failing; circuit open, "
                                  f"next try in {self.breaker.retry_in_s():.1f}s", "UNAVAILABLE")
            try:
                async with asyncio.timeout(remaining):
                    async with self._slots:
                        IN_FLIGHT.inc()
                        try:
                            result = await call(deadline - time.monotonic())
                        finally:
                            IN_FLIGHT.dec()
            except InvalidOutput:
                self.breaker.success()  # the server answered; the model's text is wrong
                raise
            except asyncio.CancelledError:
                self.breaker.release()
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                code = _code(exc)
                ERRORS.labels(op, code).inc()
                if code in OUTAGE:
                    self.breaker.failure()
                else:
                    self.breaker.release()
                BREAKER.set(self.breaker.state)
                if code == "DEADLINE_EXCEEDED" and deadline - time.monotonic() <= 0:
                    raise InferenceTimeout(f"{op}: deadline exceeded", code) from exc
                if code not in TRANSIENT or self.retry.gives_up(attempt) or not may_retry():
                    kind = InferenceUnavailable if code in OUTAGE else InferenceError
                    raise kind(f"{op} failed ({code}): {exc}", code) from exc
                await asyncio.sleep(min(self.retry.delay_s(attempt),
                                        max(deadline - time.monotonic(), 0)))
                continue
            self.breaker.success()
            BREAKER.set(self.breaker.state)
            return result

    async def ready(self) -> bool:
        try:
            return await self._triton.is_server_ready()
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    # ----------------------------------------------------------------------- embeddings

    async def embed(self, texts: Sequence[str], timeout_s: float | None = None) -> np.ndarray:
        """L2-normalised embeddings, one row per text."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        deadline = self._deadline(timeout_s)
        jobs = [_EmbedJob(list(texts[i:i + self.embed_batch]), deadline)
                for i in range(0, len(texts), self.embed_batch)]
        self._pending.extend(jobs)
        while sum(len(j.texts) for j in self._pending) >= self.embed_batch:
            self._dispatch()
        if self._pending and self._flush_timer is None:
            # A partial batch waits at most embed_delay_s for company.
            self._flush_timer = asyncio.get_running_loop().call_later(
                self.embed_delay_s, self._on_timer)
        return np.concatenate(await asyncio.gather(*(job.future for job in jobs)))

    def _on_timer(self) -> None:
        self._flush_timer = None
        while self._pending:
            self._dispatch()

    def _dispatch(self) -> None:
        """Send the oldest pending jobs, up to one batch, as one request."""
        batch, size = [], 0
        while self._pending and (not batch or size + len(self._pending[0].texts) <= self.embed_batch):
            job = self._pending.pop(0)
            batch.append(job)
            size += len(job.texts)
        task = asyncio.get_running_loop().create_task(self._embed_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _embed_batch(self, jobs: list[_EmbedJob]) -> None:
        texts = [t for job in jobs for t in job.texts]
        BATCH_SIZE.observe(len(texts))

        async def call(remaining: float) -> np.ndarray:
            result = await self._triton.infer(
                EMBEDDER, [_tensor("TEXT", _bytes(texts).reshape(-1, 1), "BYTES")],
                client_timeout=remaining)
            return result.as_numpy("EMBEDDING")

        started = time.monotonic()
        try:
            vectors = await self._attempts("embed", min(j.deadline for j in jobs), call)
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets the error
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        LATENCY.labels("embed").observe(time.monotonic() - started)
        TOKENS.labels("embedded_texts").inc(len(texts))
        offset = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(vectors[offset:offset + len(job.texts)])
            offset += len(job.texts)

    # ----------------------------------------------------------------------- generation

    def generate(self, prompt: str, *, max_tokens: int = 128, temperature: float = 0.0,
                 stop: Sequence[str] = (), json_schema: dict | None = None, seed: int = 1234,
                 repetition_penalty: float = 1.0, timeout_s: float | None = None,
                 messages: Sequence[dict] | None = None) -> Generation:
        """Stream a completion of ``prompt``; with ``messages`` ({role, content}), a model
        that has a chat template answers them formatted by it instead."""
        inputs = [
            _tensor("text_input", _bytes([prompt]), "BYTES"),
            _tensor("max_tokens", np.array([max_tokens], np.int32), "INT32"),
            _tensor("temperature", np.array([temperature], np.float32), "FP32"),
            _tensor("seed", np.array([seed], np.int32), "INT32"),
            _tensor("repetition_penalty", np.array([repetition_penalty], np.float32), "FP32"),
        ]
        if stop:
            inputs.append(_tensor("stop", _bytes(list(stop)), "BYTES"))
        if json_schema is not None:
            inputs.append(_tensor("json_schema", _bytes([json.dumps(json_schema)]), "BYTES"))
        if messages:
            inputs.append(_tensor("messages", _bytes([json.dumps(list(messages))]), "BYTES"))
        return Generation(self, inputs, json_schema, self._deadline(timeout_s))

    async def complete(self, prompt: str, **kwargs: Any) -> GenerationResult:
        """The whole generation at once (still streamed underneath)."""
        async with self.generate(prompt, **kwargs) as generation:
            async for _ in generation:
                pass
        return generation.result


class Generation:
    """Async iterator of text pieces; ``result`` is set once it is exhausted."""

    def __init__(self, client: InferenceClient, inputs: list, schema: dict | None,
                 deadline: float):
        self._client, self._inputs, self._schema, self._deadline = client, inputs, schema, deadline
        self._result: GenerationResult | None = None
        self._produced = False  # once text went out, a retry would duplicate it
        self._pieces = self._run()

    @property
    def result(self) -> GenerationResult:
        """The whole output, once every piece has been read."""
        if self._result is None:
            raise RuntimeError("the generation has not been read to its end")
        return self._result

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces

    async def aclose(self) -> None:
        await self._pieces.aclose()

    async def __aenter__(self) -> Generation:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _run(self) -> AsyncIterator[str]:
        queue: asyncio.Queue = asyncio.Queue()
        # The stream runs in its own task so that the retry/deadline/breaker logic
        # wraps it whole, while pieces reach the caller as they arrive.
        pump = asyncio.get_running_loop().create_task(self._client._attempts(
            "generate", self._deadline, lambda remaining: self._stream(queue, remaining),
            may_retry=lambda: not self._produced))
        pump.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (piece := await queue.get()) is not None:
                yield piece
            self._result = pump.result()  # raises the call's error, if any
        finally:
            if not pump.done():
                pump.cancel()  # cancels the gRPC stream: Triton stops decoding
                await asyncio.gather(pump, return_exceptions=True)

    async def _stream(self, queue: asyncio.Queue, remaining_s: float) -> GenerationResult:
        async def requests():
            yield {"model_name": GENERATOR, "inputs": self._inputs}

        started = time.monotonic()
        first_token_s = None
        pieces: list[str] = []
        call = self._client._triton.stream_infer(requests(), stream_timeout=remaining_s)
        try:
            async for response, error in call:
                if error is not None:
                    raise InferenceError(f"generate failed: {error.message()}", "INVALID_ARGUMENT"
                                         if "ValueError" in error.message() else "INTERNAL")
                finish = response.as_numpy("finish_reason")
                piece = response.as_numpy("text_output")[0].decode("utf-8")
                if piece:
                    if first_token_s is None:
                        first_token_s = time.monotonic() - started
                        LATENCY.labels("first_token").observe(first_token_s)
                    pieces.append(piece)
                    self._produced = True
                    queue.put_nowait(piece)
                if finish is not None:
                    return self._finish(response, "".join(pieces), started, first_token_s)
        finally:
            call.cancel()
        raise InferenceUnavailable("generate: the stream ended without a final response",
                                   "UNAVAILABLE")

    def _finish(self, response, text: str, started: float, first_token_s: float | None
                ) -> GenerationResult:
        result = GenerationResult(
            text=text, finish_reason=response.as_numpy("finish_reason")[0].decode(),
            prompt_tokens=int(response.as_numpy("prompt_tokens")[0]),
            completion_tokens=int(response.as_numpy("completion_tokens")[0]),
            cached_tokens=int(response.as_numpy("cached_tokens")[0]),
            prompt_format=response.as_numpy("prompt_format")[0].decode(),
            latency_s=time.monotonic() - started, first_token_s=first_token_s)
        LATENCY.labels("generate").observe(result.latency_s)
        TOKENS.labels("prompt").inc(result.prompt_tokens)
        TOKENS.labels("prompt_cached").inc(result.cached_tokens)
        TOKENS.labels("completion").inc(result.completion_tokens)
        if result.completion_tokens > 1:
            TOKENS_PER_S.observe(result.tokens_per_s)
        if self._schema is not None:
            result.parsed = parse_structured(text, self._schema, result.finish_reason)
        return result


def parse_structured(text: str, schema: dict, finish_reason: str) -> Any:
    """The JSON value of a schema-constrained generation, or ``InvalidOutput``."""
    if finish_reason == "length":
        raise InvalidOutput("structured output truncated at max_tokens", text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidOutput(f"output is not JSON: {exc}", text) from exc
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        raise InvalidOutput(f"output does not match the schema: {exc.message}", text) from exc
    return value
