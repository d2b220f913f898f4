"""The one place Agora reads its configuration: ``AGORA_*`` environment variables.

Precedence, highest first: the environment, then the addresses of a running local
stack (``agora stack up`` records them in ``$AGORA_STACK_DIR/stack.json``), then the
defaults below. So after ``agora stack up`` every ``agora`` command and test finds the
stack without exports, and production simply sets the variables.
"""

from __future__ import annotations

import json
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

STATE_FILE = "stack.json"
WORKER_AGENTS = ("relevance", "responder", "tools", "knowledge", "votes", "feedback")
_AGENT = "|".join(WORKER_AGENTS)


class _RunningStackSource(PydanticBaseSettingsSource):
    """Settings published by a running local stack (its ``env`` section)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values().get(field_name), field_name, False

    def _values(self) -> dict[str, Any]:
        stack_dir = Path(self.current_state.get("stack_dir") or _default_stack_dir())
        try:
            state = json.loads((stack_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {k.removeprefix("AGORA_").lower(): v for k, v in state.get("env", {}).items()}

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._values().items() if k in self.settings_cls.model_fields}


def _default_stack_dir() -> Path:
    return Path.cwd() / ".agora"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGORA_", extra="ignore", frozen=True)

    stack_dir: Path = Field(
        default_factory=_default_stack_dir,
        description="Where the local stack keeps its data, logs and state file.",
    )
    broker: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    postgres_dsn: str = Field(
        "postgresql://postgres@127.0.0.1:5432/agora", description="PostgreSQL connection URI."
    )
    clickhouse_url: str = Field(
        "",
        description="chdb:///abs/dir for the embedded engine or http(s)://user:pw@host:8123/db "
        "for a server. Empty means chdb in $AGORA_STACK_DIR/clickhouse.",
    )
    triton_grpc: str = Field("127.0.0.1:8001", description="Triton gRPC address host:port.")
    generator_model: str = Field(
        "", description="Path of the GGUF model the generator serves. Empty means the bundled "
        "Gemma 3 270M (base) model.",
    )
    generator_ctx: int = Field(
        2048, ge=64, description="Context of one generation in tokens (prompt + max_tokens).")
    generator_threads: int = Field(1, ge=1, description="CPU threads of the generator.")
    generator_parallel: int = Field(
        4, ge=1, le=64, description="Generations the generator decodes together in one batch.")
    generator_cache_entries: int = Field(
        8, ge=0, le=128, description="Finished prompts the generator keeps in its KV cache for "
        "prefix reuse (0: no prefix cache). Each costs a context's worth of KV memory.",
    )
    generator_batch: int = Field(
        512, ge=16, description="Tokens per decode step: one per active generation, then "
        "chunks of new prompts.",
    )
    generator_gpu_layers: int = Field(
        0, ge=0, description="Model layers the generator offloads to the GPU (999: all).")
    memory_url: str = Field(
        "",
        description="Where agent memory lives: a postgresql:// URL (pgvector tables), the "
        "http(s):// URL of a Qdrant server, or a directory for Qdrant's local mode (one "
        "process at a time). Empty means AGORA_POSTGRES_DSN.",
    )
    knowledge_max_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=15 * 1024 * 1024,
        description="Largest document the knowledge base accepts, in bytes (one Kafka "
        "record carries it: agora.knowledge.documents allows 16 MiB).",
    )
    partitions: int = Field(
        4, ge=1, description="Partitions of the chat, relevance and inference topics."
    )
    replication_factor: int = Field(1, ge=1, description="Replication factor of every topic.")
    session_timeout_s: float = Field(
        3.0, gt=0, description="Consumer-group session timeout (short suits the local broker)."
    )
    heartbeat_interval_s: float = Field(0.5, gt=0, description="Consumer heartbeat interval.")
    app_id: str = Field(
        "agora", description="Faust app id: the workers' consumer group and table topics."
    )
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Stable name of this worker: keys its status records (set it per replica "
        "so a restart takes its keys back). Default: host-pid.",
    )
    web_port: int = Field(0, ge=0, description="Faust web port of a worker (0: a free port).")
    store: str = Field("memory://", description="Faust table store: memory:// or rocksdb://.")
    # Unset: the files bundled with the domain logic that reads them.
    relevance_config: Path | None = Field(
        None, description="YAML weights, threshold, top-k, cool-down and turn budget of relevance.",
    )
    incident_config: Path | None = Field(
        None, description="YAML incident detection: thresholds, signal weights, words, "
        "services, exemplars, the joining window.",
    )
    tool_policies: Path | None = Field(
        None, description="YAML channel policies: which tools may run in which channel.",
    )
    worker_agents: str = Field(
        ",".join(WORKER_AGENTS), pattern=rf"^({_AGENT})(,({_AGENT}))*$",
        description="The stream agents a worker runs, comma-separated: all by default; a "
        "subset makes pools that scale apart (relevance alone, responders alone).",
    )
    tool_concurrency: int = Field(2, ge=1, description="Tool runs a worker sandboxes at once.")
    vote_deadline_s: float = Field(
        300.0, gt=0, description="Deadline of votes opened for agents and tool requests."
    )
    responder_concurrency: int = Field(
        1, ge=1, le=64, description="Inference tasks a worker answers at once, decoded together "
        "by the generator: raise it with AGORA_GENERATOR_PARALLEL on a GPU. On a CPU one at "
        "a time answers each sooner (batching gains little there).",
    )
    responder_grounding: Literal["quote", "choose", "free"] = Field(
        "quote", description="How a reply uses a knowledge-base sentence that answers the "
        "message: quote it verbatim, let the model choose among the best three, or free "
        "text with the passages in the prompt (bench/knowledge.py measures them).",
    )
    history_size: int = Field(12, ge=1, description="Channel messages a prompt includes.")
    inference_timeout_s: float = Field(60.0, gt=0, description="Deadline of one inference call.")
    notify_webhook_url: str = Field(
        "", description="Where the notify action POSTs each alert as JSON (empty: no webhook; "
        "alerts still go to the on-call channel).",
    )
    notify_timeout_s: float = Field(5.0, gt=0, description="Deadline of one webhook POST.")
    notify_attempts: int = Field(
        4, ge=1, le=20, description="Webhook POSTs tried (with backoff) before the alert "
        "fails and is dead-lettered with the reason.",
    )
    metrics_port: int = Field(
        0, ge=0, description="Port of a worker's Prometheus /metrics (0: not served)."
    )
    metrics_host: str = Field("127.0.0.1", description="Address the metrics server binds.")
    log_level: str = Field("INFO", description="Log level.")
    log_format: Literal["console", "json"] = Field("console", description="Log rendering.")
    gateway_host: str = Field("127.0.0.1", description="Address the gRPC gateway binds.")
    gateway_port: int = Field(
        0, ge=0, le=65535, description="Port of the gRPC gateway (0: a free port)."
    )
    gateway_jwks: str = Field(
        "",
        description="JWKS (file path or http(s) URL) whose keys verify the gateway's bearer "
        "tokens (RS256/ES256, by kid); add a key to rotate, remove one to retire it.",
    )
    gateway_signing_keys: str = Field(
        "",
        description="Private JWKS file (mode 0600) that signs tokens: agora token issue and "
        "AuthService.Refresh; its last key signs.",
    )
    gateway_jwt_key: SecretStr = Field(
        SecretStr(""),
        description="Development only: an HS256 secret (at least 32 bytes) that signs and "
        "verifies tokens (kid hs256-dev) when no JWKS is set up.",
    )
    gateway_token_max_s: int = Field(
        900, ge=1, description="Longest lifetime (exp - iat) of an access token the gateway "
        "accepts, in seconds.",
    )
    gateway_refresh_ttl_s: int = Field(
        604800, ge=60, description="Lifetime of a refresh token, in seconds (rotated on use)."
    )
    gateway_tls_cert: str = Field(
        "", description="PEM certificate chain the gateway serves TLS with."
    )
    gateway_tls_key: str = Field("", description="PEM private key of that certificate.")
    gateway_tls_client_ca: str = Field(
        "", description="PEM CA bundle: when set, clients must present a certificate it signed."
    )
    gateway_tls_ca: str = Field(
        "", description="PEM CA bundle the CLI and clients trust for the gateway's certificate."
    )
    gateway_plaintext: bool = Field(
        False, description="Serve and call the gateway without TLS (development behind a "
        "trusted proxy only); otherwise a gateway without a certificate refuses to start.",
    )
    gateway_max_streams: int = Field(
        8, ge=1, description="Streams (StreamChannel) one caller may hold open at once."
    )
    gateway_auth_failures_per_min: int = Field(
        30, ge=1, description="Failed authentications a peer address may make per minute "
        "before it is refused outright.",
    )
    gateway_rate_per_s: float = Field(
        20.0, gt=0, description="Requests per second each caller may sustain at the gateway."
    )
    gateway_burst: int = Field(
        40, ge=1, description="Requests a caller may make at once before the rate applies."
    )
    gateway_max_request_bytes: int = Field(
        262144, ge=1024, description="Largest request message the gateway accepts, in bytes."
    )
    gateway_token_ttl_s: int = Field(
        900, ge=1, description="Lifetime of an access token from agora token issue and "
        "AuthService.Refresh, in seconds."
    )
    gateway_address: str = Field(
        "127.0.0.1:50051", description="Gateway the CLI's client commands (post, tail) call."
    )
    gateway_token: SecretStr = Field(
        SecretStr(""), description="Bearer token the CLI's client commands send (agora token issue)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _RunningStackSource(settings_cls), file_secret_settings)

    @property
    def clickhouse(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.stack_dir / 'clickhouse').resolve()}"

    @property
    def memory(self) -> str:
        return self.memory_url or self.postgres_dsn


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings`` instead)."""
    return Settings()


def documented() -> list[tuple[str, str, str]]:
    """(variable, default, description) rows for the README and ``agora config``."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = {"stack_dir": "./.agora", "worker_id": "host-pid",
                   "relevance_config": "streams/domain/relevance/config.yaml",
                   "incident_config": "streams/domain/incidents/config.yaml",
                   "tool_policies": "streams/domain/tools/policies.yaml"}.get(name, field.default)
        rows.append((f"AGORA_{name.upper()}", str(default), field.description or ""))
    return rows
