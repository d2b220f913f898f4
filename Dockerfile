# syntax=docker/dockerfile:1
# The image of every Agora process (init jobs, workers, sinks, gateway):
#   docker build -t agora .          docker run --rm agora worker relevance
# Configuration comes only from AGORA_* variables (ops/core/config.py).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: resolve and install into a venv, with a compiler for any sdist-only dep
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir --upgrade pip setuptools wheel
WORKDIR /src
COPY . .
# Not editable: the runtime stage gets site-packages only, never the source tree.
# The cache mount keeps downloaded wheels between builds (source edits bust this layer).
RUN --mount=type=cache,target=/root/.cache/pip pip install . \
 && agora --help > /dev/null

# ---- runtime: the venv only, no compiler, not root
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 agora \
 && useradd --system --uid 10001 --gid agora --home-dir /home/agora --create-home agora
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AGORA_STACK_DIR=/home/agora/.agora \
    AGORA_LOG_FORMAT=json \
    AGORA_METRICS_PORT=9100
WORKDIR /home/agora
USER agora
# 9100: Prometheus metrics of every process; 50051: the gRPC gateway.
EXPOSE 9100 50051
ENTRYPOINT ["agora"]
CMD ["--help"]
