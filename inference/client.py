"""Client of Agora's Triton models over gRPC."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

EMBEDDER = "embedder"


def embed(address: str, texts: list[str], timeout_s: float = 30) -> np.ndarray:
    """L2-normalised embeddings (one row per text) from the ``embedder`` model."""
    with grpcclient.InferenceServerClient(address) as client:
        batch = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        batch.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        result = client.infer(EMBEDDER, [batch], client_timeout=timeout_s)
        return result.as_numpy("EMBEDDING")
